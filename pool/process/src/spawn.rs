//! Starting a tool's program: the command resolved at load, the child's
//! containment (namespaces and privileges, `contain.rs`; process group,
//! Landlock, address-space limit, cleared
//! environment), and what reads its stderr.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;

use crate::error::ProcessLoadError;
use crate::spec::ProcessManifest;
use toolplane_tool::DATA_PLACEHOLDER;
use toolplane_tool::secret::Value;

/// How many bytes of a process's stderr its errors carry.
pub(crate) const STDERR_TAIL: usize = 2048;

/// Bytes of a process's stderr read a second at most.
pub(crate) const STDERR_RATE: usize = 4 << 20;

/// A program, resolved: what every process of a tool starts as.
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Its processes' memory and process-count limits (`cgroup.rs`).
    pub(crate) limits: super::cgroup::Limits,
    /// What its processes may see of the file system.
    pub(crate) files: Files,
    /// Namespaces and privileges (`contain.rs`).
    pub(crate) contain: Arc<super::contain::Contain>,
}

/// How a tool's processes see the file system.
pub enum Files {
    /// As the server's user does: the manifest has no `[permissions]`.
    Unrestricted,
    /// Narrowed by Landlock to the system's directories (read-only), the
    /// program file (read and run), a few device files and the grants, with
    /// no TCP and no signals or abstract sockets outside; the ruleset made
    /// at load, applied in each child before it runs the program.
    Landlock(Rules),
    /// The manifest asks for `[permissions]`, and this kernel has no
    /// Landlock: its processes see the file system as the server's user
    /// does.
    Unsupported,
}

/// Directories every narrowed process may read (the program's libraries,
/// the dynamic loader's and the system's configuration, `/proc`). Not
/// `/run`: a narrowed process's is an empty tmpfs, with only what it is
/// granted there bound back (`contain.rs`).
const SYSTEM_READ: [&str; 10] = [
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys",
];

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Files {
    /// Whether its processes may write in `dir` (or above it).
    pub(crate) fn may_write(&self, dir: &Path) -> bool {
        match self {
            Files::Unrestricted | Files::Unsupported => true,
            Files::Landlock(r) => {
                let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
                r.write.iter().any(|w| {
                    toolplane_tool::files::covers(w, &dir) || toolplane_tool::files::covers(&dir, w)
                })
            }
        }
    }

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

    #[allow(clippy::too_many_arguments)]
    fn new(
        grants: Option<&crate::spec::FsGrants>,
        resolve: impl Fn(&'static str, &str) -> Result<PathBuf, ProcessLoadError>,
        needs: &Needs,
        program: &Path,
        cwd: &Path,
        tools: Option<&Path>,
        host_network: bool,
    ) -> Result<Files, ProcessLoadError> {
        use landlock::{Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr};
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
                // Resolved: `..` and links name what they lead to.
                let p = resolve(key, g)?;
                let p = match p.canonicalize() {
                    Ok(c) if c.is_dir() => c,
                    _ => return Err(ProcessLoadError::NoGrant { key, path: p }),
                };
                if key == "write" {
                    refuse_tools(&p, tools)?;
                }
                out.push(p);
            }
        }
        // With the host's network, the resolver's configuration where it
        // lies (under /run with systemd-resolved).
        if host_network
            && let Some(dns) = super::contain::dns_file()
            && !SYSTEM_READ.iter().any(|s| dns.starts_with(s))
        {
            read.push(dns);
        }
        // What the preset needs, where it is there.
        for (key, list, out) in [
            ("read", &needs.read, &mut read),
            ("write", &needs.write, &mut write),
        ] {
            for p in list {
                let Ok(p) = p.canonicalize() else { continue };
                if key == "write" {
                    refuse_tools(&p, tools)?;
                }
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
        // The working directory is granted only by a grant (or the system's
        // directories): never implicitly.
        let canon = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
        let covered = |p: &Path| {
            SYSTEM_READ.iter().any(|s| p.starts_with(s))
                || read.iter().chain(&write).any(|g| p.starts_with(g))
        };
        if !covered(&canon) {
            return Err(ProcessLoadError::Uncovered {
                what: "cwd",
                path: canon,
            });
        }
        // Does this kernel have Landlock at all?
        let probe = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(landlock::ABI::V1))
            .and_then(Ruleset::create);
        if probe.is_err() {
            return Ok(Files::Unsupported);
        }
        // The program itself, read and run, when no grant covers it: not
        // its directory.
        let program = program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf());
        let own = if covered(&program) {
            Vec::new()
        } else {
            vec![program]
        };
        let rules = Rules {
            read,
            write,
            own,
            host_network,
        };
        // Made once now, so that its errors are the load's.
        rules.create()?;
        Ok(Files::Landlock(rules))
    }
}

/// A write grant `p` over or under the tools directory is an error naming
/// both: a tool that writes a manifest there runs code.
fn refuse_tools(p: &Path, tools: Option<&Path>) -> Result<(), ProcessLoadError> {
    match tools {
        Some(tools)
            if toolplane_tool::files::covers(p, tools)
                || toolplane_tool::files::covers(tools, p) =>
        {
            Err(ProcessLoadError::WritesTools {
                path: p.to_path_buf(),
                tools: tools.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

/// A narrowed process's Landlock rules; a ruleset is made of them for
/// each process (its own `/proc` is added in the child, see
/// [`Rules::create`]).
#[derive(Debug)]
pub struct Rules {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    own: Vec<PathBuf>,
    host_network: bool,
}

/// The newest Landlock ABI whose rights these rules use.
const ABI: landlock::ABI = landlock::ABI::V6;

impl Rules {
    /// A ruleset of these rules, with the system's directories read-only
    /// (but `/proc`, which the child adds for its own mount with
    /// [`add_proc_rule`] when it has one), the device files, the grants,
    /// no TCP unless `network = "host"`, and no signals or abstract
    /// sockets outside.
    fn create(&self) -> Result<std::os::fd::OwnedFd, ProcessLoadError> {
        use landlock::{
            Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
            path_beneath_rules,
        };
        let file = AccessFs::from_file(ABI);
        let ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI))
            .and_then(|r| {
                if self.host_network {
                    Ok(r)
                } else {
                    r.handle_access(AccessNet::from_all(ABI))
                }
            })
            .and_then(|r| r.scope(Scope::from_all(ABI)))
            .and_then(Ruleset::create)
            .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_READ, AccessFs::from_read(ABI))))
            .and_then(|r| {
                r.add_rules(path_beneath_rules(
                    &self.own,
                    AccessFs::from_read(ABI) & file,
                ))
            })
            .and_then(|r| r.add_rules(path_beneath_rules(DEVICES, file)))
            .and_then(|r| r.add_rules(path_beneath_rules(&self.read, AccessFs::from_read(ABI))))
            .and_then(|r| r.add_rules(path_beneath_rules(&self.write, AccessFs::from_all(ABI))))
            .map_err(ProcessLoadError::Landlock)?;
        let fd: Option<std::os::fd::OwnedFd> = ruleset.into();
        fd.ok_or(ProcessLoadError::Landlock(
            landlock::RulesetError::CreateRuleset(
                landlock::CreateRulesetError::MissingHandledAccess,
            ),
        ))
    }
}

/// The read rights this kernel handles, as Landlock's bits (for the rule
/// on a child's own `/proc`).
fn proc_read_bits() -> u64 {
    use landlock::AccessFs;
    static BITS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BITS.get_or_init(|| {
        #[allow(unsafe_code)]
        // SAFETY: landlock_create_ruleset with a null attribute, size 0 and
        // LANDLOCK_CREATE_RULESET_VERSION only reports the ABI version.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        let kernel = landlock::ABI::from(i32::try_from(v).unwrap_or(0));
        let abi = if kernel < ABI { kernel } else { ABI };
        AccessFs::from_read(abi).bits()
    })
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel has it).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// In the child: lets `ruleset` read this mount namespace's own `/proc`
/// (a rule made at load names the server's, which the child's covers).
/// Only system calls.
fn add_proc_rule(ruleset: libc::c_int, bits: u64) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated path, a packed attribute of the kernel's
    // layout; the descriptor is closed on every path.
    unsafe {
        let fd = libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let attr = PathBeneathAttr {
            allowed_access: bits,
            parent_fd: fd,
        };
        // LANDLOCK_RULE_PATH_BENEATH = 1
        let rc = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1u32,
            &attr as *const PathBeneathAttr,
            0u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// In the child: enforces `ruleset` on this process (`no_new_privs` is set
/// already). Only a system call.
fn restrict_self(ruleset: libc::c_int) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: landlock_restrict_self on a ruleset descriptor, no flags.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a `preset` adds: environment (before the manifest's own `env`,
/// which wins) and, under `[permissions]`, grants.
#[derive(Default)]
struct Needs {
    env: Vec<(String, String)>,
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
}

impl Needs {
    /// - every preset: read the runtime's install prefix (`<prefix>/bin/
    ///   <program>`, before and after links are followed: a venv's or
    ///   pyenv's directory and the interpreter's own);
    /// - `node`, `python`: read the script's directory (the first argument
    ///   that is not an option and names a file, from `cwd`);
    /// - `python`: read the user's site-packages (`~/.local/lib`);
    ///   `PYTHONUNBUFFERED=1` (a pipe would hold its answers back) and
    ///   `PYTHONDONTWRITEBYTECODE=1` (the tools directory is read-only);
    /// - `npx`: read and write an npm cache of the tool's own
    ///   (`$XDG_CACHE_HOME/toolplane/npx/<tool>`, else under
    ///   `~/.cache`): one shared with other tools or the operator's own
    ///   `~/.npm` would let a narrowed tool replace the code they run;
    ///   offline first (a cached package starts with no network:
    ///   `network = "host"` is for the first fetch), no update, fund or
    ///   audit requests.
    ///
    /// A read grant that would be `/`, or hold the home, data or tools
    /// directory (a program in `/bin` has the prefix `/`, one in `~/bin`
    /// the home), is left out and said so.
    fn of(
        preset: crate::spec::Preset,
        at: (&str, &Path, &[String], &Path),
        env: &[(String, String)],
        around: (Option<&Path>, Option<&Path>),
    ) -> Result<Needs, ProcessLoadError> {
        let (tool, program, args, cwd) = at;
        let (data_dir, tools) = around;
        use crate::spec::Preset;
        let mut n = Needs::default();
        let prefix = |p: &Path| {
            p.parent()
                .filter(|b| b.file_name().is_some_and(|f| f == "bin" || f == "shims"))
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        };
        n.read.extend(prefix(program));
        if let Ok(real) = program.canonicalize() {
            n.read.extend(prefix(&real));
        }
        let home = env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v));
        if matches!(preset, Preset::Node | Preset::Python)
            && let Some(script) = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .map(|a| cwd.join(a))
                .filter(|p| p.is_file())
        {
            n.read.extend(script.parent().map(Path::to_path_buf));
        }
        let mut set = |k: &str, v: &str| n.env.push((k.into(), v.into()));
        match preset {
            Preset::Node => {}
            Preset::Python => {
                set("PYTHONUNBUFFERED", "1");
                set("PYTHONDONTWRITEBYTECODE", "1");
                n.read.extend(home.as_ref().map(|h| h.join(".local/lib")));
            }
            Preset::Npx => {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                    .map(|c| c.join("toolplane/npx").join(tool))
                    .ok_or(ProcessLoadError::Preset {
                        preset: "npx",
                        why: "npm's cache: neither XDG_CACHE_HOME nor HOME is set".into(),
                    })?;
                std::fs::create_dir_all(&cache).map_err(|e| ProcessLoadError::Preset {
                    preset: "npx",
                    why: format!("npm's cache {}: {e}", cache.display()),
                })?;
                set("npm_config_cache", &cache.to_string_lossy());
                set("npm_config_prefer_offline", "true");
                set("npm_config_update_notifier", "false");
                set("npm_config_fund", "false");
                set("npm_config_audit", "false");
                n.write.push(cache);
            }
        }
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let held: Vec<PathBuf> = [home.as_deref(), data_dir]
            .into_iter()
            .flatten()
            .map(canon)
            .collect();
        let tools = tools.map(canon);
        n.read.retain(|p| {
            let p = canon(p);
            let broad = p == Path::new("/")
                || held.iter().any(|h| h.starts_with(&p))
                || tools.as_ref().is_some_and(|t| t.starts_with(&p) && *t != p);
            if broad {
                tracing::warn!(
                    tool,
                    "preset: {} is not granted: it is / or holds the home, data or tools directory",
                    p.display()
                );
            }
            !broad
        });
        Ok(n)
    }
}

/// The device files a narrowed process may read and write.
const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

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
        name: &str,
        spec: &ProcessManifest,
        base: Option<&Path>,
        data_dir: Option<&Path>,
        hidden: &[PathBuf],
    ) -> Result<Launch, ProcessLoadError> {
        // Absolute: the program runs in its own working directory, where
        // a relative tools or data directory (`--tools tools`) names
        // something else.
        let absolute = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let (base, data_dir) = (base.map(absolute), data_dir.map(absolute));
        let (base, data_dir) = (base.as_deref(), data_dir.as_deref());
        let data = |key: &'static str, s: &str| -> Result<String, ProcessLoadError> {
            if !s.contains(DATA_PLACEHOLDER) {
                return Ok(s.to_string());
            }
            let d = data_dir.ok_or(ProcessLoadError::NoDataDir { key })?;
            Ok(s.replace(DATA_PLACEHOLDER, &d.to_string_lossy()))
        };
        // Not from the data directory: tools write there, and a program
        // there would run what they wrote.
        if spec.command[0].contains(DATA_PLACEHOLDER) {
            return Err(ProcessLoadError::Program {
                program: spec.command[0].clone(),
                why: "the program may not lie in the data directory ({data}): tools write there, so it would run what a tool wrote".into(),
            });
        }
        let program = find_program(&spec.command[0], base)?;
        let args = spec.command[1..]
            .iter()
            .map(|a| data("command", a))
            .collect::<Result<Vec<String>, _>>()?;
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
        let needs = match spec.preset {
            Some(p) => Needs::of(p, (name, &program, &args, &cwd), &env, (data_dir, base))?,
            None => Needs::default(),
        };
        // A reference is resolved here, once per load; `{data}` is
        // replaced in values written in place only.
        let own = spec
            .env
            .iter()
            .map(|(k, v)| match v {
                Value::Plain(text) => Ok((k.clone(), data("env", text)?)),
                reference => reference
                    .resolve(base)
                    .map(|s| (k.clone(), s.expose().to_owned()))
                    .map_err(|source| ProcessLoadError::Secret {
                        key: k.clone(),
                        source,
                    }),
            })
            .collect::<Result<Vec<_>, ProcessLoadError>>()?;
        for (k, v) in needs.env.iter().cloned().chain(own) {
            env.retain(|(e, _)| *e != k);
            env.push((k, v));
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
        let files = Files::new(
            spec.permissions.as_ref(),
            resolve,
            &needs,
            &program,
            &cwd,
            base,
            spec.host_network,
        )?;
        // The tools directory (the manifest's) read-only, the hidden
        // directories (the module cache) out of sight.
        // Under the empty /run of a narrowed tool: what it is granted
        // there, and its program's directory and working directory.
        let grants: Option<Vec<&Path>> = match &files {
            Files::Landlock(r) => Some(
                r.read
                    .iter()
                    .chain(&r.write)
                    .map(PathBuf::as_path)
                    .chain(
                        [program.parent(), Some(cwd.as_path())]
                            .into_iter()
                            .flatten()
                            .filter(|p| p.starts_with("/run")),
                    )
                    .collect(),
            ),
            Files::Unrestricted | Files::Unsupported => None,
        };
        // `secrets/` beside the manifests holds the files `{ file = … }`
        // references name (`toolplane import` writes them there): hidden
        // from every process tool, which runs as the server's user.
        let secrets = base
            .map(|b| b.join(toolplane_tool::secret::SECRETS_DIR))
            .filter(|d| d.is_dir());
        let hidden: Vec<&Path> = hidden
            .iter()
            .map(PathBuf::as_path)
            .chain(secrets.as_deref())
            .collect();
        let contain = Arc::new(super::contain::Contain::new(
            spec.host_network,
            &base.into_iter().collect::<Vec<_>>(),
            &hidden,
            grants.as_deref(),
        ));
        Ok(Launch {
            program,
            args,
            env,
            cwd,
            limits: super::cgroup::Limits {
                processes: spec.limits.processes,
                memory: spec.limits.memory,
                memory_set: spec.limits.memory_set,
            },
            files,
            contain,
        })
    }

    /// Starts the program with piped stdio, in a new process group, with
    /// `SIGKILL` as its parent-death signal, its pipes on the caller's
    /// runtime (the process host's, see `host.rs`). The fork is made on
    /// [`forker`]'s thread: the death signal follows the thread that
    /// forked, which must outlive the child, and `spawn` returns only once
    /// the child has run `exec`, after joining its cgroup — which can
    /// wait an RCU grace period (PERF.md, "Process tools limited"), and
    /// must not hold the host's reactor meanwhile.
    pub(crate) async fn spawn(&self) -> std::io::Result<Child> {
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
        // A group of its own, joined first: everything it starts is in it.
        let group = super::cgroup::Group::new(self.limits)?.map(Arc::new);
        let join = group.clone();
        // Without cgroups, each process's allocations are bounded instead.
        let data_limit = group.is_none().then(|| self.limits.data());
        // A ruleset of its own for this child (close-on-exec: the program
        // does not inherit it), to which the child adds its own /proc.
        let landlock = match &self.files {
            Files::Landlock(r) => Some(r.create().map_err(std::io::Error::other)?),
            Files::Unrestricted | Files::Unsupported => None,
        };
        let proc_bits = proc_read_bits();
        // Compiled before the fork (the child may not allocate).
        let _ = super::seccomp::filters();
        let contain = Arc::clone(&self.contain);
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes system calls (`Group::join`, `Contain::enter`,
        // `drop_privileges` and `Filters::install`,
        // see their comments; setrlimit through rustix; landlock_add_rule
        // and landlock_restrict_self on a ruleset made before the fork),
        // allocating nothing and taking no lock; a failure is an errno, not
        // an allocated error.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(g) = &join {
                    g.join()?;
                }
                contain.enter()?;
                if let Some(bytes) = data_limit {
                    rustix::process::setrlimit(
                        rustix::process::Resource::Data,
                        rustix::process::Rlimit {
                            current: Some(bytes),
                            maximum: Some(bytes),
                        },
                    )?;
                }
                contain.drop_privileges()?;
                if let Some(ruleset) = &landlock {
                    use std::os::fd::AsRawFd;
                    if contain.own_proc() {
                        add_proc_rule(ruleset.as_raw_fd(), proc_bits)?;
                    }
                    restrict_self(ruleset.as_raw_fd())?;
                }
                if let Ok(filters) = super::seccomp::filters() {
                    filters.install()?;
                }
                Ok(())
            });
        }
        let mut child = fork_on_thread(cmd).await?;
        let killer = GroupKiller(
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
            group: killer,
            stderr,
            stderr_read,
            limits: self.limits,
            cgroup: group,
        })
    }
}

/// A fork to make on [`forker`]'s thread.
type Fork = Box<dyn FnOnce() + Send>;

/// The thread every process tool's fork is made on, started once and
/// never ended (a parent-death signal fires when the thread that forked
/// ends). `None` if it could not be started: forks are made in place.
fn forker() -> Option<&'static std::sync::mpsc::Sender<Fork>> {
    static FORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Fork>>> =
        std::sync::OnceLock::new();
    FORKER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Fork>();
            std::thread::Builder::new()
                .name("toolplane-fork".into())
                .spawn(move || {
                    while let Ok(fork) = rx.recv() {
                        fork();
                    }
                })
                .map_err(|e| tracing::warn!("no fork thread ({e}): process tools fork in place"))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Runs `cmd.spawn()` on the fork thread, its pipes registered with the
/// caller's runtime.
async fn fork_on_thread(
    mut cmd: tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let Some(forker) = forker() else {
        return cmd.spawn();
    };
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let fork: Fork = Box::new(move || {
        // A caller that went away while this waited its turn needs none.
        if tx.is_closed() {
            return;
        }
        let _in = handle.enter();
        // One that goes away now drops the child: killed on drop.
        let _ = tx.send(cmd.spawn());
    });
    forker
        .send(fork)
        .map_err(|_| std::io::Error::other("the fork thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("the fork thread dropped a fork"))?
}

/// A started program: the child, its group, the tail of its stderr.
pub(crate) struct Child {
    pub(crate) inner: tokio::process::Child,
    pub(crate) group: GroupKiller,
    pub(crate) stderr: StderrTail,
    stderr_read: Option<tokio::task::JoinHandle<()>>,
    limits: super::cgroup::Limits,
    /// Last: dropped after the process is killed, it kills what is left
    /// in the group and removes it.
    cgroup: Option<Arc<super::cgroup::Group>>,
}

impl Child {
    /// What its error says after its status: the limit it reached, if
    /// any, and the stderr excerpt once the pipe is drained (bounded: a
    /// child the program left behind may hold it open).
    pub(crate) async fn stderr_excerpt(&mut self) -> String {
        if let Some(h) = self.stderr_read.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), h).await;
        }
        let limit = match &self.cgroup {
            Some(g) => g.hit().map(|hit| format!("; {hit}")),
            // Without cgroups a process over its RLIMIT_DATA sees its
            // allocations fail, and most runtimes abort.
            None => matches!(
                self.inner.try_wait(),
                Ok(Some(s)) if matches!(
                    std::os::unix::process::ExitStatusExt::signal(&s),
                    Some(libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS | libc::SIGTRAP)
                )
            )
            .then(|| {
                format!(
                    "; it may have reached its memory limit ({}, each process's RLIMIT_DATA here)",
                    toolplane_units::fmt_size(self.limits.data())
                )
            }),
        };
        format!("{}{}", limit.unwrap_or_default(), self.stderr.excerpt())
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
            // The leader's children first: with namespaces the leader is
            // the shim, and its child the program, init of its namespace,
            // in a session of its own (it may also have cleared its death
            // signal): killing it kills everything in the namespace. While
            // the shim lives, its child's pid is not reused.
            let leader = pid.as_raw_nonzero().get();
            if let Ok(list) =
                std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children"))
            {
                for child in list
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok())
                {
                    if let Some(child) = rustix::process::Pid::from_raw(child) {
                        let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
                    }
                }
            }
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
    /// Reads `r` to its end, keeping the tail: in large reads, and at most
    /// [`STDERR_RATE`] bytes a second — past it the reading pauses, the
    /// pipe fills and the program's writes wait, so a flood costs the
    /// program its time rather than the server a core.
    async fn collect(self, mut r: tokio::process::ChildStderr) {
        let mut buf = vec![0u8; 64 << 10];
        let mut window = tokio::time::Instant::now();
        let mut spent = 0usize;
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            {
                let keep = &buf[n.saturating_sub(STDERR_TAIL)..n];
                let mut tail = self.0.lock().unwrap_or_else(|p| p.into_inner());
                tail.extend(keep);
                let over = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..over);
            }
            let second = std::time::Duration::from_secs(1);
            if window.elapsed() >= second {
                window = tokio::time::Instant::now();
                spent = 0;
            }
            spent += n;
            if spent >= STDERR_RATE {
                tokio::time::sleep_until(window + second).await;
                window = tokio::time::Instant::now();
                spent = 0;
            }
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
    use toolplane_tool::files::executable;
    if name.contains('/') {
        let p = PathBuf::from(name);
        // A path relative to the manifest stays beneath it: `../` names
        // whatever lies around the tools directory.
        if p.is_relative() && p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(ProcessLoadError::Program {
                program: name.into(),
                why: "a relative path may not leave the manifest's directory (`..`): name the program by an absolute path".into(),
            });
        }
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        if !executable(&p) {
            return Err(ProcessLoadError::NoProgram {
                program: name.into(),
                looked: p.display().to_string(),
            });
        }
        // A program others can replace runs their code: as the tools
        // directory's files, it must be this user's (or root's) alone.
        if let (Some(b), Ok(meta)) = (base, p.metadata())
            && toolplane_tool::files::covers(b, &p)
            && let Some(why) = toolplane_tool::files::others_can_write(&meta)
        {
            return Err(ProcessLoadError::Program {
                program: name.into(),
                why: format!(
                    "{}: {why}: it is what the server runs, so it must be writable by this user (or root) alone (chmod go-w)",
                    p.display()
                ),
            });
        }
        return Ok(p);
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
