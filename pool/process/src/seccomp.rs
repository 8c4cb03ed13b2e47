//! A seccomp filter on every process a tool starts (compiled once by the
//! `seccompiler` crate, installed in the child last before `exec`): the
//! system calls that reach past its namespaces or into the kernel's
//! least-trodden parts fail with `EPERM`, everything else is allowed.
//!
//! Denied:
//! - **new namespaces** (`unshare`, `setns`, and `clone` with a namespace
//!   flag): a user namespace would hand the program every capability
//!   inside it, and with it mounts over what its own mount namespace
//!   shows; `clone3`, whose flags the filter cannot read, fails with
//!   `ENOSYS`, so C libraries fall back to `clone` (as container runtimes
//!   do);
//! - **the kernel's keyrings** (`keyctl`, `add_key`, `request_key`): they
//!   are not namespaced, and the server's user's keys are there;
//! - **other processes' memory** (`ptrace`, `process_vm_readv`,
//!   `process_vm_writev`) — its own namespace holds only its own, but
//!   Landlock already confines those and nothing a tool does needs them;
//! - **kernel attack surface no tool needs** (`bpf`, `perf_event_open`,
//!   `userfaultfd`, `io_uring_setup`/`enter`/`register`: runtimes fall
//!   back to threads, as under Docker's default profile), and **what
//!   needs capabilities it has not** (mounts and the new mount API,
//!   modules, `kexec`, `reboot`, swap, `acct`, `syslog`,
//!   `open_by_handle_at`), so a kernel bug there is not reachable either.

use std::collections::BTreeMap;
use std::io;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The two filters: `EPERM` for the denied calls, `ENOSYS` for `clone3`.
pub(crate) struct Filters {
    deny: BpfProgram,
    clone3: BpfProgram,
}

/// Denied whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
];

/// `clone` flags that make a namespace.
const NEW_NAMESPACE: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(target_arch = "riscv64")]
const ARCH: Option<TargetArch> = Some(TargetArch::riscv64);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const ARCH: Option<TargetArch> = None;

/// The filters, compiled once; `Err` says why there are none (logged
/// once: processes then run without).
pub(crate) fn filters() -> &'static Result<Filters, String> {
    static FILTERS: OnceLock<Result<Filters, String>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let made = compile();
        if let Err(why) = &made {
            tracing::warn!("no seccomp filter for process tools: {why}");
        }
        made
    })
}

fn compile() -> Result<Filters, String> {
    let arch = ARCH.ok_or("seccompiler does not know this architecture")?;
    let e = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let mut clone = Vec::new();
    for flag in NEW_NAMESPACE {
        let flag = u64::from(flag.cast_unsigned());
        let when = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(e)?;
        clone.push(SeccompRule::new(vec![when]).map_err(e)?);
    }
    rules.insert(libc::SYS_clone, clone);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.cast_unsigned()),
        arch,
    )
    .map_err(e)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.cast_unsigned()),
        arch,
    )
    .map_err(e)?;
    Ok(Filters {
        deny: deny.try_into().map_err(e)?,
        clone3: clone3.try_into().map_err(e)?,
    })
}

impl Filters {
    /// Installs both on the calling thread: in the child between `fork`
    /// and `exec`, last (after `no_new_privs`). Nothing allocates.
    pub(crate) fn install(&self) -> io::Result<()> {
        for f in [&self.deny, &self.clone3] {
            seccompiler::apply_filter(f).map_err(|_| io::Error::last_os_error())?;
        }
        Ok(())
    }
}
