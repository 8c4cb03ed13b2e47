//! Tuning of the global allocator the toolplane binaries use (mimalloc).

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
}
