//! `protocol = "exec"`: one fresh process per call, the input JSON on its
//! stdin, its output JSON on its stdout, a non-zero exit an error carrying
//! the tail of its stderr. At most `pool.max` run at once; the rest wait
//! (at most `pool.queue` of them) for a turn within their deadline.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolplane_core::Outcome;

use super::shared::Shared;
use super::stats::Counters;
use toolplane_units::fmt_size;

/// Runs one call; on the process host.
pub(crate) async fn call(
    tool: Arc<Shared>,
    input: Vec<u8>,
    deadline: tokio::time::Instant,
) -> Outcome {
    let began = Instant::now();
    let turn = match tool.turn(deadline).await {
        Ok(t) => t,
        Err(o) => return o,
    };
    tool.counters.queue_wait.record(began.elapsed());
    let served = Instant::now();
    let out = run(&tool, &input, deadline).await;
    tool.counters.service.record(served.elapsed());
    drop(turn);
    out
}

async fn run(tool: &Shared, input: &[u8], deadline: tokio::time::Instant) -> Outcome {
    let name = &tool.name;
    let super::shared::Origin::Spawn(launch) = &tool.origin else {
        return Outcome::Error(format!("tool {name}: a remote tool has no program to run").into());
    };
    // The start waits its turn on the fork thread: within the deadline
    // too (a fork given up before its turn is not made).
    let mut child = match tokio::time::timeout_at(deadline, launch.spawn()).await {
        Err(_) => return Outcome::Timeout,
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Error(
                format!(
                    "tool {name}: cannot start {}: {e}",
                    launch.program.display()
                )
                .into(),
            );
        }
    };
    let _alive = Alive::enter(&tool.counters);
    let stdin = child.inner.stdin.take();
    let stdout = child.inner.stdout.take();
    let max = tool.limits.max_output;
    let group = &child.group;
    let run = async {
        let write = async {
            if let Some(mut w) = stdin {
                // A program that exits without reading its input is not an
                // error of the write.
                let _ = w.write_all(input).await;
            }
        };
        let read = async {
            let out = read_capped(stdout, max).await;
            if out.is_none() {
                // Past the cap: the rest is never read, so stop the
                // writers now rather than at the deadline.
                group.kill();
            }
            out
        };
        let ((), out) = tokio::join!(write, read);
        out
    };
    let out = match tokio::time::timeout_at(deadline, run).await {
        Ok(out) => out,
        Err(_) => {
            child.kill().await;
            return Outcome::Timeout;
        }
    };
    let status = match tokio::time::timeout_at(deadline, child.inner.wait()).await {
        Ok(s) => s,
        Err(_) => {
            child.kill().await;
            return Outcome::Timeout;
        }
    };
    // Children the program left behind go with it.
    child.group.kill();
    let Some(out) = out else {
        return Outcome::Error(
            format!(
                "tool {name}: output passed limits.max_output = {}",
                fmt_size(max)
            )
            .into(),
        );
    };
    match status {
        Ok(s) if s.success() => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_err() {
                let err = child.stderr_excerpt().await;
                return Outcome::Error(
                    format!(
                        "tool {name}: its output is not JSON ({} bytes){err}",
                        out.len()
                    )
                    .into(),
                );
            }
            Outcome::Ok(out.into())
        }
        Ok(s) => {
            let err = child.stderr_excerpt().await;
            Outcome::Error(format!("tool {name}: {s}{err}").into())
        }
        Err(e) => Outcome::Error(format!("tool {name}: waiting for it: {e}").into()),
    }
}

/// Counts a running process while it lives.
struct Alive<'a>(&'a Counters);

impl<'a> Alive<'a> {
    fn enter(c: &'a Counters) -> Alive<'a> {
        c.alive.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Alive(c)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0
            .alive
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything `r` writes, or `None` once it passes `max` bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, max: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let Some(r) = r else { return Some(out) };
    let mut limited = r.take(max + 1);
    if limited.read_to_end(&mut out).await.is_err() {
        return Some(out);
    }
    (out.len() as u64 <= max).then_some(out)
}
