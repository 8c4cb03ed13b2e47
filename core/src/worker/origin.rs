//! Where a call's completion goes: a leaf, so that the worker's parts
//! (the runner, the per-key queues) and the worker itself can all name it.

use crate::outcome::SlotBox;
use crate::shared::Reply;

/// Where a completion goes.
#[derive(Debug)]
pub(crate) enum Origin {
    /// Back through the completion ring of this source, in this slot.
    Source(usize, SlotBox),
    /// To an injector caller's ticket.
    Reply(Reply),
}
