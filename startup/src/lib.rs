//! What every toolplane binary (`toolplane`, `loadgen`) does first, before
//! any thread starts: tune the process's allocator ([`alloc`]) and set up
//! its logs ([`log`]). Process-wide settings belong to the binary that owns
//! the process, not to a library it links; the binaries share them here.

pub mod alloc;
pub mod log;

/// Tunes the allocator (see [`alloc`]) and installs the log subscriber for
/// the program `name` in `format`. Call it first thing in `main`.
pub fn init(name: &'static str, format: log::Format) {
    alloc::purge_promptly();
    alloc::no_huge_pages();
    log::init(name, format);
}
