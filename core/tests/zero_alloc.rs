//! In steady state, submit -> handle -> complete allocates nothing on the
//! producer path with a native handler. A counting global allocator sees
//! every allocation in the process; this file is its own test binary (a
//! single test) so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use toolplane_core::{Engine, Event, Outcome, Payload, Producer, ToolId, handler_fn};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the
// counter touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `realloc`'s caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `n` events through, submitting in bursts and draining, keyed or
/// not; returns how many completed.
fn run(p: &mut Producer, tool: ToolId, n: u64, keyed: bool) -> u64 {
    let mut sent = 0u64;
    let mut done = 0u64;
    while done < n {
        while sent < n {
            let mut e = Event::new(tool, b"0123456789abcdef".as_slice()).with_tag(sent);
            if keyed {
                e = e.with_key(sent % 61);
            }
            if p.submit(e).is_err() {
                break;
            }
            sent += 1;
        }
        done += p.drain(|c| {
            assert!(matches!(c.outcome, Outcome::Ok(ref out) if out.len() == 16));
        }) as u64;
    }
    done
}

#[test]
fn steady_state_allocates_nothing_per_event() {
    let engine = Engine::builder()
        .workers(2)
        .pin_workers(false)
        .build(handler_fn(|mut e: Event| {
            Outcome::Ok(std::mem::take(e.payload_mut()))
        }))
        .unwrap();
    let tool = engine.tool("echo");
    let mut p = engine.producer();
    // Every slot the producer can ever need, up front: the pool then never
    // grows, however far a loaded worker falls behind.
    p.preallocate();
    for keyed in [false, true] {
        // Warm-up: the slot pool, the rings' chunks and the histograms'
        // first touches settle.
        run(&mut p, tool, 200_000, keyed);
        std::thread::sleep(Duration::from_millis(10));
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let done = run(&mut p, tool, 500_000, keyed);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(done, 500_000);
        assert_eq!(
            allocations, 0,
            "{allocations} allocations over {done} events (keyed: {keyed})"
        );
    }
    let _: Payload = Payload::new();
    let report = engine.shutdown(Duration::from_secs(1));
    assert!(report.is_balanced());
}
