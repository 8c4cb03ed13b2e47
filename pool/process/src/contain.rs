//! What keeps a tool's processes from the server and from outliving it,
//! beyond Landlock's file rules (`spawn.rs`): namespaces, capabilities and
//! the parent-death signal, set up in the child between `fork` and `exec`.
//!
//! Every process a tool starts runs:
//! - **in a PID namespace of its own, as its init** (PID 1): when the
//!   program ends, or is killed, the kernel kills everything it left in
//!   the namespace — double-forked, `setsid`, `setpgid` children alike — and
//!   the server's processes are not there to be seen or signalled. The
//!   forked child that made the namespace stays outside as a *shim*: it
//!   waits for the program and ends as it ended, so the pool sees the
//!   program's status; both carry `SIGKILL` as their parent-death signal
//!   (the shim's parent is the process host's thread, the program's the
//!   shim), so a `SIGKILL` of the server takes the whole namespace with it.
//! - **in a mount namespace of its own**, with a `/proc` of its PID
//!   namespace (the server's `/proc/<pid>` — environ, cmdline, mem, fds —
//!   is not there), the tools directory bound read-only (a tool cannot
//!   write a manifest the registry would load) and the module cache
//!   covered by an empty private tmpfs (its MAC key is not there; a
//!   program that caches there, another toolplane, caches in memory).
//! - **in a network namespace of its own** (only a loopback interface, its
//!   own), unless its manifest says `network = "host"`: no network, and
//!   not the server's port.
//! - **with no capabilities**, even when the server runs as root: the
//!   bounding, ambient and inheritable sets emptied, so an `exec` gives
//!   none back, and `no_new_privs` set (a setuid program gains nothing).
//!
//! The server itself is made non-dumpable when it starts its first
//! process tool, so its `/proc/<pid>` entries (environ, mem, fds) are
//! readable only with `CAP_SYS_PTRACE`, which no tool has.
//!
//! Namespaces need root or unprivileged user namespaces (then a user
//! namespace maps the server's own user). Where the kernel refuses them,
//! [`available`] says why, once, and tools run without them: capabilities
//! are still dropped and the server is still non-dumpable, but a process
//! left behind by a program that escaped its process group (`setsid`)
//! can outlive a `SIGKILL` of the server, and the network and the
//! server's `/proc/<pid>/cmdline` are reachable.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// What a tool's processes are started in, prepared before the fork (the
/// child may not allocate).
pub(crate) struct Contain {
    namespaces: Option<Namespaces>,
}

struct Namespaces {
    /// A network namespace of its own.
    net: bool,
    /// When the server is not root: a user namespace, with these lines for
    /// `uid_map` and `gid_map` (the server's own ids).
    user: Option<(Vec<u8>, Vec<u8>)>,
    /// Bound read-only over themselves, each with its mount's flags
    /// (`mount_flags`).
    read_only: Vec<(CString, libc::c_ulong)>,
    /// Covered by an empty private tmpfs (64 MiB at most).
    hidden: Vec<CString>,
    /// `Some` for a narrowed tool (`[permissions]`): `/run` is covered by
    /// an empty tmpfs, and these directories under it bound back (its
    /// grants there, and with the host's network the resolver's
    /// configuration), each with the directories to make for it
    /// (outermost first).
    run: Option<Vec<Keep>>,
    /// Every mount at or under `/sys` (cgroup file systems among them),
    /// with its flags: remounted read-only, so a program running as root
    /// (with no capabilities, but owning those files) cannot move itself
    /// out of its cgroup, change another's limits, or write the kernel's
    /// knobs there.
    sys: Vec<(CString, libc::c_ulong)>,
}

/// Parts of `/proc` that are the kernel's knobs rather than processes':
/// bound read-only over themselves in the program's own `/proc` (as
/// container runtimes do). `kernel.core_pattern` alone would run a
/// program as root outside every namespace.
const PROC_KNOBS: [&std::ffi::CStr; 4] = [
    c"/proc/sys",
    c"/proc/sysrq-trigger",
    c"/proc/irq",
    c"/proc/bus",
];

/// The mount points at or under `/sys`, from `/proc/self/mountinfo`,
/// outermost first.
fn sys_mounts() -> Vec<(CString, libc::c_ulong)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(super::cgroup::unescape)
        .filter(|p| Path::new(p).starts_with("/sys"))
        .filter_map(|p| CString::new(p).ok())
        .map(|c| {
            let flags = mount_flags(&c);
            (c, flags)
        })
        .collect()
}

/// Directories under `/run` a narrowed process may keep at most.
pub(crate) const MAX_RUN_KEEP: usize = 16;

/// The resolver's configuration (`/etc/resolv.conf`, which links under
/// `/run` with systemd-resolved): the file alone is bound back, not its
/// directory (resolved's sockets are there).
pub(crate) fn dns_file() -> Option<std::path::PathBuf> {
    Path::new("/etc/resolv.conf").canonicalize().ok()
}

/// A directory or file under `/run` bound back over the empty `/run`.
struct Keep {
    path: CString,
    /// The directories to make for it, outermost first (a directory's
    /// own last).
    make: Vec<CString>,
    file: bool,
}

/// `p` if it lies under `/run`, as a [`Keep`].
fn under_run(p: &Path) -> Option<Keep> {
    let file = !p.is_dir();
    let below = p.strip_prefix("/run").ok()?;
    let below = if file { below.parent()? } else { below };
    let mut path = std::path::PathBuf::from("/run");
    let mut make = Vec::new();
    for part in below.components() {
        path.push(part);
        make.push(cstring(&path)?);
    }
    Some(Keep {
        path: cstring(p)?,
        make,
        file,
    })
}

/// Whether namespaces can be made here: `Ok` or why not (probed once, by
/// starting `true` in them).
pub(crate) fn available() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let probe = Contain::with_namespaces(true, &[], &[]);
        let mut cmd = std::process::Command::new("true");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: `enter` only makes system calls on data prepared before
        // the fork (see its own comment).
        unsafe {
            cmd.pre_exec(move || probe.enter());
        }
        let why = match cmd.status() {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => format!("a probe in them ended {s}"),
            Err(e) => e.to_string(),
        };
        let why = format!(
            "the kernel refused PID, mount and network namespaces ({why}): process tools run without them; processes a program moves out of its group can outlive the server, and the network and the server's /proc/<pid>/cmdline stay reachable"
        );
        tracing::warn!("{why}");
        Err(why)
    })
}

/// Makes this process non-dumpable (once): its `/proc/<pid>` entries are
/// then root's, and readable only with `CAP_SYS_PTRACE`.
pub(crate) fn harden_server() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // The probe first: a non-dumpable process's /proc/self files are
        // root's, which a user namespace of a non-root server cannot map,
        // so its uid_map could not be written. The child is made dumpable
        // again where it writes them (`Namespaces::enter`).
        let _ = available();
        #[allow(unsafe_code)]
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(
                "cannot make the server non-dumpable: {}",
                io::Error::last_os_error()
            );
        }
    });
}

/// The flags of the mount `dir` lies on that a read-only remount must
/// repeat: in a user namespace (a non-root server) the kernel locks them,
/// and a remount that would clear one fails.
fn mount_flags(dir: &std::ffi::CStr) -> libc::c_ulong {
    #[allow(unsafe_code)]
    // SAFETY: statvfs writes the struct it is given; a NUL-terminated path.
    let flag = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(dir.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_flag
    };
    [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| flag & *st != 0)
    .fold(0, |acc, (_, ms)| acc | ms)
}

fn cstring(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

impl Contain {
    /// The containment of a tool's processes: namespaces when the kernel
    /// has them (a network one unless `host_net`), `read_only` bound
    /// read-only and `hidden` covered (those that are directories now).
    /// `narrowed`: the tool's Landlock grants, when it has
    /// `[permissions]` (`/run` is then covered but for those beneath it).
    pub(crate) fn new(
        host_net: bool,
        read_only: &[&Path],
        hidden: &[&Path],
        narrowed: Option<&[&Path]>,
    ) -> Contain {
        match available() {
            Ok(()) => {
                let mut c = Contain::with_namespaces(!host_net, read_only, hidden);
                // A grant of /run (or above it) keeps it whole.
                let narrowed =
                    narrowed.filter(|g| !g.iter().any(|g| Path::new("/run").starts_with(g)));
                if let (Some(ns), Some(grants)) = (&mut c.namespaces, narrowed) {
                    let dns = host_net.then(dns_file).flatten();
                    let mut keep: Vec<_> = dns
                        .into_iter()
                        .chain(grants.iter().map(|p| p.to_path_buf()))
                        .filter(|p| p.starts_with("/run"))
                        .collect();
                    if keep.len() > MAX_RUN_KEEP {
                        tracing::warn!(
                            "{} directories under /run to keep for a process tool, {MAX_RUN_KEEP} at most: {} are not",
                            keep.len(),
                            keep[MAX_RUN_KEEP..]
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        keep.truncate(MAX_RUN_KEEP);
                    }
                    // What is hidden stays hidden where it is bound back.
                    ns.hidden.retain(|d| {
                        let d = Path::new(std::ffi::OsStr::from_bytes(d.as_bytes()));
                        !d.starts_with("/run") || keep.iter().any(|k| d.starts_with(k))
                    });
                    ns.run = Some(keep.iter().filter_map(|p| under_run(p)).collect());
                }
                c
            }
            Err(_) => Contain { namespaces: None },
        }
    }

    fn with_namespaces(net: bool, read_only: &[&Path], hidden: &[&Path]) -> Contain {
        let dirs = |list: &[&Path]| -> Vec<CString> {
            list.iter()
                .filter(|p| p.is_dir())
                .filter_map(|p| cstring(&p.canonicalize().unwrap_or_else(|_| p.to_path_buf())))
                .collect()
        };
        // SAFETY: geteuid and getegid have no preconditions.
        #[allow(unsafe_code)]
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let user = (uid != 0).then(|| {
            (
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            )
        });
        Contain {
            namespaces: Some(Namespaces {
                net,
                user,
                read_only: dirs(read_only)
                    .into_iter()
                    .map(|d| {
                        let flags = mount_flags(&d);
                        (d, flags)
                    })
                    .collect(),
                hidden: dirs(hidden),
                run: None,
                sys: sys_mounts(),
            }),
        }
    }

    /// In words, for `tools list`.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.namespaces {
            Some(ns) if ns.net => {
                "own PID, mount and network namespaces (no network); no capabilities"
            }
            Some(_) => "own PID and mount namespaces, the host's network; no capabilities",
            None => "no namespaces (the kernel refused them); no capabilities",
        }
    }

    /// Run in the child between `fork` and `exec`: enters the namespaces
    /// (forking the program's process, which returns, while this one stays
    /// as its shim and never returns), then drops every capability. Only
    /// system calls on data prepared before the fork: nothing allocates or
    /// takes a lock. Landlock and rlimits are the caller's, after this.
    pub(crate) fn enter(&self) -> io::Result<()> {
        death_signal()?;
        if let Some(ns) = &self.namespaces {
            ns.enter()?;
        }
        Ok(())
    }

    /// Whether the child mounts a `/proc` of its own.
    pub(crate) fn own_proc(&self) -> bool {
        self.namespaces.is_some()
    }

    /// Drops every capability and sets `no_new_privs`; last before exec.
    pub(crate) fn drop_privileges(&self) -> io::Result<()> {
        drop_capabilities()
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn death_signal() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

/// Writes `bytes` to the file `path` (a /proc knob).
fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated path and a buffer of the given length; the
    // descriptor is closed on every path.
    unsafe {
        let fd = check(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != bytes.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

impl Namespaces {
    fn enter(&self) -> io::Result<()> {
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
        if self.net {
            flags |= libc::CLONE_NEWNET;
        }
        if self.user.is_some() {
            flags |= libc::CLONE_NEWUSER;
        }
        #[allow(unsafe_code)]
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(flags) })?;
        if let Some((uid_map, gid_map)) = &self.user {
            // The server is non-dumpable, so this fork's /proc/self is
            // root's: dumpable again to write its own maps (runc does the
            // same); exec makes the program dumpable anyway.
            #[allow(unsafe_code)]
            // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
            check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })?;
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", uid_map)?;
            write_file(c"/proc/self/gid_map", gid_map)?;
        }
        let null = std::ptr::null::<libc::c_char>();
        #[allow(unsafe_code)]
        // SAFETY: mount with a NUL-terminated target and null strings where
        // the kernel takes none: our mounts stay in this namespace.
        check(unsafe {
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        #[allow(unsafe_code)]
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        #[allow(unsafe_code)]
        // SAFETY: this process is single-threaded (a fork's child), so the
        // fork's child may go on as freely as this process could.
        let pid = check(unsafe { libc::fork() })?;
        if pid > 0 {
            shim(pid, parent);
        }
        // The program's process: PID 1 of the new namespace, in a session
        // of its own (no controlling terminal to type into).
        death_signal()?;
        #[allow(unsafe_code)]
        // SAFETY: setsid has no preconditions.
        check(unsafe { libc::setsid() })?;
        #[allow(unsafe_code)]
        // SAFETY: mount with NUL-terminated strings; see above.
        unsafe {
            check(libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            // The kernel's knobs read-only. In a user namespace (a server
            // not running as root) the program cannot write them anyway,
            // and a mount the kernel keeps locked there may refuse.
            let knob = |rc: libc::c_int| match check(rc) {
                Err(_) if self.user.is_some() => Ok(0),
                other => other,
            };
            for (dir, flags) in &self.sys {
                knob(remount_read_only(dir, *flags))?;
            }
            for knob_path in PROC_KNOBS {
                if libc::mount(
                    knob_path.as_ptr(),
                    knob_path.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    // Not every kernel has each of them.
                    continue;
                }
                knob(remount_read_only(knob_path, libc::MS_NOEXEC))?;
            }
            for (dir, flags) in &self.read_only {
                check(libc::mount(
                    dir.as_ptr(),
                    dir.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(remount_read_only(dir, *flags))?;
            }
            // Sockets by path reach past every namespace (systemd's
            // private socket, D-Bus, docker.sock: commands run as root
            // outside): for a narrowed program /run is an empty tmpfs,
            // but for what it keeps (its grants there, the resolver's
            // configuration with the host's network), bound back through
            // descriptors opened before /run was covered.
            if let Some(keep) = &self.run {
                let mut fds = [-1; MAX_RUN_KEEP];
                for (fd, k) in fds.iter_mut().zip(keep) {
                    // One gone since the load is not bound back (-1).
                    let dir = if k.file { 0 } else { libc::O_DIRECTORY };
                    *fd = libc::open(k.path.as_ptr(), libc::O_PATH | dir | libc::O_CLOEXEC);
                }
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"size=1m,mode=0755".as_ptr().cast(),
                ))?;
                for (fd, k) in fds.iter().zip(keep) {
                    if *fd < 0 {
                        continue;
                    }
                    for dir in &k.make {
                        if libc::mkdir(dir.as_ptr(), 0o755) != 0
                            && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    if k.file {
                        // A file to mount it over.
                        libc::close(check(libc::open(
                            k.path.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        ))?);
                    }
                    let from = FdPath::new(*fd);
                    if k.file || !k.make.is_empty() {
                        check(libc::mount(
                            from.as_ptr(),
                            k.path.as_ptr(),
                            null,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ))?;
                    }
                    libc::close(*fd);
                }
            }
            for dir in &self.hidden {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    // Not noexec: a cache holds code that is mapped to run.
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"size=64m,mode=0700".as_ptr().cast(),
                ))?;
            }
        }
        if self.net {
            loopback_up()?;
        }
        Ok(())
    }
}

/// Makes the mount at `path` read-only, no setuid, no devices, with
/// `flags` besides (the mount's own, which a user namespace locks); the
/// raw return code.
fn remount_read_only(path: &std::ffi::CStr, flags: libc::c_ulong) -> libc::c_int {
    #[allow(unsafe_code)]
    // SAFETY: mount with a NUL-terminated target and null strings where
    // the kernel takes none; it changes this namespace's mount only.
    unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | flags,
            std::ptr::null(),
        )
    }
}

/// `/proc/self/fd/<fd>` without allocating (between fork and exec).
struct FdPath([u8; 32]);

impl FdPath {
    fn new(fd: libc::c_int) -> FdPath {
        let mut buf = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let mut n = fd.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[prefix.len() + i] = digits[len - 1 - i];
        }
        FdPath(buf)
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.0.as_ptr().cast()
    }
}

/// The shim: closes every descriptor (the pipes are the program's, and
/// the spawner waits for its status pipe to close), waits for the program
/// and ends as it did. Never returns.
fn shim(pid: libc::pid_t, parent: libc::pid_t) -> ! {
    #[allow(unsafe_code)]
    // SAFETY: system calls on integers, a static atomic and local
    // structs; the handler only loads an atomic and makes system calls;
    // `_exit` ends the process without running anything of the parent's.
    unsafe {
        // When the server dies, or the pool stops this process, the
        // program (init of its namespace, which may have cleared its own
        // death signal and left the group) is killed first, and with it
        // the namespace.
        PROGRAM.store(pid, std::sync::atomic::Ordering::Relaxed);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = kill_program as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
        let mut unblock: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut unblock);
        libc::sigaddset(&mut unblock, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        // The server died before the death signal was set.
        if libc::getppid() != parent {
            kill_program(0);
        }
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) < 0 {
            for fd in 0..65536 {
                libc::close(fd);
            }
        }
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(127)
    }
}

/// The shim's program (in its own copy of this static).
static PROGRAM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The shim's handler: kills the program (and so its namespace), ends.
extern "C" fn kill_program(_: libc::c_int) {
    #[allow(unsafe_code)]
    // SAFETY: kill and _exit are async-signal-safe.
    unsafe {
        let pid = PROGRAM.load(std::sync::atomic::Ordering::Relaxed);
        if pid > 0 {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::_exit(128 + libc::SIGKILL);
    }
}

/// Brings up the new network namespace's loopback interface (programs
/// that talk to themselves over 127.0.0.1 expect one).
fn loopback_up() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed ifreq is valid; the name fits its 16 bytes; the
    // socket is closed on every path.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The capability header and data of capset(2), version 3.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn drop_capabilities() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: prctl and capset on integers and local structs of the
    // kernel's layout.
    unsafe {
        // Every capability out of the bounding set (an exec by root would
        // otherwise get them back); the kernel says EINVAL past its last.
        // No supplementary groups (a docker group's socket, say): needs
        // CAP_SETGID, which a root server has; elsewhere there is nothing
        // to drop that the server's user could not do anyway.
        if libc::setgroups(0, std::ptr::null()) < 0 && *libc::__errno_location() != libc::EPERM {
            return Err(io::Error::last_os_error());
        }
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Past the kernel's last capability.
                    Some(libc::EINVAL) => break,
                    // No CAP_SETPCAP: a process without capabilities, whose
                    // exec gains none (no_new_privs below).
                    Some(libc::EPERM) => break,
                    _ => return Err(e),
                }
            }
        }
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_path_is_written_without_allocating() {
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1024, "/proc/self/fd/1024"),
        ] {
            let p = FdPath::new(fd);
            // SAFETY: FdPath's buffer ends with NUL bytes.
            #[allow(unsafe_code)]
            let got = unsafe { std::ffi::CStr::from_ptr(p.as_ptr()) };
            assert_eq!(got.to_str().unwrap(), want);
        }
    }

    #[test]
    fn a_read_only_remount_repeats_the_flags_of_the_mount() {
        // The root file system here is mounted relatime (the default);
        // /dev/shm nosuid and nodev, where it is its own tmpfs.
        let root = mount_flags(c"/");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let opts = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .and_then(|l| l.split(' ').nth(5))
            .unwrap()
            .to_string();
        assert_eq!(
            root & libc::MS_RELATIME != 0,
            opts.split(',').any(|o| o == "relatime"),
            "{opts}"
        );
        assert_eq!(
            root & libc::MS_NOEXEC != 0,
            opts.split(',').any(|o| o == "noexec")
        );
        assert_eq!(mount_flags(c"/no/such/dir"), 0);
    }

    #[test]
    fn only_directories_under_run_are_kept_with_the_ones_to_make() {
        assert!(under_run(Path::new("/var/run2")).is_none());
        assert!(under_run(Path::new("/runner")).is_none());
        // Not there: taken for a file, its directories made for it.
        let k = under_run(Path::new("/run/no-such-dir/resolve/stub.conf")).unwrap();
        assert_eq!(
            k.path.to_str().unwrap(),
            "/run/no-such-dir/resolve/stub.conf"
        );
        assert!(k.file);
        let make: Vec<&str> = k.make.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(make, ["/run/no-such-dir", "/run/no-such-dir/resolve"]);
        if Path::new("/run/lock").is_dir() {
            let k = under_run(Path::new("/run/lock")).unwrap();
            assert!(!k.file);
            assert_eq!(k.make.len(), 1);
        }
    }
}
