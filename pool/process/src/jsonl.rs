//! `protocol = "jsonl"`: a long-lived process speaking JSON lines.
//!
//! toolplane writes one request per line on the process's stdin,
//! `{"id":N,"tool":"<name>","input":<input>}`, and reads one response per
//! line from its stdout, `{"id":N,"output":<json>}` or
//! `{"id":N,"error":<string or json>}`, in any order. While a call runs
//! the process may report its progress, `{"id":N,"progress":<number>}`
//! with `"total"` and `"message"` optional, any number of times: it goes
//! to the caller that asked for it (an MCP client's `progressToken`; such a
//! request carries `"progress":true`) and is dropped otherwise. A call that runs out
//! of time, or whose caller goes away, is followed by
//! `{"id":N,"cancel":true}`; a process that has not answered that call
//! [`CANCEL_GRACE`] later is killed. Anything else on stdout (a line that
//! is not such a response, or one longer than `limits.max_output`) ends
//! the process: calls in flight on it end `Error` with its exit status and
//! the tail of its stderr, and the pool replaces it.
//!
//! Answers are read where their callers wait. While calls wait on a
//! thread, one task on that thread's reactor ([`Lines::read_here`]) reads the
//! process's stdout, so a reactor parked in `epoll_wait` is woken by the
//! answer itself and not by another thread that read it first (one
//! cross-thread wake fewer per call: PERF.md "Process tools: warm pools").
//! The process host reads only while no caller does (answers to cancelled
//! calls, a line written between calls), and every reader reads under one
//! lock, so lines are never split or reordered.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, oneshot};
use toolplane_core::Outcome;

use super::codec::LineBuf;
use super::life::{CANCEL_GRACE, Life, STOP_GRACE};
use super::spawn::Child;
use crate::error::Exit;
use toolplane_tool::progress::{Progress, ProgressSink};

/// The lines of one process: what is written to it, the calls waiting.
pub(crate) struct Lines {
    stdin: Mutex<Stdin>,
    /// Lines handed to the writer task and not yet written.
    backlog: Arc<AtomicUsize>,
    calls: Mutex<Calls>,
    stdout: Mutex<Stdout>,
    /// The threads whose reactors read the process's stdout now.
    readers: Mutex<HashMap<ThreadId, Reader>>,
    /// `readers.len()`: the host reads only while it is 0.
    reading: AtomicUsize,
    /// A reader found the process's stdout ended: the host ends the process.
    broken: Notify,
}

/// The read side of the process's stdout, read by whoever holds the lock.
struct Stdout {
    /// The pipe (non-blocking: the flag is on the open file description,
    /// which every duplicate shares).
    fd: OwnedFd,
    /// Bytes read and not yet a whole line.
    lines: LineBuf,
    /// Set once stdout ended or said something it must not: nothing is
    /// read after.
    ended: Option<Ended>,
}

#[derive(Clone)]
enum Ended {
    /// End of file: the process closed its stdout (or exited).
    Eof,
    /// Why the process must end (what it wrote, or that it could not be
    /// read).
    Bad(String),
}

/// The reader task on one thread: the calls waiting there, and how it is
/// told that they are gone.
struct Reader {
    waiting: usize,
    done: Arc<Notify>,
}

/// The process's stdin, two ways: the caller's thread writes a line
/// itself (a non-blocking write on a duplicate of the pipe's descriptor:
/// no other thread is woken), and hands the writer task on the process
/// host what the pipe would not take at once, and every line after it
/// until that backlog is written (so lines keep their order).
struct Stdin {
    fd: Option<std::os::fd::OwnedFd>,
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

#[derive(Default)]
struct Calls {
    next: u64,
    /// Set once the process ended: no call may wait any more.
    closed: bool,
    waiting: HashMap<u64, Waiting>,
    /// Cancelled calls not answered yet, with when they were cancelled.
    cancelling: HashMap<u64, Instant>,
}

/// A call waiting for its answer, and where its progress goes.
struct Waiting {
    answer: oneshot::Sender<Outcome>,
    progress: Option<ProgressSink>,
}

#[derive(Deserialize)]
struct Reply<'a> {
    id: u64,
    #[serde(borrow)]
    output: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    progress: Option<f64>,
    total: Option<f64>,
    message: Option<String>,
}

impl Lines {
    /// Takes the child's stdin (written by a task of its own) and stdout
    /// (lines of at most `max_line` bytes).
    pub(crate) fn start(child: &mut Child, max_line: usize) -> std::io::Result<Lines> {
        let stdout = child
            .inner
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the process has no stdout"))?;
        // tokio made it non-blocking, a flag of the open file description
        // that the duplicate shares; the wrapper's registration goes with it.
        let stdout = stdout.as_fd().try_clone_to_owned()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stdin = child.inner.stdin.take();
        // Non-blocking already (tokio's), and so is the duplicate: they
        // share the open file description.
        let fd = stdin
            .as_ref()
            .and_then(|s| s.as_fd().try_clone_to_owned().ok());
        let backlog = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_lines(stdin, rx, Arc::clone(&backlog)));
        Ok(Lines {
            stdin: Mutex::new(Stdin { fd, tx: Some(tx) }),
            backlog,
            calls: Mutex::new(Calls::default()),
            stdout: Mutex::new(Stdout {
                fd: stdout,
                lines: LineBuf::new(max_line),
                ended: None,
            }),
            readers: Mutex::new(HashMap::new()),
            reading: AtomicUsize::new(0),
            broken: Notify::new(),
        })
    }

    /// Closes the process's stdin (both ways of writing to it).
    pub(crate) fn close(&self) {
        let mut out = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        out.fd = None;
        out.tx = None;
    }

    /// Writes `line` to the process's stdin, from this thread when the
    /// pipe takes it whole; false once stdin is closed or broken.
    fn send(&self, mut line: Vec<u8>) -> bool {
        let out = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = &out.tx else { return false };
        // Acquire pairs with the writer task's AcqRel decrement (after its
        // write): a zero means every queued line is in the pipe already.
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
        // Pairs with the writer task's decrement and the load above.
        self.backlog.fetch_add(1, Ordering::AcqRel);
        tx.send(line).is_ok()
    }

    /// Sends one call and waits for its answer until `deadline`, reading
    /// the process's answers on this thread meanwhile (see the module's
    /// documentation).
    pub(crate) async fn call(
        self: &Arc<Self>,
        proc: &Arc<Life>,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
        progress: Option<ProgressSink>,
    ) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let watched = progress.is_some();
        let id = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            if calls.closed {
                return closed(proc);
            }
            let id = calls.next;
            calls.next += 1;
            calls.waiting.insert(
                id,
                Waiting {
                    answer: tx,
                    progress,
                },
            );
            id
        };
        // Before the request is written, so its answer has a reader here
        // (and never for a process that has ended).
        let _reading = self.read_here(proc);
        let pending = Pending { lines: self, id };
        if !self.send(request(id, target, input, watched)) {
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
                "wrote a line that is not a response {{\"id\", \"output\" or \"error\" or \"progress\"}} ({e}): {shown:?}"
            )
        })?;
        let outcome = match (reply.output, reply.error, reply.progress) {
            (None, None, Some(progress)) => {
                let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Waiting {
                    progress: Some(sink),
                    ..
                }) = calls.waiting.get(&reply.id)
                {
                    let _ = sink.try_send(Progress {
                        progress,
                        total: reply.total,
                        message: reply.message,
                    });
                }
                return Ok(());
            }
            (Some(out), None, None) => Outcome::Ok(out.get().as_bytes().to_vec().into()),
            (None, Some(err), None) => {
                let text = serde_json::from_str::<String>(err.get())
                    .unwrap_or_else(|_| err.get().to_string());
                Outcome::Error(format!("tool {}: {text}", proc.tool).into())
            }
            _ => {
                return Err(format!(
                    "answered call {} with not exactly one of \"output\", \"error\" and \"progress\"",
                    reply.id
                ));
            }
        };
        proc.mark_answered();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = calls.waiting.remove(&reply.id) {
            let _ = w.answer.send(outcome);
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
        for (_, w) in waiting {
            let _ = w.answer.send(proc.ended(&why));
        }
    }

    /// Reads every whole line the pipe holds now and answers the calls
    /// they name, from whichever thread calls it (under the read lock);
    /// false once the process's stdout has ended.
    fn drain(&self, proc: &Life) -> bool {
        let mut guard = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        let stdout = &mut *guard;
        if stdout.ended.is_some() {
            return false;
        }
        let ended = loop {
            let room = stdout.lines.room(READ_CHUNK);
            match rustix::io::read(&stdout.fd, rustix::buffer::spare_capacity(room)) {
                Ok(0) => break Some(Ended::Eof),
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => break None,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => break Some(Ended::Bad(format!("could not be read: {e}"))),
            }
            if let Err(why) = stdout.lines.lines(|line| self.answer(proc, line)) {
                break Some(Ended::Bad(why));
            }
        };
        match ended {
            None => true,
            Some(e) => {
                stdout.ended = Some(e);
                drop(guard);
                self.broken.notify_one();
                false
            }
        }
    }

    /// Has this thread's reactor read the process's stdout while the
    /// returned guard lives: the first call waiting here starts the reader
    /// task, the last one gone ends it.
    fn read_here(self: &Arc<Self>, proc: &Arc<Life>) -> Option<ReadHere<'_>> {
        // A reactor to register with: the caller's. Outside one (never, in
        // practice) the host reads.
        tokio::runtime::Handle::try_current().ok()?;
        let thread = std::thread::current().id();
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = readers.get_mut(&thread) {
            r.waiting += 1;
        } else {
            let done = Arc::new(Notify::new());
            readers.insert(
                thread,
                Reader {
                    waiting: 1,
                    done: Arc::clone(&done),
                },
            );
            // SeqCst, with the store in `reader_done` and the load in `read`:
            // a caller's reader registering (its store, then its read of the
            // pipe) and the host's reader (its readiness, then this load)
            // must not both miss each other, or an answer would wait unread.
            self.reading.store(readers.len(), Ordering::SeqCst);
            tokio::spawn(read_on_caller(Turn {
                lines: Arc::clone(self),
                proc: Arc::clone(proc),
                thread,
                done,
            }));
        }
        Some(ReadHere {
            lines: self,
            thread,
        })
    }

    /// The reader task of `thread` stops if no call waits there any more
    /// (under the readers' lock, so that a call arriving meanwhile either
    /// keeps it or starts another): true when it must stop.
    fn reader_done(&self, thread: ThreadId, done: &Arc<Notify>, forced: bool) -> bool {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        match readers.get(&thread) {
            // Another task's (this one ended, and a call started another).
            Some(r) if !Arc::ptr_eq(&r.done, done) => true,
            Some(r) if r.waiting > 0 && !forced => false,
            Some(_) => {
                readers.remove(&thread);
                // SeqCst: pairs with the load in `read` (see `read_here`).
                self.reading.store(readers.len(), Ordering::SeqCst);
                true
            }
            None => true,
        }
    }

    /// Reads the process's answers while no caller's reactor does, until
    /// the process ends; why it ended.
    pub(crate) async fn read(&self, proc: &Life, child: &mut Child) -> Exit {
        let fd = {
            let stdout = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
            stdout.fd.try_clone()
        };
        let pipe = match fd.and_then(register) {
            Ok(p) => p,
            Err(source) => {
                return Exit::Io {
                    what: "read",
                    source,
                };
            }
        };
        let mut tick = tokio::time::interval(CANCEL_GRACE / 4);
        loop {
            tokio::select! {
                ready = pipe.readable() => match ready {
                    Ok(()) => {
                        let _ = pipe.try_io(|| {
                            // SeqCst: pairs with the stores in `read_here`
                            // and `reader_done`.
                            if self.reading.load(Ordering::SeqCst) == 0 {
                                self.drain(proc);
                            }
                            emptied()
                        });
                    }
                    Err(source) => return Exit::Io { what: "read", source },
                },
                () = self.broken.notified() => {}
                status = child.inner.wait() => {
                    return match status {
                        Ok(s) => Exit::Exited(s),
                        Err(source) => Exit::Io { what: "waited for", source },
                    };
                }
                _ = tick.tick() => {
                    // Whoever else reads, a cancelled call's answer must not
                    // wait for a busy caller's reactor to be read.
                    self.drain(proc);
                    if let Some(id) = self.overdue() {
                        return Exit::Overdue { id, grace: CANCEL_GRACE };
                    }
                }
            }
            let ended = self
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ended
                .clone();
            match ended {
                None => {}
                Some(Ended::Bad(why)) => return Exit::Broke(why),
                Some(Ended::Eof) => {
                    // It exited, most likely: say with what status.
                    return match tokio::time::timeout(STOP_GRACE, child.inner.wait()).await {
                        Ok(Ok(s)) => Exit::Exited(s),
                        _ => Exit::ClosedStdout,
                    };
                }
            }
        }
    }
}

/// Registers a duplicate of the pipe with the current reactor, for reads
/// (it is a pipe's read end, non-blocking: nothing to check).
fn register(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// What a reader's `try_io` closure returns after [`Lines::drain`] (or
/// after leaving the pipe to another reader): the pipe is empty for now,
/// so the reactor's readiness is cleared (unless an event came since).
fn emptied() -> std::io::Result<()> {
    Err(std::io::ErrorKind::WouldBlock.into())
}

/// How much one read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// A call waiting on this thread (see [`Lines::read_here`]).
struct ReadHere<'a> {
    lines: &'a Lines,
    thread: ThreadId,
}

impl Drop for ReadHere<'_> {
    fn drop(&mut self) {
        let mut readers = self.lines.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = readers.get_mut(&self.thread) {
            r.waiting -= 1;
            if r.waiting == 0 {
                r.done.notify_one();
            }
        }
    }
}

/// The reader task of one thread: reads the process's stdout through this
/// reactor while calls wait here, then reads once more (what arrived while
/// the host left reading to it) and ends.
async fn read_on_caller(turn: Turn) {
    let Turn {
        lines,
        proc,
        thread,
        done,
    } = &turn;
    // A duplicate per reactor: one descriptor is registered once per epoll.
    let fd = {
        let stdout = lines.stdout.lock().unwrap_or_else(|p| p.into_inner());
        stdout.fd.try_clone()
    };
    let Ok(pipe) = fd.and_then(register) else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            () = done.notified() => {
                if lines.reader_done(*thread, done, false) {
                    return;
                }
            }
            ready = pipe.readable() => {
                if ready.is_err() {
                    return;
                }
                let mut open = true;
                let _ = pipe.try_io(|| {
                    open = lines.drain(proc);
                    emptied()
                });
                if !open {
                    return;
                }
            }
        }
    }
}

/// A thread's turn at reading, owned by its reader task: ends it however
/// the task ends, even a task dropped before it first ran (its runtime shut
/// down), so the host never waits on a reader that is gone; then reads what
/// arrived meanwhile.
struct Turn {
    lines: Arc<Lines>,
    proc: Arc<Life>,
    thread: ThreadId,
    done: Arc<Notify>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.lines.reader_done(self.thread, &self.done, true);
        self.lines.drain(&self.proc);
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
fn request(id: u64, tool: &str, input: &[u8], watched: bool) -> Vec<u8> {
    let mut line = Vec::with_capacity(input.len() + tool.len() + 56);
    line.extend_from_slice(b"{\"id\":");
    line.extend_from_slice(id.to_string().as_bytes());
    if watched {
        line.extend_from_slice(b",\"progress\":true");
    }
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

/// Writes what the pipe would not take at once (see [`Stdin`]).
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
