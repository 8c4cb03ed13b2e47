//! The shared wasmtime runtime: one `Engine` with the pooling allocator,
//! copy-on-write memory images and epoch interruption driven by a ticker
//! thread (which sleeps while no call runs); one WASI linker; a semaphore
//! in front of the pool's slots; the module cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, WasmBacktraceDetails};

use crate::cache::{CacheError, ModuleCache};
use crate::host::Host;

/// Settings of the WASI runtime. [`PoolConfig::for_engine`] sizes it from
/// the engine's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Instances that can be live at once (pool slots); see
    /// [`PoolConfig::for_engine`] to size it from an engine.
    pub instances: u32,
    /// The largest linear memory any tool may ask for (`limits.memory`
    /// above it is refused when the tool loads).
    pub max_memory: u64,
    /// Period of the epoch ticker: deadlines are checked, and CPU-bound
    /// calls yield to the calls beside them, at this period.
    pub epoch_tick: Duration,
    /// Where compiled modules are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Live reuse-mode instances a worker keeps at most.
    pub reuse_per_worker: usize,
    /// Reuse mode: calls a live instance serves before it is recycled,
    /// unless the manifest says otherwise.
    pub recycle_after: u64,
    /// Capture wasm backtraces in trap messages (slower traps).
    pub backtraces: bool,
    /// Meter fuel; tools with `limits.fuel` then run out of it.
    pub fuel: bool,
    /// Bytes of a tool's stderr kept for error messages.
    pub stderr_excerpt: usize,
    /// Bytes of each freed linear memory (and of each async stack and
    /// table) reset in place and kept resident instead of being returned to
    /// the kernel, so the next instance in the slot takes no page faults.
    pub keep_resident: usize,
    /// Freed slots returned to the kernel in one batch (one TLB flush for
    /// the batch instead of one per instance).
    pub decommit_batch: usize,
    /// Reset only the pages a call dirtied, found with Linux's
    /// `PAGEMAP_SCAN` (6.7+); ignored where unsupported.
    pub pagemap_scan: bool,
    /// Run a tool's file operations on the worker's thread instead of
    /// handing each one to tokio's blocking pool (off by default). A hop
    /// to the pool and back costs two thread wake-ups per operation (an
    /// `fs.write` makes several); inline, a page-cache read or write takes
    /// microseconds. But inline, a blocking operation blocks the worker:
    /// a FIFO someone made in the data directory (its `open` waits for a
    /// writer), a hung network file system, and wasmtime-wasi then runs
    /// the tool's clock waits blocking too. Nothing, the call's deadline
    /// included, can interrupt the worker meanwhile. Turn it on only for a
    /// data directory on a local disk that no one else can write.
    pub fs_inline: bool,
    /// Cranelift optimizes the code it compiles (default: yes). Off,
    /// modules compile about a quarter faster into slower code: for a
    /// one-shot process such as `toolplane call`, whose single call never
    /// pays an optimizing compile back. The module cache keeps the two
    /// kinds apart (wasmtime's compatibility hash covers the setting).
    pub optimize: bool,
    /// Slots that held an instance and are free, kept for their module
    /// (warm: the next instance of that module maps nothing new) before
    /// the pool takes them for other modules rather than touch a slot
    /// never used. Each warm slot keeps `keep_resident` bytes resident, so
    /// this bounds that part of memory by peak concurrency + this many
    /// slots (wasmtime's default is 100, up to 100 MiB more resident).
    pub max_unused_warm_slots: u32,
    /// The largest module a manifest may name: compiling takes time and
    /// memory in proportion (30–40× the module's size for one dense in
    /// code: 8 MiB took 53 s and 304 MiB here, PERF.md), so a tools
    /// directory cannot make the server compile a gigabyte. Compiles also run at once only while their modules add
    /// up to this many bytes, whatever the number of loader threads.
    pub max_module_size: u64,
    /// Reading a module (or a manifest) takes at most this long.
    pub read_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            instances: 256,
            max_memory: 256 << 20,
            epoch_tick: Duration::from_micros(250),
            cache_dir: default_cache_dir(),
            reuse_per_worker: 16,
            recycle_after: 10_000,
            backtraces: false,
            fuel: false,
            stderr_excerpt: 1024,
            // Measured per call (`compare wasi`, then an example): a fresh echo call went
            // from 23 µs to 8 µs with resident slots reset by PAGEMAP_SCAN;
            // batching decommits showed no gain beyond the noise on top of
            // that (see PERF.md), so it stays at wasmtime's default.
            keep_resident: 1 << 20,
            decommit_batch: 1,
            pagemap_scan: true,
            // Inline was faster (PERF.md, "Where the latency went") but lets a
            // FIFO in the data directory stall a worker past any deadline
            // (PERF.md, "Reliability under hostile tools and files").
            fs_inline: false,
            optimize: true,
            max_unused_warm_slots: 16,
            max_module_size: 32 << 20,
            read_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolConfig {
    /// Sizes the pool for an engine: one slot per call the engine can run
    /// at once (its workers × `max_concurrent_per_worker`, capped by
    /// `max_inflight`), plus each worker's live reuse instances and a few
    /// for calls made outside the engine.
    pub fn for_engine(engine: &toolplane_core::Config) -> PoolConfig {
        let mut c = PoolConfig::default();
        c.size_for(engine);
        c
    }

    /// See [`PoolConfig::for_engine`].
    pub fn size_for(&mut self, engine: &toolplane_core::Config) {
        let workers = engine.resolved_workers();
        let running = (workers * engine.max_concurrent_per_worker).min(engine.max_inflight);
        let total = running + workers * self.reuse_per_worker + 16;
        self.instances = u32::try_from(total).unwrap_or(u32::MAX);
    }
}

/// `$TOOLPLANE_CACHE_DIR`, else `$XDG_CACHE_HOME/toolplane/modules`, else
/// `~/.cache/toolplane/modules`, else the temp dir.
pub fn default_cache_dir() -> Option<PathBuf> {
    Some(user_dir(
        "TOOLPLANE_CACHE_DIR",
        "XDG_CACHE_HOME",
        ".cache",
        "modules",
    ))
}

/// The fs tools' data directory when none is given: `$TOOLPLANE_DATA_DIR`,
/// else `$XDG_DATA_HOME/toolplane/data`, else
/// `~/.local/share/toolplane/data`, else the temp dir.
pub fn default_data_dir() -> PathBuf {
    user_dir(
        "TOOLPLANE_DATA_DIR",
        "XDG_DATA_HOME",
        ".local/share",
        "data",
    )
}

/// `$over`, else `$xdg/toolplane/leaf` (when absolute), else
/// `$HOME/home_sub/toolplane/leaf`, else `toolplane-<uid>/leaf` in the temp
/// dir (one per user: the cache refuses a directory another user owns).
fn user_dir(over: &str, xdg: &str, home_sub: &str, leaf: &str) -> PathBuf {
    if let Some(d) = std::env::var_os(over) {
        return PathBuf::from(d);
    }
    std::env::var_os(xdg)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_sub)))
        .map(|base| base.join("toolplane"))
        .unwrap_or_else(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            #[allow(unsafe_code)]
            let uid = unsafe { libc::geteuid() };
            std::env::temp_dir().join(format!("toolplane-{uid}"))
        })
        .join(leaf)
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the configuration.
    #[error("cannot configure wasmtime: {0:#}")]
    Engine(wasmtime::Error),
    /// The module cache directory is unusable.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A setting is out of range.
    #[error("{key} = {value} is out of range: {accepted}")]
    OutOfRange {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        accepted: &'static str,
    },
    /// A thread the runtime needs could not start.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The shared WASI runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) linker: wasmtime::Linker<Host>,
    pub(crate) config: PoolConfig,
    pub(crate) cache: ModuleCache,
    /// Pool slots not in use.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Epochs elapsed and calls running, shared with the ticker.
    pub(crate) epochs: Arc<Epochs>,
    ticker: Option<Ticker>,
}

/// The epoch count and what the ticker needs to know to sleep while no
/// call runs.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    /// Epochs elapsed, as the ticker counts them (deadlines are in these).
    pub(crate) count: AtomicU64,
    /// Calls running wasm (instantiation included).
    active: AtomicUsize,
    /// The ticker is parked, or about to park, until a call starts.
    asleep: AtomicBool,
}

/// Ticks the ticker goes on for once no call runs, before it sleeps: a
/// steady stream of calls does not wake it for each one.
const LINGER: Duration = Duration::from_millis(100);

/// Held while a call runs wasm: the ticker does not sleep meanwhile.
pub(crate) struct Active<'r>(&'r RuntimeInner);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        // Release, paired with the ticker's Acquire load of `active` (its
        // fast check; the SeqCst pair in `active()` and the ticker is the
        // protocol that decides whether it may sleep).
        self.0.epochs.active.fetch_sub(1, Ordering::Release);
    }
}

/// See [`Runtime::slot_use`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotUse {
    /// Slots holding an instance.
    pub in_use: usize,
    /// Free slots that held an instance and keep its pages.
    pub warm: usize,
    /// Bytes resident in the warm slots' linear memories.
    pub warm_bytes: usize,
}

impl SlotUse {
    /// Slots touched and kept: in use plus warm.
    pub fn touched(&self) -> usize {
        self.in_use + self.warm
    }
}

impl RuntimeInner {
    /// Marks a call running until the guard drops, waking the ticker if it
    /// sleeps.
    pub(crate) fn active(&self) -> Active<'_> {
        let e = &self.epochs;
        // SeqCst on both sides (here and in the ticker: it stores `asleep`
        // then loads `active`) so that either the ticker sees this call and
        // does not park, or this call sees it asleep and wakes it.
        e.active.fetch_add(1, Ordering::SeqCst);
        if e.asleep.load(Ordering::SeqCst)
            && let Some(h) = self.ticker.as_ref().and_then(|t| t.thread.as_ref())
        {
            h.thread().unpark();
        }
        Active(self)
    }
}

impl std::fmt::Debug for RuntimeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        if let Some(t) = &mut self.ticker {
            t.stop.store(true, Ordering::Relaxed);
            if let Some(h) = t.thread.take() {
                h.thread().unpark();
                let _ = h.join();
            }
        }
    }
}

impl Runtime {
    /// Starts the runtime: configures wasmtime, opens the module cache,
    /// starts the epoch ticker.
    ///
    /// # Errors
    ///
    /// A setting out of range, wasmtime refusing the pool's size, or a
    /// cache directory that cannot be created.
    pub fn new(config: PoolConfig) -> Result<Runtime, RuntimeError> {
        if config.instances == 0 {
            return Err(RuntimeError::OutOfRange {
                key: "instances",
                value: "0".into(),
                accepted: "at least 1",
            });
        }
        if config.epoch_tick < Duration::from_micros(10)
            || config.epoch_tick > Duration::from_secs(1)
        {
            return Err(RuntimeError::OutOfRange {
                key: "epoch_tick",
                value: format!("{:?}", config.epoch_tick),
                accepted: "10µs..=1s",
            });
        }
        let max_memory = usize::try_from(config.max_memory)
            .ok()
            .filter(|m| *m >= 64 << 10 && *m <= 4 << 30)
            .ok_or_else(|| RuntimeError::OutOfRange {
                key: "max_memory",
                value: config.max_memory.to_string(),
                accepted: "64 KiB..=4 GiB",
            })?;
        // Freed slots wait in a decommit batch (wasmtime keeps one queue per
        // thread shard) before they can be used again: the pool holds that
        // many more than the semaphore admits.
        let batch = config.decommit_batch.max(1);
        // wasmtime 48 shards its queues by `available_parallelism`, at most 16.
        let shards = std::thread::available_parallelism().map_or(16, |n| n.get().min(16));
        let total = u32::try_from(batch.saturating_mul(shards))
            .ok()
            .and_then(|b| config.instances.checked_add(b))
            .ok_or_else(|| RuntimeError::OutOfRange {
                key: "decommit_batch",
                value: batch.to_string(),
                accepted: "small enough that instances + decommit_batch × shards fits in u32",
            })?;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(total)
            .total_memories(total)
            .total_tables(total)
            .total_stacks(total)
            .max_memory_size(max_memory)
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(config.keep_resident)
            .async_stack_keep_resident(config.keep_resident)
            .decommit_batch_size(batch)
            .max_unused_warm_slots(config.max_unused_warm_slots)
            .pagemap_scan(if config.pagemap_scan {
                wasmtime::Enabled::Auto
            } else {
                wasmtime::Enabled::No
            });
        let mut wc = wasmtime::Config::new();
        wc.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .epoch_interruption(true)
            .wasm_backtrace_max_frames(if config.backtraces {
                std::num::NonZeroUsize::new(20)
            } else {
                None
            })
            .wasm_backtrace_details(WasmBacktraceDetails::Disable)
            .consume_fuel(config.fuel)
            .cranelift_opt_level(if config.optimize {
                wasmtime::OptLevel::Speed
            } else {
                wasmtime::OptLevel::None
            });
        let engine = wasmtime::Engine::new(&wc).map_err(RuntimeError::Engine)?;
        let mut linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(RuntimeError::Engine)?;
        linker
            .func_wrap("toolplane", "reserve_write", crate::host::reserve_write)
            .map_err(RuntimeError::Engine)?;
        let cache = ModuleCache::new(config.cache_dir.clone(), &engine, config.max_module_size)?;
        let epochs = Arc::new(Epochs::default());
        let ticker = start_ticker(&engine, &epochs, config.epoch_tick).map_err(|source| {
            RuntimeError::Thread {
                what: "epoch ticker",
                source,
            }
        })?;
        let slots = Arc::new(tokio::sync::Semaphore::new(config.instances as usize));
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                cache,
                slots,
                epochs,
                ticker: Some(ticker),
            }),
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The module cache.
    pub fn cache(&self) -> &ModuleCache {
        &self.inner.cache
    }

    /// The wasmtime engine (for embedders that compile their own modules).
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// Pool slots free now.
    pub fn free_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Linear-memory slots of the pool that hold an instance now, and
    /// slots that held one and are free but still warm (their pages
    /// resident up to `keep_resident`). Their sum is how many slots the
    /// pool has touched and keeps; each costs the pages its instances
    /// used, so it is the pool's part of resident memory.
    pub fn slot_use(&self) -> SlotUse {
        self.inner
            .engine
            .pooling_allocator_metrics()
            .map_or(SlotUse::default(), |m| SlotUse {
                in_use: m.memories(),
                warm: m.unused_warm_memories() as usize,
                warm_bytes: m.unused_memory_bytes_resident(),
            })
    }

    /// Epoch ticks so far. The ticker sleeps while no call runs, so this
    /// stands still on an idle runtime.
    pub fn epochs(&self) -> u64 {
        self.inner.epochs.count.load(Ordering::Relaxed)
    }

    /// Epoch ticks a call with this timeout may run.
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        u64::try_from(timeout.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

fn start_ticker(
    engine: &wasmtime::Engine,
    epochs: &Arc<Epochs>,
    tick: Duration,
) -> std::io::Result<Ticker> {
    let stop = Arc::new(AtomicBool::new(false));
    let engine = engine.clone();
    let epochs = Arc::clone(epochs);
    let flag = Arc::clone(&stop);
    let linger = (LINGER.as_nanos() / tick.as_nanos().max(1)).max(1);
    let thread = std::thread::Builder::new()
        .name("toolplane-epoch".into())
        .spawn(move || {
            let mut idle = 0;
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(tick);
                epochs.count.fetch_add(1, Ordering::Relaxed);
                engine.increment_epoch();
                // Pairs with the Release decrement in `Active::drop`.
                if epochs.active.load(Ordering::Acquire) > 0 {
                    idle = 0;
                    continue;
                }
                idle += 1;
                if idle < linger {
                    continue;
                }
                // No call has run for `LINGER`: sleep until one starts
                // (`RuntimeInner::active`) or the runtime drops. Its
                // deadline counts from the epoch at its start, so the
                // epochs skipped while asleep change no deadline.
                // SeqCst, the other side of `RuntimeInner::active`'s pair:
                // either this load sees a starting call's increment, or
                // that call sees `asleep` and unparks this thread.
                epochs.asleep.store(true, Ordering::SeqCst);
                if epochs.active.load(Ordering::SeqCst) == 0 && !flag.load(Ordering::Relaxed) {
                    std::thread::park();
                }
                epochs.asleep.store(false, Ordering::SeqCst);
                idle = 0;
            }
        })?;
    Ok(Ticker {
        stop,
        thread: Some(thread),
    })
}
