//! One long-lived process of a pooled tool, whatever its protocol: what the
//! pool counts on it (calls in flight, calls served, whether it ever
//! answered), how it is asked to stop, and why it ended.

use std::sync::Arc;

use toolplane_core::Outcome;

use super::life::{Life, STOP_GRACE};
use super::remote::Remote;
use super::shared::{Origin, Shared};
use super::spawn::Child;
use super::{jsonl, mcp};
use crate::error::{Exit, StartError};
use crate::spec::Protocol;

/// One running process: its life (what the pool counts on it) and its
/// wire (how calls reach it).
pub(crate) struct Proc {
    pub(crate) life: Arc<Life>,
    pub(crate) wire: Wire,
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
    ) -> Result<Arc<Proc>, StartError> {
        let launch = match &shared.origin {
            Origin::Spawn(l) => l,
            Origin::Remote(r) => return Proc::open(shared, r, serial, on_exit).await,
        };
        let program = &launch.program;
        let startup = shared.limits.startup_timeout;
        let mut child = tokio::time::timeout(startup, launch.spawn())
            .await
            .map_err(|_| StartError::SpawnTimeout {
                program: program.clone(),
                timeout: startup,
            })?
            .map_err(|source| StartError::Spawn {
                program: program.clone(),
                source,
            })?;
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
                    Ok(Err(source)) => {
                        child.kill().await;
                        return Err(StartError::Handshake {
                            pid,
                            program: program.clone(),
                            source,
                            stderr: child.stderr_excerpt().await,
                        });
                    }
                    Err(_) => {
                        child.kill().await;
                        return Err(StartError::HandshakeTimeout {
                            pid,
                            program: program.clone(),
                            timeout: startup,
                            stderr: child.stderr_excerpt().await,
                        });
                    }
                }
            }
            _ => match jsonl::Lines::start(&mut child, max_line) {
                Ok(lines) => Wire::Jsonl(Arc::new(lines)),
                Err(source) => {
                    child.kill().await;
                    return Err(StartError::Pipes {
                        pid,
                        program: program.clone(),
                        source,
                    });
                }
            },
        };
        let life = Arc::new(Life::new(serial, pid, Arc::clone(&shared.name)));
        let proc = Arc::new(Proc { life, wire });
        let p = Arc::clone(&proc);
        tokio::spawn(async move {
            let why = tokio::select! {
                why = p.watch(&mut child) => why,
                () = p.life.stop_asked() => p.wind_down(&mut child).await,
                () = p.life.kill_asked() => Exit::Hung,
            };
            let status = child.kill().await;
            let status = match status {
                Some(s) if !why.has_status() => format!(" ({s})"),
                _ => String::new(),
            };
            let err = child.stderr_excerpt().await;
            p.finish(format!("process {} {why}{status}{err}", p.life.pid));
            on_exit(&p);
        });
        Ok(proc)
    }

    /// Opens a session with a remote MCP server (its `initialize`, within
    /// `limits.startup_timeout`); `on_exit` is told when it ends: closed
    /// by the pool, its transport failed, or ended by itself.
    async fn open(
        shared: &Arc<Shared>,
        remote: &Remote,
        serial: u64,
        on_exit: impl FnOnce(&Arc<Proc>) + Send + 'static,
    ) -> Result<Arc<Proc>, StartError> {
        let startup = shared.limits.startup_timeout;
        let up = match tokio::time::timeout(startup, mcp::Upstream::open(remote, shared)).await {
            Ok(Ok(up)) => up,
            Ok(Err(source)) => return Err(StartError::connect(&remote.shown, source)),
            Err(_) => {
                return Err(StartError::ConnectTimeout {
                    url: remote.shown.to_string(),
                    timeout: startup,
                });
            }
        };
        let life = Arc::new(Life::new(serial, 0, Arc::clone(&shared.name)));
        let proc = Arc::new(Proc {
            life,
            wire: Wire::Mcp(Box::new(up)),
        });
        let p = Arc::clone(&proc);
        let url = Arc::clone(&remote.shown);
        tokio::spawn(async move {
            let Wire::Mcp(up) = &p.wire else {
                unreachable!("a session speaks MCP")
            };
            let why = tokio::select! {
                () = up.ended() => Exit::SessionEnded,
                () = p.life.stop_asked() => Exit::Closed,
                () = p.life.kill_asked() => p.life.kill_why().map_or(Exit::Hung, Exit::Broken),
            };
            up.close();
            p.finish(format!("session {} with {url} {why}", p.life.serial));
            on_exit(&p);
        });
        Ok(proc)
    }

    /// Reads what the process says until it ends; why it ended.
    async fn watch(&self, child: &mut Child) -> Exit {
        match &self.wire {
            Wire::Jsonl(lines) => lines.read(&self.life, child).await,
            Wire::Mcp(up) => tokio::select! {
                status = child.inner.wait() => match status {
                    Ok(s) => Exit::Exited(s),
                    Err(source) => Exit::Io { what: "waited for", source },
                },
                why = up.overlong() => Exit::Broke(why),
            },
        }
    }

    /// Stdin closes, which asks a program that reads it to exit; killed if
    /// it has not [`STOP_GRACE`] later.
    async fn wind_down(&self, child: &mut Child) -> Exit {
        match &self.wire {
            Wire::Jsonl(lines) => lines.close(),
            Wire::Mcp(up) => up.close(),
        }
        match tokio::time::timeout(STOP_GRACE, child.inner.wait()).await {
            Ok(Ok(s)) => Exit::Stopped(s),
            _ => Exit::StopKilled(STOP_GRACE),
        }
    }

    /// Sends one call of `target` and waits for its answer until
    /// `deadline`.
    pub(crate) async fn call(
        self: &Arc<Self>,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
        meta: toolplane_tool::CallMeta,
    ) -> Outcome {
        let out = match &self.wire {
            // The jsonl protocol has no place for a trace.
            Wire::Jsonl(lines) => {
                lines
                    .call(&self.life, target, input, deadline, meta.progress)
                    .await
            }
            Wire::Mcp(up) => up.call(&self.life, target, input, deadline, meta).await,
        };
        self.life.touch();
        out
    }

    /// Records why it ended and answers every call still waiting.
    fn finish(&self, why: String) {
        let why: Arc<str> = why.into();
        match &self.wire {
            Wire::Jsonl(lines) => lines.fail_all(&self.life, Arc::clone(&why)),
            Wire::Mcp(_) => self.life.set_exit(why),
        }
    }
}
