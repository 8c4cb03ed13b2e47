//! What a store carries for one call (`Host`): the WASI context, the
//! limits, the deadline and the write quota, and the host function that
//! spends the quota. A leaf: the runtime (its linker), the tool (its
//! `InstancePre`) and the call path all name it.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::p1::WasiP1Ctx;

use toolplane_tool::quota::DataQuota;
use toolplane_units::fmt_size;

/// What a store carries: the WASI context, the limits, the deadline.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    /// The epoch count at which the current call times out.
    pub(crate) deadline: u64,
    pub(crate) timed_out: bool,
    /// Write quota: bytes this call may still reserve.
    pub(crate) write_left: u64,
    /// The call's `limits.max_write`, for messages.
    pub(crate) max_write: u64,
    /// The data directory's accounting, for tools that may write to it.
    pub(crate) quota: Option<Arc<DataQuota>>,
    /// Why the host refused a write reservation in this call, if it did.
    pub(crate) refused_write: Option<String>,
}

/// `toolplane.reserve_write(bytes: i64) -> i32`: 0 when the call may write
/// `bytes` more, 1 when that would pass its `limits.max_write`, 2 when it
/// would pass the data directory's limit (the reason is kept for the
/// call's error).
pub(crate) fn reserve_write(mut caller: wasmtime::Caller<'_, Host>, bytes: i64) -> i32 {
    let host = caller.data_mut();
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    if bytes > host.write_left {
        host.refused_write = Some(format!(
            "writing {} would exceed this call's write quota, limits.max_write = {}",
            fmt_size(bytes),
            fmt_size(host.max_write)
        ));
        return 1;
    }
    if let Some(q) = &host.quota
        && let Err(why) = q.reserve(bytes)
    {
        host.refused_write = Some(why);
        return 2;
    }
    host.write_left -= bytes;
    0
}

/// `StoreLimits` plus a record of the growth it refused, so a trap that
/// follows a refused growth is reported as the memory limit it is.
pub(crate) struct Limiter {
    pub(crate) limits: StoreLimits,
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if !ok {
            self.refused = Some(desired);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
