//! Starting a tool's program: the command resolved at load, the child's
//! containment (process group, death signal, address-space limit, cleared
//! environment), and what reads its stderr.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;

use crate::error::ProcessLoadError;
use crate::manifest::{DATA_PLACEHOLDER, ProcessManifest};

/// How many bytes of a process's stderr its errors carry.
pub(crate) const STDERR_TAIL: usize = 2048;

/// A program, resolved: what every process of a tool starts as.
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    memory: Option<u64>,
    /// What its processes may see of the file system.
    pub(crate) files: Files,
}

/// How a tool's processes see the file system.
pub enum Files {
    /// As the server's user does: the manifest has no `[permissions]`.
    Unrestricted,
    /// Narrowed by Landlock to the system's directories (read-only), the
    /// program's and the manifest's (read-only) and the grants; the ruleset
    /// made at load, applied in each child before it runs the program.
    Landlock(landlock::RulesetCreated),
    /// The manifest asks for `[permissions]`, and this kernel has no
    /// Landlock: its processes see the file system as the server's user
    /// does.
    Unsupported,
}

/// Directories every narrowed process may read (the program's libraries,
/// the dynamic loader's and the system's configuration, `/proc`).
const SYSTEM_READ: [&str; 11] = [
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/run",
];

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Files {
    /// In words, for `tools list` and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Files::Unrestricted => {
                "the file system as the server's user sees it (no [permissions])"
            }
            Files::Landlock(_) => {
                "narrowed by Landlock to the system's directories and [permissions]"
            }
            Files::Unsupported => {
                "NOT narrowed: [permissions] asks for Landlock, and this kernel does not support it"
            }
        }
    }

    fn new(
        grants: Option<&crate::manifest::FsGrants>,
        resolve: impl Fn(&'static str, &str) -> Result<PathBuf, ProcessLoadError>,
        own: &[&Path],
    ) -> Result<Files, ProcessLoadError> {
        use landlock::{
            ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
            RulesetCreatedAttr, path_beneath_rules,
        };
        let Some(grants) = grants else {
            return Ok(Files::Unrestricted);
        };
        let mut read = Vec::new();
        let mut write = Vec::new();
        for (key, list, out) in [
            ("read", &grants.read, &mut read),
            ("write", &grants.write, &mut write),
        ] {
            for g in list {
                let p = resolve(key, g)?;
                if !p.is_dir() {
                    return Err(ProcessLoadError::NoGrant { key, path: p });
                }
                out.push(p);
            }
        }
        // Does this kernel have Landlock at all?
        let probe = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(ABI::V1))
            .and_then(Ruleset::create);
        if probe.is_err() {
            return Ok(Files::Unsupported);
        }
        // The newest rights this crate knows, as far as the kernel has them.
        let abi = ABI::V5;
        let ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .and_then(Ruleset::create)
            .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_READ, AccessFs::from_read(abi))))
            .and_then(|r| r.add_rules(path_beneath_rules(own, AccessFs::from_read(abi))))
            // Device files (/dev/null, /dev/urandom) are read and written.
            .and_then(|r| r.add_rules(path_beneath_rules(["/dev"], AccessFs::from_all(abi))))
            .and_then(|r| r.add_rules(path_beneath_rules(&read, AccessFs::from_read(abi))))
            .and_then(|r| r.add_rules(path_beneath_rules(&write, AccessFs::from_all(abi))))
            .map_err(ProcessLoadError::Landlock)?;
        Ok(Files::Landlock(ruleset))
    }
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("files", &self.files.describe())
            .finish_non_exhaustive()
    }
}

impl Launch {
    /// Resolves `spec`: the program on `PATH` (or relative to `base`, the
    /// manifest's directory), `{data}`, the working directory, the
    /// environment.
    pub(crate) fn resolve(
        spec: &ProcessManifest,
        base: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<Launch, ProcessLoadError> {
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
        let resolve = |key: &'static str, g: &str| -> Result<PathBuf, ProcessLoadError> {
            let p = PathBuf::from(data(
                if key == "read" {
                    "permissions.read"
                } else {
                    "permissions.write"
                },
                g,
            )?);
            Ok(match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            })
        };
        let program_dir = program.parent().unwrap_or(Path::new("/"));
        let mut own = vec![program_dir, cwd.as_path()];
        own.extend(base);
        let files = Files::new(spec.permissions.as_ref(), resolve, &own)?;
        Ok(Launch {
            program,
            args,
            env,
            cwd,
            memory: spec.limits.memory,
            files,
        })
    }

    /// Starts the program with piped stdio, in a new process group, with
    /// `SIGKILL` as its parent-death signal. The caller's thread must live
    /// as long as the child should: the death signal follows the thread
    /// that forked (the process host's thread, see `host.rs`).
    pub(crate) fn spawn(&self) -> std::io::Result<Child> {
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
        let memory = self.memory;
        // A copy of the ruleset's descriptor for this child (close-on-exec:
        // the program does not inherit it).
        let mut landlock = match &self.files {
            Files::Landlock(r) => Some(r.try_clone()?),
            Files::Unrestricted | Files::Unsupported => None,
        };
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes system calls (prctl, setrlimit through rustix; prctl
        // and landlock_restrict_self through landlock's restrict_self, on a
        // ruleset made before the fork), allocating nothing and taking no
        // lock; a failure is an errno, not an allocated error.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(ruleset) = landlock.take() {
                    ruleset
                        .restrict_self()
                        .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
                }
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
        let mut child = cmd.spawn()?;
        let group = GroupKiller(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        );
        let stderr = StderrTail::default();
        let stderr_read = child
            .stderr
            .take()
            .map(|err| tokio::spawn(stderr.clone().collect(err)));
        Ok(Child {
            inner: child,
            group,
            stderr,
            stderr_read,
        })
    }
}

/// A started program: the child, its group, the tail of its stderr.
pub(crate) struct Child {
    pub(crate) inner: tokio::process::Child,
    pub(crate) group: GroupKiller,
    pub(crate) stderr: StderrTail,
    stderr_read: Option<tokio::task::JoinHandle<()>>,
}

impl Child {
    /// The stderr excerpt once the pipe is drained (bounded: a child the
    /// program left behind may hold it open).
    pub(crate) async fn stderr_excerpt(&mut self) -> String {
        if let Some(h) = self.stderr_read.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), h).await;
        }
        self.stderr.excerpt()
    }

    /// Kills the whole group and reaps the leader (bounded: tokio reaps it
    /// later otherwise). The status, when the leader was reaped.
    pub(crate) async fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.group.kill();
        let _ = self.inner.start_kill();
        tokio::time::timeout(std::time::Duration::from_secs(1), self.inner.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Kills a process group when dropped: on timeout, on an output past its
/// cap, when a call or a process is given up, and after a normal exit
/// (children the program left behind). While any member of the group
/// lives, Linux does not hand its id to another process, so the signal
/// reaches only what this process started.
pub(crate) struct GroupKiller(Option<rustix::process::Pid>);

impl GroupKiller {
    pub(crate) fn kill(&self) {
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

/// The last [`STDERR_TAIL`] bytes a process wrote to stderr.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    async fn collect(self, mut r: tokio::process::ChildStderr) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
            tail.extend(&buf[..n]);
            let over = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..over);
        }
    }

    /// `"; stderr: …"` with the tail, or nothing when it wrote nothing.
    pub(crate) fn excerpt(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = tail.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; stderr: {text}")
        }
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
