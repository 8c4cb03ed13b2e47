//! A process-count and a memory limit for every process a tool starts,
//! with everything it starts in turn: a control group of its own, made
//! before the fork and joined by the child before it runs anything, so
//! no descendant escapes it (`fork`, `setsid` and double forks stay in
//! their group).
//!
//! - **cgroup v2**, where the server's own group hands the `memory` and
//!   `pids` controllers to groups beneath it (the server runs in the root
//!   group, or in a group delegated to it, e.g. systemd's `Delegate=yes`:
//!   when it is the only process there it moves itself into a leaf
//!   `toolplane-…-server` so its group may hand them down):
//!   `pids.max`, `memory.max` and `memory.swap.max = 0`.
//! - **cgroup v1**, where the `pids` and `memory` hierarchies are mounted
//!   and the server may make groups in them: `pids.max`,
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, so swap
//!   does not extend it).
//! - **Neither** (no cgroup file system, or the server may not write it,
//!   as a non-root server without delegation): the memory limit is each
//!   process's `RLIMIT_DATA` (what it allocates, not what it reserves:
//!   Node and the JVM reserve far more address space than they use), and
//!   there is **no process-count limit**: `RLIMIT_NPROC` counts every
//!   process of the server's user and does not bind root. [`available`]
//!   says why, once.
//!
//! When a process ends, its group says whether it hit a limit (the
//! kernel's `oom_kill` and `pids.events` counters), and its error names
//! the limit; then whatever is left in the group is killed and the group
//! removed. Groups live under `toolplane-<pid namespace>-<pid>-<start
//! time>` beside the server's own group; those of servers of the same PID
//! namespace that are gone are removed at start.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The limits of one process (with its descendants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Processes and threads at once.
    pub(crate) processes: u64,
    /// Bytes of memory (resident and page cache, with cgroups).
    pub(crate) memory: u64,
    /// Whether the manifest set `memory` (else it is the default).
    pub(crate) memory_set: bool,
}

/// `RLIMIT_DATA` where there are no cgroups and the manifest sets no
/// `limits.memory`: it counts what a program maps writable, used or not,
/// and runtimes reserve that way (wasmtime's stack pool maps 1.1 GiB up
/// front; the default 1 GiB is a cgroup's, of memory in use).
pub(crate) const FALLBACK_DATA: u64 = 8 << 30;

impl Limits {
    /// Each process's `RLIMIT_DATA` where there are no cgroups.
    pub(crate) fn data(&self) -> u64 {
        if self.memory_set {
            self.memory
        } else {
            FALLBACK_DATA
        }
    }
}

/// A hierarchy groups are made in.
#[derive(Debug)]
struct Base {
    /// `toolplane-<pid>`: every group of this server lies beneath.
    dir: PathBuf,
    v2: bool,
    pids: bool,
    memory: bool,
}

/// Where this server makes groups: the hierarchies, or why none.
fn tree() -> &'static Result<Vec<Base>, String> {
    static TREE: OnceLock<Result<Vec<Base>, String>> = OnceLock::new();
    TREE.get_or_init(|| {
        let found = find();
        if let Err(why) = &found {
            tracing::warn!(
                "no cgroups for process tools ({why}): limits.memory is each process's RLIMIT_DATA (8 GiB unless a manifest sets it), and there is no process-count limit"
            );
        }
        found
    })
}

/// The mount points of cgroup file systems: (`cgroup2`, path) or
/// (`cgroup`, path, its controllers), from `/proc/self/mountinfo`.
fn mounts(info: &str) -> Vec<(bool, PathBuf, String)> {
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let theirs: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) =
            (fields.get(3), fields.get(4), theirs.first())
        else {
            continue;
        };
        // A bind of a part of a hierarchy: its paths do not start at the
        // hierarchy's root, and ours would not be found beneath it.
        if *root != "/" {
            continue;
        }
        let opts = theirs.get(2).copied().unwrap_or("").to_string();
        match *fstype {
            "cgroup2" => out.push((true, PathBuf::from(unescape(point)), String::new())),
            "cgroup" => out.push((false, PathBuf::from(unescape(point)), opts)),
            _ => {}
        }
    }
    out
}

/// mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's group in each hierarchy, from `/proc/self/cgroup`:
/// ("" for v2, or the v1 controllers, path).
fn own_groups(cgroup: &str) -> Vec<(String, String)> {
    cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let ctls = parts.next()?;
            let path = parts.next()?;
            Some((ctls.to_string(), path.to_string()))
        })
        .collect()
}

fn find() -> Result<Vec<Base>, String> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mounts = mounts(&info);
    let own = own_groups(&own);
    let me = Me::now();
    let mut why = Vec::new();
    // v2 first: one group holds both limits.
    if let Some((_, point, _)) = mounts.iter().find(|(v2, _, _)| *v2)
        && let Some((_, path)) = own.iter().find(|(c, _)| c.is_empty())
    {
        let group = point.join(path.trim_start_matches('/'));
        match v2_base(&group, &me) {
            Ok(dir) => {
                return Ok(vec![Base {
                    dir,
                    v2: true,
                    pids: true,
                    memory: true,
                }]);
            }
            Err(e) => why.push(format!("cgroup v2 at {}: {e}", group.display())),
        }
    }
    let mut bases = Vec::new();
    for ctl in ["pids", "memory"] {
        let mount = mounts
            .iter()
            .find(|(v2, _, opts)| !v2 && opts.split(',').any(|o| o == ctl));
        let path = own
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == ctl))
            .map(|(_, p)| p);
        let (Some((_, point, _)), Some(path)) = (mount, path) else {
            why.push(format!("cgroup v1: no {ctl} hierarchy"));
            continue;
        };
        let group = point.join(path.trim_start_matches('/'));
        let dir = group.join(me.name(""));
        sweep(&group, &me);
        match make_dir(&dir) {
            Ok(()) => bases.push(Base {
                dir,
                v2: false,
                pids: ctl == "pids",
                memory: ctl == "memory",
            }),
            Err(e) => why.push(format!("cgroup v1 {ctl}: {}: {e}", dir.display())),
        }
    }
    if bases.len() == 2 {
        return Ok(bases);
    }
    for b in &bases {
        let _ = fs::remove_dir(&b.dir);
    }
    Err(why.join("; "))
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Prepares `group` (the server's v2 group) to hand `memory` and `pids`
/// to groups beneath it; the directory those are made in.
fn v2_base(group: &Path, me: &Me) -> io::Result<PathBuf> {
    let has = |file: &str| -> io::Result<bool> {
        let text = fs::read_to_string(group.join(file))?;
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(words.contains(&"memory") && words.contains(&"pids"))
    };
    if !has("cgroup.controllers")? {
        return Err(io::Error::other(
            "its group is not given the memory and pids controllers",
        ));
    }
    sweep(group, me);
    if !has("cgroup.subtree_control")? {
        let enable = || fs::write(group.join("cgroup.subtree_control"), "+memory +pids");
        if let Err(e) = enable() {
            // A group with processes may not hand controllers down; when
            // the server is its only process, it moves to a leaf.
            let procs = fs::read_to_string(group.join("cgroup.procs"))?;
            let mine = procs.split_whitespace().all(|p| p == me.pid.to_string());
            if e.raw_os_error() != Some(libc::EBUSY) || !mine {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot hand memory and pids down (other processes share the group): {e}"
                    ),
                ));
            }
            let leaf = group.join(me.name("-server"));
            make_dir(&leaf)?;
            fs::write(leaf.join("cgroup.procs"), me.pid.to_string())?;
            enable()?;
        }
    }
    let dir = group.join(me.name(""));
    make_dir(&dir)?;
    fs::write(dir.join("cgroup.subtree_control"), "+memory +pids")?;
    Ok(dir)
}

/// This server, as its groups are named: `toolplane-<pid namespace>-
/// <pid>-<start time>`, so servers in other PID namespaces (containers)
/// never share a name, and a group whose server is gone is known to be
/// gone (the same pid, started again, is another server).
struct Me {
    ns: u64,
    pid: u32,
    start: u64,
}

impl Me {
    fn now() -> Me {
        use std::os::unix::fs::MetadataExt;
        let pid = std::process::id();
        Me {
            ns: fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino()),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("toolplane-{}-{}-{}{suffix}", self.ns, self.pid, self.start)
    }
}

/// When `pid` started (clock ticks after boot), from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (in parentheses): state is the 3rd field,
    // start time the 22nd.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Removes the groups of servers of this PID namespace that are gone (no
/// such process, a zombie, or another process with that pid), and
/// everything beneath them. Groups of other PID namespaces are left: their
/// servers cannot be seen from here.
fn sweep(group: &Path, me: &Me) {
    let Ok(list) = fs::read_dir(group) else {
        return;
    };
    for e in list.flatten() {
        let name = e.file_name();
        let Some(parts) = name
            .to_str()
            .and_then(|n| n.strip_prefix("toolplane-"))
            .map(|p| p.strip_suffix("-server").unwrap_or(p))
        else {
            continue;
        };
        let mut it = parts.split('-').map(str::parse::<u64>);
        let (Some(Ok(ns)), Some(Ok(pid)), Some(Ok(start)), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        if ns != me.ns || (alive(pid) && start_time(pid) == Some(start)) {
            continue;
        }
        if let Ok(children) = fs::read_dir(e.path()) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        let _ = fs::remove_dir(e.path());
    }
}

/// Whether `pid` runs (a zombie, killed and not yet reaped, does not).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Groups whose removal failed (a process not yet gone): retried when the
/// next group is made.
static LEFT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One process's group: made before its fork, joined by the child,
/// emptied and removed when dropped.
pub(crate) struct Group {
    dirs: Vec<(PathBuf, &'static Base)>,
    /// `cgroup.procs` of each, open for the child to write.
    procs: Vec<OwnedFd>,
    limits: Limits,
}

impl Group {
    /// A group with `limits`, or `None` where there are no cgroups.
    pub(crate) fn new(limits: Limits) -> io::Result<Option<Group>> {
        let Ok(bases) = tree() else { return Ok(None) };
        {
            let mut left = LEFT.lock().unwrap_or_else(|p| p.into_inner());
            left.retain(|d| fs::remove_dir(d).is_err() && d.exists());
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut g = Group {
            dirs: Vec::with_capacity(bases.len()),
            procs: Vec::with_capacity(bases.len()),
            limits,
        };
        for base in bases {
            let dir = base.dir.join(format!("p{n}"));
            let made = fs::create_dir(&dir).or_else(|e| {
                // Its server's directory removed from outside: made again.
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
                make_dir(&base.dir)?;
                if base.v2 {
                    fs::write(base.dir.join("cgroup.subtree_control"), "+memory +pids")?;
                }
                fs::create_dir(&dir)
            });
            made.map_err(|e| io::Error::new(e.kind(), format!("cgroup {}: {e}", dir.display())))?;
            g.dirs.push((dir.clone(), base));
            let set = |file: &str, v: &str| {
                fs::write(dir.join(file), v).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display()))
                })
            };
            if base.pids {
                set("pids.max", &limits.processes.to_string())?;
            }
            if base.memory {
                let bytes = limits.memory.to_string();
                if base.v2 {
                    set("memory.max", &bytes)?;
                    // Swap would stretch the limit; not every kernel has it.
                    let _ = set("memory.swap.max", "0");
                } else {
                    set("memory.limit_in_bytes", &bytes)?;
                    let _ = set("memory.memsw.limit_in_bytes", &bytes);
                }
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            g.procs.push(f.into());
        }
        Ok(Some(g))
    }

    /// Moves the calling process into the group: in the child between
    /// `fork` and `exec`, before it starts anything (a system call on a
    /// descriptor opened before the fork; nothing allocates).
    pub(crate) fn join(&self) -> io::Result<()> {
        for fd in &self.procs {
            // "0" is the writer itself.
            #[allow(unsafe_code)]
            // SAFETY: a write of a static byte to a descriptor we own.
            let rc = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Which limit its processes reached, in words, if any.
    pub(crate) fn hit(&self) -> Option<String> {
        let count = |dir: &Path, file: &str, key: &str| -> u64 {
            fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        };
        let mut said = Vec::new();
        for (dir, base) in &self.dirs {
            if base.memory {
                let file = if base.v2 {
                    "memory.events"
                } else {
                    "memory.oom_control"
                };
                let n = count(dir, file, "oom_kill");
                if n > 0 {
                    said.push(format!(
                        "it reached its memory limit (limits.memory = {}): the kernel killed {n} of its processes",
                        toolplane_units::fmt_size(self.limits.memory)
                    ));
                }
            }
            if base.pids {
                let n = count(dir, "pids.events", "max");
                if n > 0 {
                    said.push(format!(
                        "it reached its process limit (limits.processes = {}, threads included): {n} forks failed",
                        self.limits.processes
                    ));
                }
            }
        }
        (!said.is_empty()).then(|| said.join("; "))
    }

    /// Kills whatever is left in the group.
    fn kill(&self) {
        for (dir, base) in &self.dirs {
            if base.v2 && fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                continue;
            }
            // v1 (or a v2 kernel before 5.14): each process by its pid; a
            // process forked meanwhile is caught by a second pass.
            for _ in 0..2 {
                let Ok(list) = fs::read_to_string(dir.join("cgroup.procs")) else {
                    break;
                };
                for pid in list
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        for (dir, _) in &self.dirs {
            if fs::remove_dir(dir).is_err() && dir.exists() {
                LEFT.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(dir.clone());
            }
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

/// In words, for `tools list`: how `limits` are held here.
pub(crate) fn describe(limits: Limits) -> String {
    let memory = toolplane_units::fmt_size(limits.memory);
    match tree() {
        Ok(bases) => format!(
            "memory {memory}, {} processes and threads (cgroup {})",
            limits.processes,
            if bases.first().is_some_and(|b| b.v2) {
                "v2"
            } else {
                "v1"
            }
        ),
        Err(_) => format!(
            "memory {} per process (RLIMIT_DATA, no cgroups here{}), no process-count limit",
            toolplane_units::fmt_size(limits.data()),
            if limits.memory_set {
                ""
            } else {
                ": what it maps writable, used or not; the default limits.memory needs cgroups"
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_are_read_from_mountinfo() {
        let info = "\
35 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
36 25 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 25 0:33 /sub /mnt/part rw - cgroup cgroup rw,cpu
39 25 0:34 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
40 25 8:1 / / rw - ext4 /dev/sda1 rw";
        let m = mounts(info);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0],
            (true, PathBuf::from("/sys/fs/cgroup/unified"), String::new())
        );
        assert_eq!(m[1].1, PathBuf::from("/sys/fs/cgroup/pids"));
        assert!(m[1].2.split(',').any(|o| o == "pids"));
        assert_eq!(m[3].1, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn a_group_is_made_with_its_limits_and_removed_when_dropped() {
        let limits = Limits {
            processes: 7,
            memory: 32 << 20,
            memory_set: true,
        };
        let Ok(bases) = tree() else {
            // No cgroups here: no group, and the limits say how they are held.
            assert!(Group::new(limits).unwrap().is_none());
            assert!(describe(limits).contains("no process-count limit"));
            return;
        };
        let g = Group::new(limits).unwrap().expect("a group");
        assert_eq!(g.dirs.len(), bases.len());
        for (dir, base) in &g.dirs {
            assert!(dir.is_dir(), "{}", dir.display());
            if base.pids {
                assert_eq!(
                    fs::read_to_string(dir.join("pids.max")).unwrap().trim(),
                    "7"
                );
            }
            if base.memory && !base.v2 {
                let set = fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
                assert_eq!(set.trim(), (32u64 << 20).to_string());
            }
        }
        assert_eq!(g.hit(), None);
        let dirs: Vec<PathBuf> = g.dirs.iter().map(|(d, _)| d.clone()).collect();
        drop(g);
        for d in dirs {
            assert!(!d.exists(), "{} is left", d.display());
        }
    }

    #[test]
    fn without_cgroups_the_default_memory_is_a_roomier_data_limit() {
        let set = Limits {
            processes: 1,
            memory: 64 << 20,
            memory_set: true,
        };
        assert_eq!(set.data(), 64 << 20);
        let default = Limits {
            memory_set: false,
            ..set
        };
        assert_eq!(default.data(), FALLBACK_DATA);
    }

    #[test]
    fn the_sweep_removes_groups_of_gone_servers_of_this_namespace_only() {
        let Ok(bases) = tree() else {
            return assert!(
                Group::new(Limits {
                    processes: 1,
                    memory: 1 << 20,
                    memory_set: true
                })
                .unwrap()
                .is_none()
            );
        };
        let parent = bases[0].dir.parent().unwrap();
        let me = Me::now();
        // This pid, started at another time: a server gone; and one of
        // another PID namespace, which cannot be seen from here.
        let gone = parent.join(format!("toolplane-{}-{}-{}", me.ns, me.pid, me.start + 1));
        let other = parent.join(format!("toolplane-{}-{}-{}", me.ns + 1, me.pid, me.start));
        for d in [&gone, &other] {
            fs::create_dir(d).unwrap();
            fs::create_dir(d.join("p0")).unwrap();
        }
        sweep(parent, &me);
        assert!(!gone.exists());
        assert!(other.exists());
        assert!(bases[0].dir.exists(), "its own group is kept");
        fs::remove_dir(other.join("p0")).unwrap();
        fs::remove_dir(&other).unwrap();
    }

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not reaped yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} still runs");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn own_groups_name_each_hierarchy() {
        let own = own_groups("8:pids:/\n4:memory:/a/b\n0::/user.slice/x:y\n");
        assert_eq!(own[0], ("pids".into(), "/".into()));
        assert_eq!(own[1], ("memory".into(), "/a/b".into()));
        assert_eq!(own[2], (String::new(), "/user.slice/x:y".into()));
    }
}
