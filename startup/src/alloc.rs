//! Tuning of the global allocator the toolplane binaries use (mimalloc):
//! process-wide, so the binaries call it, not the libraries they link.

use std::ffi::{c_int, c_long};

/// `mi_option_purge_delay` in mimalloc v3's option enum (`mimalloc.h`);
/// the crate exports no constant for it.
const PURGE_DELAY: c_int = 15;

/// Its default in mimalloc v3 (`options.c`), used to check the index.
const PURGE_DELAY_DEFAULT: c_long = 1000;

/// Makes mimalloc return freed pages to the OS at once instead of after
/// its default delay of 1 s. Each call through the pool allocates and
/// frees a store, a WASI context and payload copies; at 10k calls/s the
/// delayed purges kept the resident size drifting up by a few KiB/s while
/// the live heap stayed flat (PERF.md, "Where the growth is"). Immediate
/// purging kept it flat. Call it at the start of `main`, before threads
/// start. Leaves the option alone when `MIMALLOC_PURGE_DELAY` is set (the
/// user's choice) or when the option does not hold v3's default (another
/// mimalloc version, where the index may mean something else); returns
/// whether it set it.
#[allow(unsafe_code)]
pub fn purge_promptly() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: `mi_option_get` and `mi_option_set` read and write one entry
    // of mimalloc's option table; any index is accepted (out-of-range ones
    // are ignored), and the value is only used at the next purge.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) != PURGE_DELAY_DEFAULT {
            return false;
        }
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_get(PURGE_DELAY) == 0
    }
}

/// Keeps transparent huge pages out of this process (Linux's
/// `PR_SET_THP_DISABLE`). mimalloc marks its arena `MADV_HUGEPAGE`, so on a
/// kernel in THP `madvise` mode a page fault there maps a whole 2 MiB page
/// and khugepaged later collapses partly used 2 MiB ranges into whole
/// ones: in the 30-minute soak the resident size stepped up by 2-3 MiB at
/// such collapses while the live heap stayed flat (PERF.md, "Huge pages").
/// Without them the resident size follows the live heap. Call it at the
/// start of `main`, before the heap grows. Leaves THP alone when
/// `MIMALLOC_ALLOW_THP` is set (the user's choice); returns whether THP is
/// now off for this process.
#[allow(unsafe_code)]
pub fn no_huge_pages() -> bool {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes a flag of this process's memory map; it touches no
        // memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_index_is_v3s() {
        // Fails when a mimalloc upgrade moves the option or its default,
        // so that `purge_promptly` is looked at again.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(
                super::purge_promptly(),
                "mimalloc's purge_delay option moved"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn huge_pages_are_off_afterwards() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert!(super::no_huge_pages());
            // SAFETY: integer arguments only; reads this process's flag.
            let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(off, 1, "PR_GET_THP_DISABLE after no_huge_pages");
        }
    }
}
