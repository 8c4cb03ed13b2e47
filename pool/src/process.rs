//! Tools that run as processes (`runtime = "process"`): a program the
//! manifest names, started with an environment cleared to what the manifest
//! grants, in a process group of its own that dies with the server.
//!
//! The protocol so far is `exec`: one fresh process per call, the input
//! JSON on its stdin, its output JSON on its stdout, a non-zero exit an
//! error carrying the tail of its stderr. The whole process group is
//! killed when the call times out or its output passes `limits.max_output`,
//! and every child gets `SIGKILL` if the server dies (`PR_SET_PDEATHSIG`).
//! Calls run as pending calls on the worker's reactor (async pipes); at
//! most `pool.max` processes of a tool run at once, the rest wait for a
//! turn within their deadline.
//!
//! What is isolated, compared with a WASI tool: the environment (cleared),
//! the working directory, the address space (`limits.memory` as
//! `RLIMIT_AS`), time and output. What is not: the file system and the
//! network, which the program sees as the server's user does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolplane_core::Outcome;

use crate::checks::Checks;
pub use crate::error::ProcessLoadError;
use crate::manifest::{DATA_PLACEHOLDER, Manifest};
pub use crate::manifest::{ProcessLimits, ProcessManifest};
use crate::size::fmt_size;

/// How many bytes of a failed process's stderr its error carries.
const STDERR_TAIL: usize = 2048;

/// A process tool ready to call: its command resolved, its turns counted.
pub struct ProcessTool {
    /// Its manifest.
    pub manifest: Arc<Manifest>,
    pub(crate) checks: Checks,
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    limits: ProcessLimits,
    turns: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ProcessTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTool")
            .field("name", &self.name)
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl ProcessTool {
    /// Resolves `spec` for the tool `name`: the program on `PATH` (or
    /// relative to `base`, the manifest's directory), `{data}`, the
    /// working directory.
    pub(crate) fn load(
        manifest: Arc<Manifest>,
        spec: &ProcessManifest,
        checks: Checks,
        base: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<ProcessTool, ProcessLoadError> {
        let data = |key: &'static str, s: &str| -> Result<String, ProcessLoadError> {
            if !s.contains(DATA_PLACEHOLDER) {
                return Ok(s.to_string());
            }
            let d = data_dir.ok_or(ProcessLoadError::NoDataDir { key })?;
            Ok(s.replace(DATA_PLACEHOLDER, &d.to_string_lossy()))
        };
        let program = find_program(&spec.command[0], base)?;
        let args = spec.command[1..]
            .iter()
            .map(|a| data("command", a))
            .collect::<Result<_, _>>()?;
        let cwd = match &spec.cwd {
            Some(c) => {
                let c = PathBuf::from(data("cwd", c)?);
                match base {
                    Some(b) if c.is_relative() => b.join(c),
                    _ => c,
                }
            }
            None => base.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        };
        if !cwd.is_dir() {
            return Err(ProcessLoadError::NoCwd(cwd));
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for key in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(key) {
                env.push((key.into(), v.to_string_lossy().into_owned()));
            }
        }
        for (k, v) in &spec.env {
            env.retain(|(e, _)| e != k);
            env.push((k.clone(), data("env", v)?));
        }
        Ok(ProcessTool {
            name: manifest.name.clone(),
            manifest,
            checks,
            program,
            args,
            env,
            cwd,
            limits: spec.limits.clone(),
            turns: Arc::new(tokio::sync::Semaphore::new(spec.max_processes)),
        })
    }

    /// Runs one call: a fresh process, `input` on its stdin.
    pub(crate) async fn call(&self, input: &[u8]) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let Ok(Ok(_turn)) =
            tokio::time::timeout_at(deadline, Arc::clone(&self.turns).acquire_owned()).await
        else {
            return Outcome::Timeout;
        };
        let mut child = match self.command().spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Error(
                    format!(
                        "tool {}: cannot start {}: {e}",
                        self.name,
                        self.program.display()
                    )
                    .into(),
                );
            }
        };
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let killer = GroupKiller(group);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let write = async {
                if let Some(mut w) = stdin {
                    // A program that exits without reading its input is not
                    // an error of the write.
                    let _ = w.write_all(input).await;
                }
            };
            let read_out = async {
                let out = read_capped(stdout, self.limits.max_output).await;
                if out.is_none() {
                    // Past the cap: the rest is never read, so stop the
                    // writers now rather than at the deadline.
                    killer.kill();
                }
                out
            };
            let read_err = read_tail(stderr, STDERR_TAIL);
            let ((), out, err) = tokio::join!(write, read_out, read_err);
            (out, err)
        };
        let ((out, err), status) = match tokio::time::timeout_at(deadline, async {
            let r = run.await;
            (r, child.wait().await)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => {
                drop(killer);
                // The group is dead; the leader too, unless it could not be
                // signalled as a group: then it is killed alone, and
                // reaping it is bounded (tokio reaps it later otherwise).
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                return Outcome::Timeout;
            }
        };
        drop(killer);
        let Some(out) = out else {
            return Outcome::Error(
                format!(
                    "tool {}: output passed limits.max_output = {}",
                    self.name,
                    fmt_size(self.limits.max_output)
                )
                .into(),
            );
        };
        match status {
            Ok(s) if s.success() => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_err() {
                    return Outcome::Error(
                        format!(
                            "tool {}: its output is not JSON ({} bytes){}",
                            self.name,
                            out.len(),
                            stderr_excerpt(&err)
                        )
                        .into(),
                    );
                }
                Outcome::Ok(out.into())
            }
            Ok(s) => {
                Outcome::Error(format!("tool {}: {s}{}", self.name, stderr_excerpt(&err)).into())
            }
            Err(e) => Outcome::Error(format!("tool {}: waiting for it: {e}", self.name).into()),
        }
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let memory = self.limits.memory;
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes two system calls (prctl, setrlimit) through rustix,
        // which allocate nothing and take no lock.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                if let Some(bytes) = memory {
                    rustix::process::setrlimit(
                        rustix::process::Resource::As,
                        rustix::process::Rlimit {
                            current: Some(bytes),
                            maximum: Some(bytes),
                        },
                    )?;
                }
                Ok(())
            });
        }
        cmd
    }
}

/// Kills the call's whole process group when dropped: on timeout, on an
/// output past its cap, when the call is cancelled, and after a normal exit
/// (children the program left behind). While any member of the group
/// lives, Linux does not hand its id to another process, so the signal
/// reaches only what this call started.
struct GroupKiller(Option<rustix::process::Pid>);

impl GroupKiller {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
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

/// The last `keep` bytes `r` writes.
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut r) = r else { return tail };
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    tail
}

fn stderr_excerpt(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

/// `name` as a path (when it has a slash: relative to `base`) or found on
/// the server's `PATH`.
fn find_program(name: &str, base: Option<&Path>) -> Result<PathBuf, ProcessLoadError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        return if executable(&p) {
            Ok(p)
        } else {
            Err(ProcessLoadError::NoProgram {
                program: name.into(),
                looked: p.display().to_string(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(ProcessLoadError::NoProgram {
        program: name.into(),
        looked: format!("PATH = {}", path.to_string_lossy()),
    })
}
