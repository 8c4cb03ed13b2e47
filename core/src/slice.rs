//! A worker's time slice: how long the kernel lets another thread keep the
//! worker's core once it runs there.
//!
//! Linux (6.6 and later) schedules normal threads by EEVDF: a thread the
//! scheduler picks runs up to its slice (about 3 ms, enforced at the next
//! tick: 4 ms at `HZ=250`) before a thread that wakes may preempt it, even
//! a thread at nice 19 against a worker at nice 0. On a machine with a
//! neighbour (a build, `yes` at nice 19), every time the neighbour ran while
//! the worker was idle or between two calls, the worker's next events
//! waited for the rest of that slice: PERF.md, "The main job beside a
//! neighbour", has the traces. Since 6.12 a thread can ask for a shorter
//! slice (`sched_setattr`'s `sched_runtime` for `SCHED_OTHER`): a thread
//! that wakes with a shorter slice than the one running preempts it at
//! once, and the one running is protected only for the shortest slice
//! queued. Older kernels accept the call and ignore the value.
//!
//! The only `unsafe` in this crate: three system calls (`libc` declares
//! two of them without wrapping them).
#![allow(unsafe_code)]

use std::time::Duration;

/// Asks the kernel for a `slice` for the calling thread, keeping its
/// policy and nice value. A thread that is not `SCHED_OTHER` (a real-time
/// or idle policy its owner chose) is left as it is; a zero slice asks for
/// nothing.
///
/// # Errors
///
/// The system call's error (a seccomp filter or an old kernel without
/// `sched_getattr`).
#[cfg(target_os = "linux")]
pub(crate) fn request(slice: Duration) -> std::io::Result<()> {
    if slice.is_zero() {
        return Ok(());
    }
    let size = std::mem::size_of::<libc::sched_attr>() as u32;
    // SAFETY: `sched_attr` is plain integers: all zeroes is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 names the calling thread; `attr` is a valid, writable
    // `sched_attr` of `size` bytes that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, size, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.sched_policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    attr.size = size;
    attr.sched_flags = 0;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: as above; the kernel only reads `attr`.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's kernel id, for tools that watch a worker from
/// outside (its `/proc/self/task/TID`).
#[cfg(target_os = "linux")]
pub(crate) fn tid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Not Linux: no id.
#[cfg(not(target_os = "linux"))]
pub(crate) fn tid() -> i32 {
    0
}

/// Not Linux: nothing to ask for.
#[cfg(not(target_os = "linux"))]
pub(crate) fn request(_slice: Duration) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current() -> libc::sched_attr {
        let size = std::mem::size_of::<libc::sched_attr>() as u32;
        // SAFETY: as in `request`.
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        // SAFETY: as in `request`.
        let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, size, 0) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        attr
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let tid = tid() as u32;
            // SAFETY: plain integers; `tid` names the calling thread.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 5) };
            assert_eq!(rc, 0);
            request(Duration::from_micros(300)).unwrap();
            let attr = current();
            assert_eq!(attr.sched_policy, libc::SCHED_OTHER as u32);
            assert_eq!(attr.sched_nice, 5, "the nice value is kept");
            // Kernels before 6.12 report no custom slice.
            if attr.sched_runtime != 0 {
                assert_eq!(attr.sched_runtime, 300_000);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn zero_asks_for_nothing() {
        std::thread::spawn(|| {
            let before = current().sched_runtime;
            request(Duration::ZERO).unwrap();
            assert_eq!(current().sched_runtime, before);
        })
        .join()
        .unwrap();
    }
}
