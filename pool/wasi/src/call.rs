//! Running one call in a sandbox: store set-up (WASI context, limits,
//! deadline), the two guest entry points, and mapping how a call ended to
//! an [`Outcome`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use toolplane_core::{Outcome, Payload};
use wasmtime::{Instance, Memory, Store, StoreLimitsBuilder, Trap, TypedFunc, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::host::{Host, Limiter};
use crate::pipe::CappedPipe;
use crate::runtime::{Active, Runtime};
use crate::spec::{Access, Mode};
use crate::tool::{Entry, LoadedTool};
use toolplane_units::fmt_size;

/// Bytes of stderr a call may write before writes fail.
const STDERR_CAPACITY: usize = 64 << 10;

/// The per-call ends of a store's stdio.
struct Stdio {
    stdout: CappedPipe,
    stderr: CappedPipe,
}

fn new_store(
    rt: &Runtime,
    tool: &LoadedTool,
    stdin: Option<Vec<u8>>,
) -> Result<(Store<Host>, Stdio), Outcome> {
    let limits = &tool.spec.limits;
    let mut b = WasiCtxBuilder::new();
    let stdout = CappedPipe::new(limits.max_output as usize);
    let stderr = CappedPipe::new(STDERR_CAPACITY);
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        // Only tools with a directory need it; wasmtime-wasi then also runs
        // clock waits (`poll_oneoff`) blocking, so a tool without
        // directories keeps its sleeps parked (the worker runs other calls).
        .allow_blocking_current_thread(rt.config().fs_inline && !tool.dirs.is_empty());
    if let Some(input) = stdin {
        b.stdin(MemoryInputPipe::new(input));
    }
    for (host, grant) in &tool.dirs {
        let perms = match grant.access {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        if let Err(e) = b.preopened_dir(host, &grant.guest, perms) {
            return Err(Outcome::Error(
                format!(
                    "tool {}: cannot open its directory {} (for {}): {e:#}",
                    tool.name,
                    host.display(),
                    grant.guest
                )
                .into(),
            ));
        }
    }
    let host = Host {
        wasi: b.build_p1(),
        limiter: Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory as usize)
                .instances(1)
                .build(),
            refused: None,
        },
        deadline: u64::MAX,
        timed_out: false,
        write_left: 0,
        max_write: limits.max_write,
        quota: tool.quota.clone(),
        refused_write: None,
    };
    let mut store = Store::new(&rt.inner.engine, host);
    store.limiter(|h| &mut h.limiter);
    let epochs = Arc::clone(&rt.inner.epochs);
    store.epoch_deadline_callback(move |mut cx| {
        let host = cx.data_mut();
        if epochs.count.load(Ordering::Relaxed) >= host.deadline {
            host.timed_out = true;
            return Err(wasmtime::Error::msg("deadline exceeded"));
        }
        // Yield to the calls beside this one, then run another tick.
        Ok(UpdateDeadline::Yield(1))
    });
    Ok((store, Stdio { stdout, stderr }))
}

/// Arms the deadline and fuel of the next call on `store`; the call counts
/// as running (the epoch ticker keeps ticking) while the guard lives.
fn arm<'r>(
    rt: &'r Runtime,
    tool: &LoadedTool,
    store: &mut Store<Host>,
) -> Result<Active<'r>, Outcome> {
    if let Some(q) = &store.data().quota
        && let Some(why) = q.full()
    {
        return Err(Outcome::Error(format!("tool {}: {why}", tool.name).into()));
    }
    let active = rt.inner.active();
    let ticks = rt.deadline_ticks(tool.spec.limits.timeout);
    let now = rt.inner.epochs.count.load(Ordering::Relaxed);
    let host = store.data_mut();
    host.deadline = now.saturating_add(ticks);
    host.timed_out = false;
    host.limiter.refused = None;
    host.write_left = tool.spec.limits.max_write;
    host.refused_write = None;
    // The first yield comes after one whole tick of running, not at the
    // next tick boundary: a 30 µs call would otherwise cross a 250 µs
    // boundary and yield (holding its slot while the worker starts the
    // next call) about one time in eight, and such yields are what raise
    // the number of instances alive at once, each a pool slot kept
    // resident. A long call still lets the others run within two ticks.
    store.set_epoch_deadline(2);
    if rt.inner.config.fuel {
        let fuel = tool.spec.limits.fuel.unwrap_or(u64::MAX);
        store
            .set_fuel(fuel)
            .map_err(|e| Outcome::Error(format!("cannot set fuel: {e:#}").into()))?;
    }
    Ok(active)
}

/// A pool slot, held for as long as an instance lives.
pub(crate) type SlotPermit = tokio::sync::OwnedSemaphorePermit;

pub(crate) async fn slot(rt: &Runtime) -> SlotPermit {
    match Arc::clone(&rt.inner.slots).try_acquire_owned() {
        Ok(p) => p,
        Err(_) => Arc::clone(&rt.inner.slots)
            .acquire_owned()
            .await
            .expect("the runtime never closes its slot semaphore"),
    }
}

/// Runs `call`, one call of `tool`, under the tool's deadline kept by the
/// host: the epoch deadline interrupts guest code, this ends the call
/// whatever the guest waits on (a clock, a file operation, a pool slot),
/// dropping its instance and freeing its slot.
pub(crate) async fn bounded(tool: &LoadedTool, call: impl Future<Output = Outcome>) -> Outcome {
    let deadline = tokio::time::Instant::now() + tool.spec.limits.timeout;
    let mut call = std::pin::pin!(call);
    // Most calls end in their first poll: they need no timer (creating and
    // dropping one costs more than some calls, see PERF.md).
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    let outcome = match first {
        Poll::Ready(o) => o,
        Poll::Pending => tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Outcome::Timeout),
    };
    if let Some(q) = &tool.quota {
        q.touched();
    }
    outcome
}

/// One call outside a worker: a fresh instance, or for a reuse-mode tool
/// a live instance used once (there is no worker to keep it for).
pub(crate) async fn once(rt: Runtime, tool: Arc<LoadedTool>, input: &[u8]) -> Outcome {
    let call = async {
        match tool.spec.mode {
            Mode::Fresh => fresh(rt.clone(), Arc::clone(&tool), input.into()).await,
            Mode::Reuse => match LiveInstance::new(&rt, Arc::clone(&tool)).await {
                Ok(mut live) => live.call(&rt, input).await.0,
                Err(o) => o,
            },
        }
    };
    bounded(&tool, call).await
}

/// One call on a fresh instance.
pub(crate) async fn fresh(rt: Runtime, tool: Arc<LoadedTool>, input: Payload) -> Outcome {
    let _slot = slot(&rt).await;
    let stdin = match tool.entry {
        Entry::Command => Some(input.to_vec()),
        Entry::Fast(_) => None,
    };
    let (mut store, stdio) = match new_store(&rt, &tool, stdin) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let _active = match arm(&rt, &tool, &mut store) {
        Ok(a) => a,
        Err(o) => return o,
    };
    let instance = match tool.pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        Err(e) => return failure(&tool, &store, &stdio, &e, "instantiate"),
    };
    match tool.entry {
        Entry::Command => command(&tool, &instance, &mut store, &stdio).await,
        Entry::Fast(_) => match FastCalls::bind(&tool, &instance, &mut store) {
            Ok(f) => f.call(&tool, &mut store, &stdio, &input).await.0,
            Err(o) => o,
        },
    }
}

async fn command(
    tool: &LoadedTool,
    instance: &Instance,
    store: &mut Store<Host>,
    stdio: &Stdio,
) -> Outcome {
    let start: TypedFunc<(), ()> = match instance.get_typed_func(&mut *store, "_start") {
        Ok(f) => f,
        Err(e) => return failure(tool, store, stdio, &e, "find _start"),
    };
    let code = match start.call_async(&mut *store, ()).await {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return failure(tool, store, stdio, &e, "run"),
        },
    };
    if stdio.stdout.overflowed() {
        return over_output(tool);
    }
    if code == 0 {
        Outcome::Ok(stdio.stdout.with(Payload::from_slice))
    } else if let Some(why) = store.data_mut().refused_write.take() {
        Outcome::Error(format!("tool {}: {why}", tool.name).into())
    } else {
        let err = excerpt(&stdio.stderr, tool.stderr_excerpt);
        Outcome::Error(if err.is_empty() {
            format!("tool {} exited with code {code}", tool.name).into()
        } else {
            err.into()
        })
    }
}

/// A live instance's fast entry.
pub(crate) struct FastCalls {
    alloc: TypedFunc<u32, u32>,
    call: TypedFunc<(u32, u32), u64>,
    memory: Memory,
}

impl FastCalls {
    fn bind(
        tool: &LoadedTool,
        instance: &Instance,
        store: &mut Store<Host>,
    ) -> Result<FastCalls, Outcome> {
        let Entry::Fast(exports) = &tool.entry else {
            return Err(Outcome::error("the fast entry was asked of a command tool"));
        };
        let missing = |what: &str| {
            Outcome::Error(
                format!("tool {}: cannot bind its fast entry ({what})", tool.name).into(),
            )
        };
        let alloc = instance
            .get_module_export(&mut *store, &exports.alloc)
            .and_then(|e| e.into_func())
            .ok_or_else(|| missing("toolplane_alloc"))?
            .typed::<u32, u32>(&*store)
            .map_err(|_| missing("toolplane_alloc: (i32) -> i32"))?;
        let call = instance
            .get_module_export(&mut *store, &exports.call)
            .and_then(|e| e.into_func())
            .ok_or_else(|| missing("toolplane_call"))?
            .typed::<(u32, u32), u64>(&*store)
            .map_err(|_| missing("toolplane_call: (i32, i32) -> i64"))?;
        let memory = instance
            .get_module_export(&mut *store, &exports.memory)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| missing("memory"))?;
        Ok(FastCalls {
            alloc,
            call,
            memory,
        })
    }

    /// Runs one call; the flag says whether the instance is still sound
    /// (the call returned, with a result or a tool error).
    async fn call(
        &self,
        tool: &LoadedTool,
        store: &mut Store<Host>,
        stdio: &Stdio,
        input: &[u8],
    ) -> (Outcome, bool) {
        let Ok(len) = u32::try_from(input.len()) else {
            return (Outcome::error("input larger than 4 GiB"), true);
        };
        let ptr = match self.alloc.call_async(&mut *store, len).await {
            Ok(p) => p,
            Err(e) => return (failure(tool, store, stdio, &e, "toolplane_alloc"), false),
        };
        if self.memory.write(&mut *store, ptr as usize, input).is_err() {
            return (
                Outcome::Error(
                    format!(
                        "tool {}: toolplane_alloc({len}) returned {ptr}, outside its memory",
                        tool.name
                    )
                    .into(),
                ),
                false,
            );
        }
        let r = match self.call.call_async(&mut *store, (ptr, len)).await {
            Ok(r) => r,
            Err(e) => return (failure(tool, store, stdio, &e, "toolplane_call"), false),
        };
        let out_ptr = (r & 0xffff_ffff) as usize;
        let out_len = ((r >> 32) & 0x7fff_ffff) as usize;
        let is_error = r >> 63 == 1;
        if is_error && let Some(why) = store.data_mut().refused_write.take() {
            return (
                Outcome::Error(format!("tool {}: {why}", tool.name).into()),
                true,
            );
        }
        if !is_error && out_len as u64 > tool.spec.limits.max_output {
            return (over_output(tool), true);
        }
        let data = self.memory.data(&*store);
        let Some(bytes) = out_ptr
            .checked_add(out_len)
            .and_then(|end| data.get(out_ptr..end))
        else {
            return (
                Outcome::Error(
                    format!(
                        "tool {}: toolplane_call returned {out_len} bytes at {out_ptr}, outside its memory",
                        tool.name
                    )
                    .into(),
                ),
                false,
            );
        };
        if is_error {
            let cap = tool.stderr_excerpt.max(256);
            let msg = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]).into_owned();
            (Outcome::Error(msg.into()), true)
        } else {
            (Outcome::Ok(Payload::from_slice(bytes)), true)
        }
    }
}

/// A reuse-mode instance kept alive across calls on one worker.
pub(crate) struct LiveInstance {
    pub(crate) tool: Arc<LoadedTool>,
    store: Store<Host>,
    stdio: Stdio,
    live: FastCalls,
    pub(crate) calls: u64,
    _slot: SlotPermit,
}

impl LiveInstance {
    /// Instantiates `tool` for reuse.
    pub(crate) async fn new(rt: &Runtime, tool: Arc<LoadedTool>) -> Result<LiveInstance, Outcome> {
        let slot = slot(rt).await;
        let (mut store, stdio) = new_store(rt, &tool, None)?;
        let _active = arm(rt, &tool, &mut store)?;
        let instance = match tool.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(failure(&tool, &store, &stdio, &e, "instantiate")),
        };
        let live = FastCalls::bind(&tool, &instance, &mut store)?;
        Ok(LiveInstance {
            tool,
            store,
            stdio,
            live,
            calls: 0,
            _slot: slot,
        })
    }

    /// Runs one call; `false` when the instance must not serve another.
    pub(crate) async fn call(&mut self, rt: &Runtime, input: &[u8]) -> (Outcome, bool) {
        let _active = match arm(rt, &self.tool, &mut self.store) {
            Ok(a) => a,
            Err(o) => return (o, false),
        };
        self.calls += 1;
        let (outcome, sound) = self
            .live
            .call(&self.tool, &mut self.store, &self.stdio, input)
            .await;
        let limit = self
            .tool
            .spec
            .limits
            .recycle_after
            .unwrap_or(rt.inner.config.recycle_after);
        (outcome, sound && self.calls < limit)
    }
}

fn over_output(tool: &LoadedTool) -> Outcome {
    Outcome::Error(
        format!(
            "tool {}: output exceeds its cap, limits.max_output = {}",
            tool.name,
            fmt_size(tool.spec.limits.max_output)
        )
        .into(),
    )
}

fn excerpt(pipe: &CappedPipe, cap: usize) -> String {
    pipe.with(|bytes| {
        let cut = &bytes[..bytes.len().min(cap)];
        let mut s = String::from_utf8_lossy(cut).trim().to_owned();
        if bytes.len() > cap {
            s.push_str(" …");
        }
        s
    })
}

/// Maps a call that did not return to its outcome.
fn failure(
    tool: &LoadedTool,
    store: &Store<Host>,
    stdio: &Stdio,
    e: &wasmtime::Error,
    during: &str,
) -> Outcome {
    let host = store.data();
    let name = &tool.name;
    if host.timed_out {
        return Outcome::Timeout;
    }
    if let Some(why) = &host.refused_write {
        return Outcome::Error(format!("tool {name}: {why}").into());
    }
    if let Some(asked) = host.limiter.refused {
        return Outcome::Error(
            format!(
                "tool {name}: memory limit exceeded: it asked for {} of linear memory, limits.memory = {}",
                fmt_size(asked as u64),
                fmt_size(tool.spec.limits.memory)
            )
            .into(),
        );
    }
    if stdio.stdout.overflowed() {
        return over_output(tool);
    }
    let stderr = excerpt(&stdio.stderr, tool.stderr_excerpt);
    if stdio.stderr.overflowed() {
        return Outcome::Error(
            format!(
                "tool {name}: stderr exceeds its cap of {}",
                fmt_size(STDERR_CAPACITY as u64)
            )
            .into(),
        );
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::OutOfFuel {
            return Outcome::Error(
                format!(
                    "tool {name}: fuel exhausted, limits.fuel = {}",
                    tool.spec.limits.fuel.unwrap_or(u64::MAX)
                )
                .into(),
            );
        }
        let mut msg = format!("{trap}");
        if tool.backtraces {
            msg = format!("{e:?}");
        }
        if !stderr.is_empty() {
            msg.push_str(": ");
            msg.push_str(&stderr);
        }
        return Outcome::Trap(Cow::Owned(msg));
    }
    let mut msg = format!("tool {name}: {during} failed: {e:#}");
    if !stderr.is_empty() {
        msg.push_str(": ");
        msg.push_str(&stderr);
    }
    Outcome::Error(msg.into())
}
