//! A pending call as the worker drives it: the handler's future, caught if
//! it panics, cut short at the engine's `call_timeout` or when its caller
//! cancels it.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::handler::PendingCall;
use crate::outcome::Outcome;
use crate::shared::CancelFlag;

pub(crate) struct CallFuture {
    slot: usize,
    call: PendingCall,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    cancel: Option<Arc<CancelFlag>>,
}

impl CallFuture {
    /// Must be called inside the worker's runtime (for the deadline timer).
    pub(crate) fn new(
        slot: usize,
        call: PendingCall,
        timeout: Option<Duration>,
        cancel: Option<Arc<CancelFlag>>,
    ) -> CallFuture {
        CallFuture {
            slot,
            call,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            cancel,
        }
    }
}

impl Future for CallFuture {
    type Output = (usize, Outcome);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Checked before the handler's future runs again, so a cancelled
        // call does no more work (the future is dropped with this one).
        if this.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Poll::Ready((this.slot, Outcome::Cancelled));
        }
        match catch_unwind(AssertUnwindSafe(|| this.call.as_mut().poll(cx))) {
            Ok(Poll::Ready(outcome)) => Poll::Ready((this.slot, outcome)),
            Err(panic) => Poll::Ready((this.slot, Outcome::Panicked(panic_message(&*panic)))),
            Ok(Poll::Pending) => {
                if this.cancel.as_ref().is_some_and(|c| c.register(cx.waker())) {
                    return Poll::Ready((this.slot, Outcome::Cancelled));
                }
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready((this.slot, Outcome::Timeout))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> Cow<'static, str> {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        Cow::Borrowed(s)
    } else if let Some(s) = panic.downcast_ref::<String>() {
        Cow::Owned(s.clone())
    } else {
        Cow::Borrowed("handler panicked with a non-string payload")
    }
}
