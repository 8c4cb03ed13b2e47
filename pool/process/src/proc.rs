//! One long-lived process of a pooled tool, whatever its protocol: what the
//! pool counts on it (calls in flight, calls served, whether it ever
//! answered), how it is asked to stop, and why it ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use toolplane_core::Outcome;

use super::life::{Life, STOP_GRACE};
use super::shared::Shared;
use super::spawn::Child;
use super::{jsonl, mcp};
use crate::spec::Protocol;

/// One running process: its life (what the pool counts on it) and its
/// wire (how calls reach it).
pub(crate) struct Proc {
    pub(crate) life: Arc<Life>,
    pub(crate) wire: Wire,
}

impl std::ops::Deref for Proc {
    type Target = Life;
    fn deref(&self) -> &Life {
        &self.life
    }
}

/// How calls reach the process.
pub(crate) enum Wire {
    Jsonl(Arc<jsonl::Lines>),
    Mcp(Box<mcp::Upstream>),
}

impl Proc {
    /// Starts a process of `shared`'s program and, for MCP, completes its
    /// handshake (within `limits.startup_timeout`); `on_exit` is told when
    /// it ends.
    pub(crate) async fn start(
        shared: &Arc<Shared>,
        serial: u64,
        on_exit: impl FnOnce(&Arc<Proc>) + Send + 'static,
    ) -> Result<Arc<Proc>, String> {
        let program = shared.launch.program.display();
        let startup = shared.limits.startup_timeout;
        let mut child = tokio::time::timeout(startup, shared.launch.spawn())
            .await
            .map_err(|_| {
                format!("cannot start {program}: not started within limits.startup_timeout = {startup:?}")
            })?
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.inner.id().unwrap_or(0);
        let max_line = usize::try_from(shared.limits.max_output).unwrap_or(usize::MAX);
        let wire = match shared.protocol {
            Protocol::Mcp => {
                let started = tokio::time::timeout(
                    shared.limits.startup_timeout,
                    mcp::Upstream::connect(&mut child, shared),
                )
                .await;
                match started {
                    Ok(Ok(up)) => Wire::Mcp(Box::new(up)),
                    Ok(Err(e)) => {
                        child.kill().await;
                        let err = child.stderr_excerpt().await;
                        return Err(format!(
                            "process {pid} ({program}): MCP initialize failed: {e}{err}"
                        ));
                    }
                    Err(_) => {
                        child.kill().await;
                        let err = child.stderr_excerpt().await;
                        return Err(format!(
                            "process {pid} ({program}) did not finish starting (the MCP handshake) within limits.startup_timeout = {:?}{err}",
                            shared.limits.startup_timeout
                        ));
                    }
                }
            }
            _ => match jsonl::Lines::start(&mut child, max_line) {
                Ok(lines) => Wire::Jsonl(Arc::new(lines)),
                Err(e) => {
                    child.kill().await;
                    return Err(format!("process {pid} ({program}): {e}"));
                }
            },
        };
        let life = Arc::new(Life::new(serial, pid, Arc::clone(&shared.name)));
        let proc = Arc::new(Proc { life, wire });
        let p = Arc::clone(&proc);
        tokio::spawn(async move {
            let why = tokio::select! {
                why = p.watch(&mut child) => why,
                () = p.stop.notified() => p.wind_down(&mut child).await,
                () = p.kill.notified() => "was hung: no answer to a ping after a cancelled call".to_string(),
            };
            let status = child.kill().await;
            let status = match status {
                Some(s) if !why.starts_with("exited") && !why.starts_with("was stopped") => {
                    format!(" ({s})")
                }
                _ => String::new(),
            };
            let err = child.stderr_excerpt().await;
            p.finish(format!("process {} {why}{status}{err}", p.pid));
            on_exit(&p);
        });
        Ok(proc)
    }

    /// Reads what the process says until it ends; why it ended.
    async fn watch(&self, child: &mut Child) -> String {
        match &self.wire {
            Wire::Jsonl(lines) => lines.read(&self.life, child).await,
            Wire::Mcp(up) => tokio::select! {
                status = child.inner.wait() => match status {
                    Ok(s) => format!("exited ({s})"),
                    Err(e) => format!("could not be waited for: {e}"),
                },
                why = up.overlong() => why,
            },
        }
    }

    /// Stdin closes, which asks a program that reads it to exit; killed if
    /// it has not [`STOP_GRACE`] later.
    async fn wind_down(&self, child: &mut Child) -> String {
        match &self.wire {
            Wire::Jsonl(lines) => lines.close(),
            Wire::Mcp(up) => up.close(),
        }
        match tokio::time::timeout(STOP_GRACE, child.inner.wait()).await {
            Ok(Ok(s)) => format!("was stopped ({s})"),
            _ => format!("was stopped (killed: no exit {STOP_GRACE:?} after its stdin closed)"),
        }
    }

    /// Asks it to stop: see [`Proc::wind_down`].
    pub(crate) fn stop(&self) {
        // Release pairs with the Acquire loads in `Warm::give_back` and
        // `Warm::ended`.
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    /// Sends one call of `target` and waits for its answer until
    /// `deadline`.
    pub(crate) async fn call(
        self: &Arc<Self>,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
        progress: Option<toolplane_tool::progress::ProgressSink>,
    ) -> Outcome {
        let out = match &self.wire {
            Wire::Jsonl(lines) => {
                lines
                    .call(&self.life, target, input, deadline, progress)
                    .await
            }
            Wire::Mcp(up) => up.call(&self.life, target, input, deadline, progress).await,
        };
        self.touch();
        out
    }

    /// Records why it ended and answers every call still waiting.
    fn finish(&self, why: String) {
        let why: Arc<str> = why.into();
        match &self.wire {
            Wire::Jsonl(lines) => lines.fail_all(&self.life, Arc::clone(&why)),
            Wire::Mcp(_) => self.set_exit(why),
        }
    }
}
