//! `protocol = "jsonl"`: a long-lived process speaking JSON lines.
//!
//! toolplane writes one request per line on the process's stdin,
//! `{"id":N,"tool":"<name>","input":<input>}`, and reads one response per
//! line from its stdout, `{"id":N,"output":<json>}` or
//! `{"id":N,"error":<string or json>}`, in any order. A call that runs out
//! of time, or whose caller goes away, is followed by
//! `{"id":N,"cancel":true}`; a process that has not answered that call
//! [`CANCEL_GRACE`] later is killed. Anything else on stdout (a line that
//! is not such a response, or one longer than `limits.max_output`) ends
//! the process: calls in flight on it end `Error` with its exit status and
//! the tail of its stderr, and the pool replaces it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use toolplane_core::Outcome;

use super::life::{Life, STOP_GRACE};
use super::spawn::Child;
use crate::size::fmt_size;

/// How long a process has to answer a cancelled call before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The lines of one process: what is written to it, the calls waiting.
pub(crate) struct Lines {
    out: Mutex<Out>,
    /// Lines handed to the writer task and not yet written.
    backlog: Arc<AtomicUsize>,
    calls: Mutex<Calls>,
}

/// The process's stdin, two ways: the caller's thread writes a line
/// itself (a non-blocking write on a duplicate of the pipe's descriptor:
/// no other thread is woken), and hands the writer task on the process
/// host what the pipe would not take at once, and every line after it
/// until that backlog is written (so lines keep their order).
struct Out {
    fd: Option<std::os::fd::OwnedFd>,
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

#[derive(Default)]
struct Calls {
    next: u64,
    /// Set once the process ended: no call may wait any more.
    closed: bool,
    waiting: HashMap<u64, oneshot::Sender<Outcome>>,
    /// Cancelled calls not answered yet, with when they were cancelled.
    cancelling: HashMap<u64, Instant>,
}

#[derive(Deserialize)]
struct Reply<'a> {
    id: u64,
    #[serde(borrow)]
    output: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

impl Lines {
    /// Takes the child's stdin (written by a task of its own) and hands
    /// back its stdout for [`Lines::read`].
    pub(crate) fn start(child: &mut Child) -> (Lines, Option<tokio::process::ChildStdout>) {
        use std::os::fd::AsFd;
        let (tx, rx) = mpsc::unbounded_channel();
        let stdin = child.inner.stdin.take();
        // Non-blocking already (tokio's), and so is the duplicate: they
        // share the open file description.
        let fd = stdin
            .as_ref()
            .and_then(|s| s.as_fd().try_clone_to_owned().ok());
        let backlog = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_lines(stdin, rx, Arc::clone(&backlog)));
        let lines = Lines {
            out: Mutex::new(Out { fd, tx: Some(tx) }),
            backlog,
            calls: Mutex::new(Calls::default()),
        };
        (lines, child.inner.stdout.take())
    }

    /// Closes the process's stdin (both ways of writing to it).
    pub(crate) fn close(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.fd = None;
        out.tx = None;
    }

    /// Writes `line` to the process's stdin, from this thread when the
    /// pipe takes it whole; false once stdin is closed or broken.
    fn send(&self, mut line: Vec<u8>) -> bool {
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = &out.tx else { return false };
        if self.backlog.load(Ordering::Acquire) == 0
            && let Some(fd) = &out.fd
        {
            match rustix::io::write(fd, &line) {
                Ok(n) if n == line.len() => return true,
                Ok(n) => {
                    line.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        tx.send(line).is_ok()
    }

    /// Sends one call and waits for its answer until `deadline`.
    pub(crate) async fn call(
        &self,
        proc: &Life,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            if calls.closed {
                return closed(proc);
            }
            let id = calls.next;
            calls.next += 1;
            calls.waiting.insert(id, tx);
            id
        };
        let pending = Pending { lines: self, id };
        if !self.send(request(id, target, input)) {
            drop(pending);
            return closed(proc);
        }
        let out = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(o)) => o,
            // `fail_all` answers every waiting call before it drops it.
            Ok(Err(_)) => closed(proc),
            Err(_) => Outcome::Timeout,
        };
        drop(pending);
        out
    }

    /// Takes one line of the process's stdout.
    fn answer(&self, proc: &Life, line: &str) -> Result<(), String> {
        let reply: Reply<'_> = serde_json::from_str(line).map_err(|e| {
            let shown: String = line.chars().take(120).collect();
            format!(
                "wrote a line that is not a response {{\"id\", \"output\" or \"error\"}} ({e}): {shown:?}"
            )
        })?;
        let outcome = match (reply.output, reply.error) {
            (Some(out), None) => Outcome::Ok(out.get().as_bytes().to_vec().into()),
            (None, Some(err)) => {
                let text = serde_json::from_str::<String>(err.get())
                    .unwrap_or_else(|_| err.get().to_string());
                Outcome::Error(format!("tool {}: {text}", proc.tool).into())
            }
            _ => {
                return Err(format!(
                    "answered call {} with neither or both of \"output\" and \"error\"",
                    reply.id
                ));
            }
        };
        proc.answered.store(true, Ordering::Release);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = calls.waiting.remove(&reply.id) {
            let _ = tx.send(outcome);
        } else if calls.cancelling.remove(&reply.id).is_none() {
            tracing::debug!(tool = %proc.tool, id = reply.id, "an answer to no call");
        }
        Ok(())
    }

    /// A cancelled call left unanswered past its grace, if any.
    fn overdue(&self) -> Option<u64> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls
            .cancelling
            .iter()
            .find(|(_, at)| at.elapsed() >= CANCEL_GRACE)
            .map(|(id, _)| *id)
    }

    /// Records why the process ended and answers every waiting call with
    /// it, under the calls' lock: no call starts waiting after.
    pub(crate) fn fail_all(&self, proc: &Life, why: std::sync::Arc<str>) {
        let waiting = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            proc.set_exit(std::sync::Arc::clone(&why));
            calls.closed = true;
            calls.cancelling.clear();
            std::mem::take(&mut calls.waiting)
        };
        self.close();
        for (_, tx) in waiting {
            let _ = tx.send(proc.ended(&why));
        }
    }

    /// Reads the process's answers until it ends; why it ended.
    pub(crate) async fn read(
        &self,
        proc: &Life,
        child: &mut Child,
        stdout: Option<tokio::process::ChildStdout>,
        max_line: usize,
    ) -> String {
        let Some(stdout) = stdout else {
            return "has no stdout".into();
        };
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(max_line));
        let mut tick = tokio::time::interval(CANCEL_GRACE / 4);
        loop {
            tokio::select! {
                line = lines.next() => match line {
                    Some(Ok(line)) => {
                        if line.trim().is_empty() { continue; }
                        if let Err(why) = self.answer(proc, &line) { return why; }
                    }
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        return format!("wrote a line longer than limits.max_output = {}", fmt_size(max_line as u64));
                    }
                    Some(Err(LinesCodecError::Io(e))) => return format!("could not be read: {e}"),
                    None => {
                        // It exited, most likely: say with what status.
                        return match tokio::time::timeout(STOP_GRACE, child.inner.wait()).await {
                            Ok(Ok(s)) => format!("exited ({s})"),
                            _ => "closed its stdout".into(),
                        };
                    }
                },
                status = child.inner.wait() => {
                    return match status {
                        Ok(s) => format!("exited ({s})"),
                        Err(e) => format!("could not be waited for: {e}"),
                    };
                }
                _ = tick.tick() => {
                    if let Some(id) = self.overdue() {
                        return format!("did not answer call {id} within {CANCEL_GRACE:?} of its cancel");
                    }
                }
            }
        }
    }
}

fn closed(proc: &Life) -> Outcome {
    match proc.exit() {
        Some(why) => proc.ended(why),
        None => Outcome::Error(format!("tool {}: its process is stopping", proc.tool).into()),
    }
}

/// A call sent and not answered: when dropped so (timed out, or its caller
/// went away) the process is told to cancel it.
struct Pending<'a> {
    lines: &'a Lines,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let unanswered = {
            let mut calls = self.lines.calls.lock().unwrap_or_else(|p| p.into_inner());
            let gone = calls.waiting.remove(&self.id).is_some();
            if gone && !calls.closed {
                calls.cancelling.insert(self.id, Instant::now());
            }
            gone
        };
        if unanswered {
            let line = format!("{{\"id\":{},\"cancel\":true}}\n", self.id);
            self.lines.send(line.into_bytes());
        }
    }
}

/// `{"id":N,"tool":"…","input":…}` and a newline. The input is JSON
/// checked already: a raw newline in it can only be white space, so it
/// becomes a space.
fn request(id: u64, tool: &str, input: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(input.len() + tool.len() + 40);
    line.extend_from_slice(b"{\"id\":");
    line.extend_from_slice(id.to_string().as_bytes());
    line.extend_from_slice(b",\"tool\":");
    line.extend_from_slice(serde_json::to_string(tool).unwrap_or_default().as_bytes());
    line.extend_from_slice(b",\"input\":");
    line.extend(
        input
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    line.extend_from_slice(b"}\n");
    line
}

/// Writes what the pipe would not take at once (see [`Out`]).
async fn write_lines(
    stdin: Option<tokio::process::ChildStdin>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    backlog: Arc<AtomicUsize>,
) {
    let Some(mut stdin) = stdin else { return };
    while let Some(line) = rx.recv().await {
        let written = stdin.write_all(&line).await;
        // After the write: a caller that saw the backlog non-zero queued
        // behind this line; one that sees it zero writes after it.
        backlog.fetch_sub(1, Ordering::AcqRel);
        if written.is_err() {
            return;
        }
    }
    // Every sender dropped: this end closes (and the callers' duplicate
    // was dropped with them), which asks the program to exit.
}
