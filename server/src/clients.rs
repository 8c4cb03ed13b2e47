//! Who calls, which tools they may use, and how much: the `[[clients]]`
//! of `toolplane.toml`.
//!
//! ```toml
//! [[clients]]
//! name = "ci-bot"
//! token_sha256 = "..."          # `toolplane token hash`; never the token itself
//! tools = ["echo", "files.*"]   # names or globs; ["*"] for every tool
//! rate = 100                    # calls per second ("100/s", "6000/m", "10/h" too)
//! burst = 20                    # calls at once above the rate (default: the rate's count)
//! max_inflight = 8              # calls running at once
//! queue = 64                    # calls that may wait for one of them (default 64)
//! queue_timeout = "10s"         # how long one waits (default 10s)
//! metrics = false               # may read /metrics (every client's numbers)
//!
//! [clients.tools_rate]          # a rate of its own per tool or glob (shared by
//! "files.*" = "10/s"            # the tools a glob matches); or { rate, burst }
//! ```
//!
//! With `[[clients]]`, every route but `/healthz` needs one of these
//! tokens; without it the server behaves as it did (open, or
//! `server.token_sha256`). The list is read again when the file changes or
//! on `SIGHUP` ([`Directory::replace`]): a new token works at once, a
//! removed one stops, calls in flight finish. stdio has no tokens: it is
//! the single local user, and calls everything.
//!
//! Rate limits are `governor`'s keyed GCRA limiters, one per distinct quota,
//! keyed by client (and tool rule). Keys exist only for the configured
//! clients, so memory is bounded by the file; a request with an unknown
//! token is refused before any limiter is consulted, and creates nothing.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use toolplane_pool::names::Glob;

use crate::error::{CallResult, Refusal};
use crate::token::TokenDigest;

/// Most clients in a file.
pub const MAX_CLIENTS: usize = 100_000;
/// Most calls a client's queue may hold.
pub const MAX_QUEUE: u32 = 100_000;
/// The queue of a client with `max_inflight` and no `queue`.
pub const DEFAULT_QUEUE: u32 = 64;
/// How long a queued call waits, unless `queue_timeout` says.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest token looked up; a longer `Authorization` is refused
/// without hashing it.
pub const MAX_TOKEN: usize = 4096;

/// A rate: `count` calls per `per`, and the burst above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Calls...
    pub count: f64,
    /// ...per this long.
    pub per: Duration,
    /// Calls that may come at once (the GCRA's burst).
    pub burst: NonZeroU32,
}

impl Rate {
    /// `100`, `0.5` (per second), `"100/s"`, `"6000/m"`, `"10/h"`; the
    /// burst defaults to the count (at least 1).
    ///
    /// # Errors
    ///
    /// A message naming what is accepted.
    pub fn parse(value: &toml::Value, burst: Option<u32>) -> Result<Rate, String> {
        const ACCEPTED: &str = "accepted calls per second (100, 0.5) or \"N/s\", \"N/m\", \"N/h\"";
        let (count, per) = match value {
            toml::Value::Integer(n) => (*n as f64, Duration::from_secs(1)),
            toml::Value::Float(f) => (*f, Duration::from_secs(1)),
            toml::Value::String(s) => {
                let (n, unit) = s
                    .split_once('/')
                    .ok_or_else(|| format!("{s:?}: {ACCEPTED}"))?;
                let n: f64 = n.trim().parse().map_err(|_| format!("{s:?}: {ACCEPTED}"))?;
                let per = match unit.trim() {
                    "s" | "sec" | "second" => Duration::from_secs(1),
                    "m" | "min" | "minute" => Duration::from_secs(60),
                    "h" | "hour" => Duration::from_secs(3600),
                    _ => return Err(format!("{s:?}: {ACCEPTED}")),
                };
                (n, per)
            }
            other => return Err(format!("a {}: {ACCEPTED}", other.type_str())),
        };
        // From one a day to 1e9 a second: governor keeps times in u64
        // nanoseconds, and a slower rate (or a burst whose refill outlasts
        // ~584 years) would overflow them.
        let per_second = count / per.as_secs_f64();
        if !(count.is_finite() && (1.0 / 86_400.0..=1e9).contains(&per_second)) {
            // As written, not as its full decimal expansion.
            let shown = if count == 0.0 || (1e-3..1e9).contains(&count) {
                format!("{count}")
            } else {
                format!("{count:e}")
            };
            return Err(format!(
                "{shown}/{}: accepted from 1 a day (\"1/h\" is 24 a day) to 1e9 a second",
                match per.as_secs() {
                    60 => "m",
                    3600 => "h",
                    _ => "s",
                }
            ));
        }
        let burst = match burst {
            Some(b) => NonZeroU32::new(b).ok_or("burst = 0: accepted 1..=4294967295")?,
            None => NonZeroU32::new(count.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
                .unwrap_or(NonZeroU32::MIN),
        };
        // The whole burst refills in period × (burst − 1): it must fit.
        let period = per.div_f64(count).as_nanos();
        if period.saturating_mul(u128::from(burst.get() - 1)) > u128::from(u64::MAX / 2) {
            return Err(format!(
                "burst = {burst} at {count} per {}s: the burst would take centuries to refill; accepted a burst the rate refills within ~290 years",
                per.as_secs()
            ));
        }
        Ok(Rate { count, per, burst })
    }

    fn quota(&self) -> Quota {
        let period = self.per.div_f64(self.count).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }

    /// What the quota is keyed by: two rates with the same period and
    /// burst share a limiter.
    fn quota_key(&self) -> (u128, u32) {
        let q = self.quota();
        (q.replenish_interval().as_nanos(), q.burst_size().get())
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit} (burst {})", self.count, self.burst)
    }
}

/// One `[[clients]]` entry, checked.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Its name, in logs, metrics and errors.
    pub name: Arc<str>,
    /// The SHA-256 of its token (`None`: it comes with OAuth access
    /// tokens only, named by their client claim).
    pub token: Option<TokenDigest>,
    /// The tools it may call (canonical names, globs).
    pub tools: Vec<Glob>,
    /// Its rate over every tool.
    pub rate: Option<Rate>,
    /// Rates of its own per tool or glob, in the file's order.
    pub tools_rate: Vec<(Glob, Rate)>,
    /// Calls running at once, and the queue behind them.
    pub slots: Option<SlotSpec>,
    /// Whether it may read `/metrics`.
    pub metrics: bool,
}

/// `max_inflight`, `queue`, `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// Calls running at once.
    pub max_inflight: u32,
    /// Calls that may wait for a slot.
    pub queue: u32,
    /// How long one waits.
    pub queue_timeout: Duration,
}

/// A `[[clients]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    name: String,
    token: Option<toml::Value>,
    token_sha256: Option<String>,
    tools: Option<Vec<String>>,
    rate: Option<toml::Value>,
    burst: Option<u32>,
    tools_rate: Option<toml::Table>,
    max_inflight: Option<u32>,
    queue: Option<u32>,
    queue_timeout: Option<String>,
    metrics: Option<bool>,
}

/// Checks every `[[clients]]` entry; the error names the entry
/// (`clients[2] (ci-bot)`) and the key.
///
/// # Errors
///
/// A message naming the entry, the key and what is accepted.
pub fn parse(files: Vec<ClientFile>, oauth: bool) -> Result<Vec<ClientSpec>, String> {
    if files.len() > MAX_CLIENTS {
        return Err(format!(
            "clients: {} entries; accepted at most {MAX_CLIENTS}",
            files.len()
        ));
    }
    let mut out: Vec<ClientSpec> = Vec::with_capacity(files.len());
    let mut names: HashMap<Arc<str>, usize> = HashMap::with_capacity(files.len());
    let mut tokens: HashMap<TokenDigest, usize> = HashMap::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("clients[{i}] ({})", f.name);
        let spec = parse_one(f, oauth).map_err(|m| format!("{at}: {m}"))?;
        if let Some(j) = names.insert(Arc::clone(&spec.name), i) {
            return Err(format!("{at}: name: clients[{j}] has this name too"));
        }
        if let Some(t) = spec.token
            && let Some(j) = tokens.insert(t, i)
        {
            return Err(format!(
                "{at}: token_sha256: clients[{j}] ({}) has the same token; each client needs its own",
                out[j].name
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

fn parse_one(f: ClientFile, oauth: bool) -> Result<ClientSpec, String> {
    let name = f.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | ':'))
    {
        return Err(
            "name: accepted 1 to 64 of A-Z a-z 0-9 _ . - @ : (it appears in logs and metrics)"
                .into(),
        );
    }
    if f.token.is_some() {
        return Err(
            "token: a token in plain text is refused in a file; put its SHA-256 in \
             token_sha256 (`toolplane token hash` prints the line)"
                .into(),
        );
    }
    let token = match f.token_sha256.as_deref() {
        Some(h) => Some(TokenDigest::from_hex(h).map_err(|m| format!("token_sha256: {m}"))?),
        // Its access tokens come from the authorization server.
        None if oauth => None,
        None => {
            return Err("token_sha256: missing (`toolplane token hash` prints the line)".into());
        }
    };
    let tools = f
        .tools
        .ok_or("tools: missing: name the tools this client may call (names or globs; [\"*\"] for every tool)")?
        .iter()
        .map(|g| Glob::parse(g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| format!("tools: {m}"))?;
    let rate = match f.rate {
        Some(v) => Some(Rate::parse(&v, f.burst).map_err(|m| format!("rate: {m}"))?),
        None if f.burst.is_some() => return Err("burst: needs rate".into()),
        None => None,
    };
    let mut tools_rate = Vec::new();
    for (pattern, v) in f.tools_rate.unwrap_or_default() {
        let at = format!("tools_rate.{pattern:?}");
        let glob = Glob::parse(&pattern).map_err(|m| format!("{at}: {m}"))?;
        let r = match &v {
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| !matches!(k.as_str(), "rate" | "burst")) {
                    return Err(format!("{at}.{k}: unknown key: accepted rate, burst"));
                }
                let burst = match t.get("burst") {
                    None => None,
                    Some(toml::Value::Integer(b)) => Some(
                        u32::try_from(*b)
                            .map_err(|_| format!("{at}.burst = {b}: accepted 1..=4294967295"))?,
                    ),
                    Some(o) => {
                        return Err(format!(
                            "{at}.burst: a {}: accepted 1..=4294967295",
                            o.type_str()
                        ));
                    }
                };
                let rate = t.get("rate").ok_or(format!("{at}.rate: missing"))?;
                Rate::parse(rate, burst).map_err(|m| format!("{at}.rate: {m}"))?
            }
            v => Rate::parse(v, None).map_err(|m| format!("{at}: {m}"))?,
        };
        tools_rate.push((glob, r));
    }
    // The most specific rule is the one a tool's calls count against: a
    // name before any glob, then the glob with the most characters that
    // are not wildcards (a table's keys have no order to go by).
    tools_rate.sort_by_key(|(g, _)| {
        let p = g.as_str();
        let literal = p.chars().filter(|c| !matches!(c, '*' | '?')).count();
        (p.contains(['*', '?']), std::cmp::Reverse(literal))
    });
    let slots = match f.max_inflight {
        Some(0) => return Err("max_inflight = 0: accepted 1..=4294967295".into()),
        Some(n) => {
            let queue = f.queue.unwrap_or(DEFAULT_QUEUE);
            if queue > MAX_QUEUE {
                return Err(format!("queue = {queue}: accepted 0..={MAX_QUEUE}"));
            }
            let queue_timeout = match &f.queue_timeout {
                Some(t) => crate::token::parse_duration_in(
                    t,
                    Duration::from_millis(1),
                    Duration::from_secs(3600),
                )
                .map_err(|m| format!("queue_timeout: {m}"))?,
                None => DEFAULT_QUEUE_TIMEOUT,
            };
            Some(SlotSpec {
                max_inflight: n,
                queue,
                queue_timeout,
            })
        }
        None if f.queue.is_some() || f.queue_timeout.is_some() => {
            return Err("queue, queue_timeout: need max_inflight (the calls running at once that a queue waits for)".into());
        }
        None => None,
    };
    Ok(ClientSpec {
        name: Arc::from(name),
        token,
        tools,
        rate,
        tools_rate,
        slots,
        metrics: f.metrics.unwrap_or(false),
    })
}

type Limiter = RateLimiter<Arc<str>, DashMapStateStore<Arc<str>>, DefaultClock>;

/// One rate check: a limiter and this client's key in it.
#[derive(Clone)]
struct Bucket {
    limiter: Arc<Limiter>,
    key: Arc<str>,
    rate: Rate,
}

impl Bucket {
    /// `Err(wait)` when over the rate.
    fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check_key(&self.key)
            .map_err(|n| n.wait_time_from(self.limiter.clock().now()))
    }
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("key", &self.key)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// A client's slots: a fair semaphore of `max_inflight` permits and the
/// bound on calls waiting for one.
#[derive(Debug)]
pub struct Slots {
    spec: Mutex<SlotSpec>,
    permits: Arc<Semaphore>,
}

impl Slots {
    fn spec(&self) -> SlotSpec {
        *self.spec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `spec`: more permits at once, or fewer as calls give theirs
    /// back (those free now are forgotten; the rest are taken, and
    /// forgotten, as they come back).
    fn resize(&self, spec: SlotSpec) {
        let old = std::mem::replace(
            &mut *self.spec.lock().unwrap_or_else(|p| p.into_inner()),
            spec,
        );
        let (from, to) = (old.max_inflight as usize, spec.max_inflight as usize);
        if to > from {
            self.permits.add_permits(to - from);
        } else if from > to {
            let debt = (from - to) - self.permits.forget_permits(from - to);
            if debt > 0
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                let permits = Arc::clone(&self.permits);
                rt.spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(debt as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }
}

/// Bucket bounds of the per-client latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0, 5.0, 30.0,
];

/// A client's numbers: calls by result, in flight, queued, the queue's
/// wait and the calls' latency. Kept by name across reloads.
#[derive(Debug)]
pub struct ClientStats {
    by_result: [AtomicU64; CallResult::ALL.len()],
    in_flight: AtomicU64,
    queued: AtomicU64,
    queue_wait_us: AtomicU64,
    queue_waits: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Default for ClientStats {
    fn default() -> ClientStats {
        ClientStats {
            by_result: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue_wait_us: AtomicU64::new(0),
            queue_waits: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`ClientStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsView {
    /// (result label, count), counts above zero.
    pub by_result: Vec<(&'static str, u64)>,
    /// Calls running (holding a slot, or with no slots to hold).
    pub in_flight: u64,
    /// Calls waiting for a slot.
    pub queued: u64,
    /// Total seconds calls waited in the queue, and how many waited.
    pub queue_wait: (f64, u64),
    /// Cumulative latency buckets (≤ each bound), then the count and sum
    /// in seconds.
    pub latency: (Vec<u64>, u64, f64),
}

impl ClientStats {
    /// One call finished with `result` after `latency` (queue included).
    pub fn finish(&self, result: CallResult, latency: Duration) {
        self.by_result[result as usize].fetch_add(1, Ordering::Relaxed);
        let s = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// The numbers now.
    pub fn view(&self) -> StatsView {
        let by_result = CallResult::ALL
            .iter()
            .zip(&self.by_result)
            .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS.len());
        let mut acc = 0;
        for b in &self.latency[..LATENCY_BUCKETS.len()] {
            acc += b.load(Ordering::Relaxed);
            cumulative.push(acc);
        }
        let count = acc + self.latency[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        StatsView {
            by_result,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            queue_wait: (
                self.queue_wait_us.load(Ordering::Relaxed) as f64 / 1e6,
                self.queue_waits.load(Ordering::Relaxed),
            ),
            latency: (
                cumulative,
                count,
                self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            ),
        }
    }
}

/// One client as served.
#[derive(Debug)]
pub struct Client {
    name: Arc<str>,
    /// Whose MCP sessions are its: the name, and for an OAuth access
    /// token the user (`sub`) too.
    owner: Arc<str>,
    tools: Vec<Glob>,
    /// The tools its OAuth access token's scopes grant (`None`: it came
    /// with a `[[clients]]` token).
    scope: Option<Vec<Glob>>,
    metrics: bool,
    rate: Option<Bucket>,
    tools_rate: Vec<(Glob, Bucket)>,
    slots: Option<Arc<Slots>>,
    stats: Arc<ClientStats>,
}

/// The client a request was authenticated as (a request extension, set
/// by the HTTP edge).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Client>);

/// A call's hold on one of its client's slots (nothing when the client
/// has no `max_inflight`); in flight until dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    stats: Arc<ClientStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a call queued while it waits.
struct Queued<'a>(&'a ClientStats);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Client {
    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether it may read `/metrics`.
    pub fn reads_metrics(&self) -> bool {
        self.metrics
    }

    /// Its numbers.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Whether it may call `tool` (a canonical name): its `tools`, and
    /// its token's scopes when it came with an OAuth access token.
    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.iter().any(|g| g.matches(tool))
            && self
                .scope
                .as_ref()
                .is_none_or(|s| s.iter().any(|g| g.matches(tool)))
    }

    /// Whether it came with an OAuth access token.
    pub fn is_oauth(&self) -> bool {
        self.scope.is_some()
    }

    /// Whose MCP sessions are its (the client, and the user of an OAuth
    /// access token).
    pub fn owner(&self) -> &Arc<str> {
        &self.owner
    }

    /// Whether `tool` is refused by its token's scopes alone (its `tools`
    /// allow it): a wider scope would do.
    pub fn scope_refuses(&self, tool: &str) -> bool {
        self.tools.iter().any(|g| g.matches(tool))
            && self
                .scope
                .as_ref()
                .is_some_and(|s| !s.iter().any(|g| g.matches(tool)))
    }

    /// Its scope, then its rate for `tool` (the most specific
    /// `tools_rate` rule that matches: a name, else the glob with the most
    /// literal characters), then its own rate; each check that passes
    /// takes its cell.
    ///
    /// # Errors
    ///
    /// [`Refusal::OutOfScope`], [`Refusal::RateLimited`].
    pub fn admit(&self, tool: &str) -> Result<(), Refusal> {
        if !self.may_call(tool) {
            return Err(Refusal::OutOfScope {
                client: Arc::clone(&self.name),
                tool: tool.to_string(),
            });
        }
        if let Some((glob, b)) = self.tools_rate.iter().find(|(g, _)| g.matches(tool)) {
            b.check().map_err(|retry_after| Refusal::RateLimited {
                client: Arc::clone(&self.name),
                rule: Some(glob.as_str().to_string()),
                rate: b.rate.to_string(),
                retry_after,
            })?;
        }
        if let Some(b) = &self.rate {
            b.check().map_err(|retry_after| Refusal::RateLimited {
                client: Arc::clone(&self.name),
                rule: None,
                rate: b.rate.to_string(),
                retry_after,
            })?;
        }
        Ok(())
    }

    /// A slot to run in: at once when one is free, else after waiting in
    /// the client's queue (FIFO, bounded, up to `queue_timeout`).
    ///
    /// # Errors
    ///
    /// [`Refusal::QueueFull`], [`Refusal::QueueTimeout`].
    pub async fn slot(&self) -> Result<Slot, Refusal> {
        let stats = Arc::clone(&self.stats);
        let Some(slots) = &self.slots else {
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            return Ok(Slot {
                _permit: None,
                stats,
            });
        };
        let permit = match Arc::clone(&slots.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Counted before the check, so that two callers racing for
                // the last place cannot both take it.
                let before = stats.queued.fetch_add(1, Ordering::Relaxed);
                let _queued = Queued(&stats);
                let spec = slots.spec();
                if before >= u64::from(spec.queue) {
                    return Err(Refusal::QueueFull {
                        client: Arc::clone(&self.name),
                        max_inflight: spec.max_inflight,
                        queue: spec.queue,
                    });
                }
                let started = Instant::now();
                let waited = tokio::time::timeout(
                    spec.queue_timeout,
                    Arc::clone(&slots.permits).acquire_owned(),
                )
                .await;
                stats
                    .queue_wait_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                stats.queue_waits.fetch_add(1, Ordering::Relaxed);
                match waited {
                    Ok(Ok(p)) => p,
                    // Never closed; a timeout either way.
                    Ok(Err(_)) | Err(_) => {
                        return Err(Refusal::QueueTimeout {
                            client: Arc::clone(&self.name),
                            max_inflight: spec.max_inflight,
                            waited: spec.queue_timeout,
                        });
                    }
                }
            }
        };
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permit: Some(permit),
            stats,
        })
    }
}

/// One version of the list: clients by token digest, and in file order.
#[derive(Debug, Default)]
pub struct List {
    by_token: HashMap<TokenDigest, Arc<Client>>,
    /// Entries without a token: OAuth clients, by client id.
    by_oauth_name: HashMap<Arc<str>, Arc<Client>>,
    in_order: Vec<Arc<Client>>,
}

impl List {
    /// Every client, in the file's order.
    pub fn clients(&self) -> &[Arc<Client>] {
        &self.in_order
    }
}

/// What outlives a reload, by client name: its numbers and its slots.
#[derive(Debug)]
struct Kept {
    stats: Arc<ClientStats>,
    slots: Option<Arc<Slots>>,
}

/// The clients served now, replaced whole on reload.
#[derive(Debug)]
pub struct Directory {
    list: RwLock<Arc<List>>,
    limiters: Mutex<HashMap<(u128, u32), Arc<Limiter>>>,
    kept: Mutex<HashMap<Arc<str>, Kept>>,
    unauthorized: AtomicU64,
    /// The numbers of OAuth clients not in the list, by client id, at
    /// most [`MAX_OAUTH_CLIENTS`]; the rest share [`OTHER_OAUTH`].
    oauth_stats: Mutex<HashMap<Arc<str>, Arc<ClientStats>>>,
    /// Counts reloads, for those who announce a client's list changed.
    changed: tokio::sync::watch::Sender<u64>,
}

/// OAuth clients (not in the list) counted each under its own name.
pub const MAX_OAUTH_CLIENTS: usize = 1000;
/// The name the rest are counted under.
pub const OTHER_OAUTH: &str = "(other oauth clients)";

/// Why a request's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is no client's.
    Unknown,
}

impl Directory {
    /// Serves `specs`.
    pub fn new(specs: &[ClientSpec]) -> Directory {
        let d = Directory {
            list: RwLock::default(),
            limiters: Mutex::default(),
            kept: Mutex::default(),
            unauthorized: AtomicU64::new(0),
            oauth_stats: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        };
        d.replace(specs);
        d
    }

    /// The list now.
    pub fn list(&self) -> Arc<List> {
        Arc::clone(&self.list.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The client whose token this is. Unknown tokens are counted and
    /// create nothing.
    ///
    /// # Errors
    ///
    /// [`Unauthorized`].
    pub fn authenticate(&self, token: Option<&str>) -> Result<Arc<Client>, Unauthorized> {
        let found = match token {
            None => Err(Unauthorized::Missing),
            Some(t) if t.len() > MAX_TOKEN => Err(Unauthorized::Unknown),
            Some(t) => {
                let d = TokenDigest::of(t);
                let list = self.list.read().unwrap_or_else(|p| p.into_inner());
                list.by_token.get(&d).cloned().ok_or(Unauthorized::Unknown)
            }
        };
        if found.is_err() {
            self.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The client an OAuth access token names, with the tools its scopes
    /// grant: the list's entry of that name when there is one (its tools,
    /// limits and numbers apply too), else a client of that name with the
    /// scopes' tools alone, no limits, and its numbers kept apart (the
    /// first [`MAX_OAUTH_CLIENTS`] names; the rest together).
    pub fn oauth_client(&self, id: &str, subject: Option<&str>, granted: Vec<Glob>) -> Arc<Client> {
        let owner: Arc<str> = match subject {
            Some(sub) => Arc::from(format!("{id}\0{sub}")),
            None => Arc::from(id),
        };
        let list = self.list();
        // Only an entry without a token is an OAuth client's: an access
        // token does not take the place of a [[clients]] token by naming it.
        if let Some(c) = list.by_oauth_name.get(id) {
            return Arc::new(Client {
                name: Arc::clone(&c.name),
                owner,
                tools: c.tools.clone(),
                scope: Some(granted),
                metrics: c.metrics,
                rate: c.rate.clone(),
                tools_rate: c.tools_rate.clone(),
                slots: c.slots.clone(),
                stats: Arc::clone(&c.stats),
            });
        }
        let (name, stats) = {
            let mut m = self.oauth_stats.lock().unwrap_or_else(|p| p.into_inner());
            match m.get_key_value(id) {
                Some((k, v)) => (Arc::clone(k), Arc::clone(v)),
                None if m.len() < MAX_OAUTH_CLIENTS => {
                    let k: Arc<str> = Arc::from(id);
                    let v: Arc<ClientStats> = Arc::default();
                    m.insert(Arc::clone(&k), Arc::clone(&v));
                    (k, v)
                }
                None => {
                    let k: Arc<str> = Arc::from(OTHER_OAUTH);
                    let v = Arc::clone(m.entry(Arc::clone(&k)).or_default());
                    (k, v)
                }
            }
        };
        Arc::new(Client {
            name,
            owner,
            tools: vec![Glob::parse("*").expect("a valid glob")],
            scope: Some(granted),
            metrics: false,
            rate: None,
            tools_rate: Vec::new(),
            slots: None,
            stats,
        })
    }

    /// The numbers of OAuth clients not in the list, by name.
    pub fn oauth_stats(&self) -> Vec<(Arc<str>, Arc<ClientStats>)> {
        let m = self.oauth_stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, s)| (Arc::clone(k), Arc::clone(s)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Changes at each reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Counts a request refused for its token (an OAuth one).
    pub fn refused(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// The client whose `[[clients]]` token this is, if any, counting
    /// nothing (an OAuth access token is looked up here first).
    pub fn find(&self, token: &str) -> Option<Arc<Client>> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let d = TokenDigest::of(token);
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.by_token.get(&d).cloned()
    }

    /// Requests refused for their token.
    pub fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// Keys held by the rate limiters (bounded by the clients and rules
    /// configured).
    pub fn limiter_keys(&self) -> usize {
        self.limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.len())
            .sum()
    }

    /// Serves `specs` from now on: a client whose rate, rule or slots are
    /// unchanged keeps their state (a reload is not a way to reset a
    /// quota); calls in flight finish with the client they started as.
    /// Returns (added, removed) names.
    pub fn replace(&self, specs: &[ClientSpec]) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let mut bucket = |client: &str, rule: &str, rate: &Rate| {
            let limiter = limiters
                .entry(rate.quota_key())
                .or_insert_with(|| Arc::new(RateLimiter::dashmap(rate.quota())));
            Bucket {
                limiter: Arc::clone(limiter),
                key: Arc::from(format!("{client}\0{rule}")),
                rate: rate.clone(),
            }
        };
        let mut list = List::default();
        for s in specs {
            let k = kept.entry(Arc::clone(&s.name)).or_insert_with(|| Kept {
                stats: Arc::default(),
                slots: None,
            });
            match (&k.slots, s.slots) {
                // The same semaphore, resized: calls running and waiting
                // keep counting against the new bound.
                (Some(x), Some(spec)) => x.resize(spec),
                (_, spec) => {
                    k.slots = spec.map(|spec| {
                        Arc::new(Slots {
                            spec: Mutex::new(spec),
                            permits: Arc::new(Semaphore::new(spec.max_inflight as usize)),
                        })
                    });
                }
            }
            let client = Arc::new(Client {
                name: Arc::clone(&s.name),
                owner: Arc::clone(&s.name),
                tools: s.tools.clone(),
                scope: None,
                metrics: s.metrics,
                rate: s.rate.as_ref().map(|r| bucket(&s.name, "", r)),
                tools_rate: s
                    .tools_rate
                    .iter()
                    .map(|(g, r)| (g.clone(), bucket(&s.name, g.as_str(), r)))
                    .collect(),
                slots: k.slots.clone(),
                stats: Arc::clone(&k.stats),
            });
            match s.token {
                Some(t) => list.by_token.insert(t, Arc::clone(&client)),
                None => list
                    .by_oauth_name
                    .insert(Arc::clone(&s.name), Arc::clone(&client)),
            };
            list.in_order.push(client);
        }
        let old = std::mem::replace(
            &mut *self.list.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(list),
        );
        let now: HashSet<Arc<str>> = specs.iter().map(|s| Arc::clone(&s.name)).collect();
        let before: HashSet<Arc<str>> = old.in_order.iter().map(|c| Arc::clone(&c.name)).collect();
        kept.retain(|name, _| now.contains(name));
        drop(old);
        // Limiters no client uses go; the rest forget keys whose state is
        // that of a fresh key (removed clients' among them).
        limiters.retain(|_, l| Arc::strong_count(l) > 1);
        for l in limiters.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let mut added: Vec<Arc<str>> = now.difference(&before).cloned().collect();
        let mut removed: Vec<Arc<str>> = before.difference(&now).cloned().collect();
        added.sort();
        removed.sort();
        self.changed.send_modify(|v| *v += 1);
        (added, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<Vec<ClientSpec>, String> {
        #[derive(Deserialize)]
        struct F {
            clients: Vec<ClientFile>,
        }
        parse(
            toml::from_str::<F>(text)
                .map_err(|e| e.to_string())?
                .clients,
            false,
        )
    }

    const A: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"; // "a"
    const B: &str = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"; // "b"

    #[test]
    fn a_client_list_reads_with_its_defaults() {
        let c = spec(&format!(
            r#"
            [[clients]]
            name = "bot"
            token_sha256 = "{A}"
            tools = ["echo", "fs.*"]
            rate = "600/m"
            max_inflight = 2
            [clients.tools_rate]
            "fs.*" = {{ rate = 5, burst = 2 }}
            echo = 0.5
            "#
        ))
        .unwrap();
        let c = &c[0];
        assert_eq!(&*c.name, "bot");
        assert!(c.token.unwrap().matches("a"));
        let r = c.rate.as_ref().unwrap();
        assert_eq!(
            (r.count, r.per, r.burst.get()),
            (600.0, Duration::from_secs(60), 600)
        );
        assert_eq!(
            c.slots,
            Some(SlotSpec {
                max_inflight: 2,
                queue: DEFAULT_QUEUE,
                queue_timeout: DEFAULT_QUEUE_TIMEOUT
            })
        );
        let rules: Vec<(&str, u32)> = c
            .tools_rate
            .iter()
            .map(|(g, r)| (g.as_str(), r.burst.get()))
            .collect();
        assert_eq!(rules, [("echo", 1), ("fs.*", 2)]);
        assert!(!c.metrics);
    }

    #[test]
    fn every_mistake_names_the_client_and_the_key() {
        let cases = [
            (
                "name = \"x\"\ntoken = \"plain\"\ntools = [\"*\"]".to_string(),
                "clients[0] (x): token: a token in plain text",
            ),
            (
                "name = \"x\"\ntools = [\"*\"]".into(),
                "clients[0] (x): token_sha256: missing",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\""),
                "clients[0] (x): tools: missing",
            ),
            (
                format!("name = \"x y\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]"),
                "clients[0] (x y): name: accepted",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"a b\"]"),
                "clients[0] (x): tools: \"a b\"",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nrate = 0"),
                "clients[0] (x): rate: 0/s: accepted from 1 a day",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nrate = \"5/d\""),
                "clients[0] (x): rate: \"5/d\"",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nburst = 5"),
                "clients[0] (x): burst: needs rate",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nqueue = 5"),
                "clients[0] (x): queue, queue_timeout: need max_inflight",
            ),
            (
                format!("name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nmax_inflight = 0"),
                "clients[0] (x): max_inflight = 0",
            ),
            (
                format!(
                    "name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nmax_inflight = 1\nqueue_timeout = \"soon\""
                ),
                "clients[0] (x): queue_timeout: \"soon\"",
            ),
            (
                format!(
                    "name = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\n[clients.tools_rate]\necho = {{ rate = 1, brust = 2 }}"
                ),
                "clients[0] (x): tools_rate.\"echo\".brust: unknown key",
            ),
        ];
        for (body, want) in cases {
            let e = spec(&format!("[[clients]]\n{body}")).unwrap_err();
            assert!(e.starts_with(want), "{body}\n  gave: {e}\n  want: {want}");
        }
        let two = |n1: &str, t1: &str, n2: &str, t2: &str| {
            spec(&format!(
                "[[clients]]\nname = \"{n1}\"\ntoken_sha256 = \"{t1}\"\ntools = [\"*\"]\n\
                 [[clients]]\nname = \"{n2}\"\ntoken_sha256 = \"{t2}\"\ntools = [\"*\"]\n"
            ))
        };
        assert!(
            two("x", A, "x", B)
                .unwrap_err()
                .contains("clients[1] (x): name: clients[0] has this name too")
        );
        assert!(
            two("x", A, "y", A)
                .unwrap_err()
                .contains("clients[1] (y): token_sha256: clients[0] (x) has the same token")
        );
    }

    fn directory(text: &str) -> Directory {
        Directory::new(&spec(text).unwrap())
    }

    #[test]
    fn a_token_finds_its_client_and_unknown_ones_leave_no_trace() {
        let d = directory(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"echo\"]\nrate = 1000\n"
        ));
        assert_eq!(&**d.authenticate(Some("a")).unwrap().name(), "a");
        assert_eq!(d.authenticate(None).unwrap_err(), Unauthorized::Missing);
        let c = d.authenticate(Some("a")).unwrap();
        c.admit("echo").unwrap();
        let keys = d.limiter_keys();
        for i in 0..10_000 {
            assert_eq!(
                d.authenticate(Some(&format!("guess-{i}"))).unwrap_err(),
                Unauthorized::Unknown
            );
        }
        assert_eq!(d.limiter_keys(), keys, "unknown tokens made limiter state");
        assert_eq!(d.unauthorized(), 10_001);
        let long = "x".repeat(MAX_TOKEN + 1);
        assert_eq!(
            d.authenticate(Some(&long)).unwrap_err(),
            Unauthorized::Unknown
        );
    }

    #[test]
    fn the_most_specific_tool_rate_applies_whatever_the_order() {
        let d = directory(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\n\
             [clients.tools_rate]\n\"hash.sha256\" = \"1/h\"\n\"hash.*\" = \"100/s\"\n\"*\" = \"1000/s\"\n"
        ));
        let c = d.authenticate(Some("a")).unwrap();
        c.admit("hash.sha256").unwrap();
        match c.admit("hash.sha256").unwrap_err() {
            Refusal::RateLimited { rule, .. } => assert_eq!(rule.as_deref(), Some("hash.sha256")),
            e => panic!("{e}"),
        }
        c.admit("hash.md5").unwrap();
        c.admit("hash.md5").unwrap();
    }

    #[test]
    fn rates_that_would_overflow_the_limiter_are_refused() {
        for (rate, want) in [
            ("rate = 1e-300", "rate: "),
            ("rate = 1e-12", "rate: "),
            ("rate = \"1e-20/h\"", "rate: "),
            ("rate = \"nan/s\"", "rate: "),
            (
                "rate = \"1/h\"\nburst = 4000000000",
                "rate: burst = 4000000000",
            ),
        ] {
            let e = spec(&format!(
                "[[clients]]\nname = \"x\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\n{rate}\n"
            ))
            .unwrap_err();
            assert!(
                e.starts_with(&format!("clients[0] (x): {want}")),
                "{rate}: {e}"
            );
        }
        // The slowest and the largest accepted still work.
        let d = directory(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nrate = \"1/h\"\nburst = 2000000\n\
             [clients.tools_rate]\nslow = \"0.5/h\"\n"
        ));
        let c = d.authenticate(Some("a")).unwrap();
        for _ in 0..100 {
            c.admit("echo").unwrap();
        }
    }

    #[test]
    fn scope_then_tool_rate_then_client_rate() {
        let d = directory(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"echo\", \"fs.*\"]\n\
             rate = \"3/h\"\n[clients.tools_rate]\n\"fs.*\" = \"1/h\"\n"
        ));
        let c = d.authenticate(Some("a")).unwrap();
        let e = c.admit("sleep").unwrap_err();
        assert_eq!(
            e.to_string(),
            "client \"a\" may not call tool \"sleep\" (clients.tools)"
        );
        c.admit("fs.read").unwrap();
        let e = c.admit("fs.write").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("client \"a\" is over its rate for \"fs.*\", 1/h (burst 1) (clients.tools_rate): retry in "), "{msg}");
        assert!(
            e.retry_after() > Duration::from_secs(3000),
            "{:?}",
            e.retry_after()
        );
        // The client's burst of 3: fs.read took one.
        c.admit("echo").unwrap();
        c.admit("echo").unwrap();
        let e = c.admit("echo").unwrap_err().to_string();
        assert!(
            e.starts_with("client \"a\" is over its rate, 3/h (burst 3) (clients.rate)"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_keeps_quotas_and_drops_removed_clients() {
        let one = format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\nrate = \"1/h\"\n"
        );
        let d = directory(&one);
        d.authenticate(Some("a")).unwrap().admit("echo").unwrap();
        let two =
            format!("{one}[[clients]]\nname = \"b\"\ntoken_sha256 = \"{B}\"\ntools = [\"*\"]\n");
        let (added, removed) = d.replace(&spec(&two).unwrap());
        assert_eq!((added.len(), removed.len()), (1, 0));
        // Still over: the reload did not reset a's quota.
        assert!(d.authenticate(Some("a")).unwrap().admit("echo").is_err());
        assert!(d.authenticate(Some("b")).is_ok());
        let only_b =
            format!("[[clients]]\nname = \"b\"\ntoken_sha256 = \"{B}\"\ntools = [\"*\"]\n");
        let (_, removed) = d.replace(&spec(&only_b).unwrap());
        assert_eq!(removed.iter().map(|n| &**n).collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            d.authenticate(Some("a")).unwrap_err(),
            Unauthorized::Unknown
        );
        assert_eq!(d.limiter_keys(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_resizes_the_slots_it_does_not_replace_them() {
        let text = |n: u32, q: u32| {
            format!(
                "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\n\
                 max_inflight = {n}\nqueue = {q}\nqueue_timeout = \"50ms\"\n"
            )
        };
        let d = directory(&text(1, 0));
        let held = d.authenticate(Some("a")).unwrap().slot().await.unwrap();
        // Only the queue changes: the call running still holds the one slot.
        d.replace(&spec(&text(1, 5)).unwrap());
        let c = d.authenticate(Some("a")).unwrap();
        assert!(matches!(
            c.slot().await.unwrap_err(),
            Refusal::QueueTimeout { .. }
        ));
        // Two slots: one more runs beside it.
        d.replace(&spec(&text(2, 5)).unwrap());
        let c = d.authenticate(Some("a")).unwrap();
        let second = c.slot().await.unwrap();
        assert_eq!(c.stats().view().in_flight, 2);
        // Back to one: both finish, then one at a time.
        d.replace(&spec(&text(1, 5)).unwrap());
        drop((held, second));
        tokio::task::yield_now().await;
        let one = c.slot().await.unwrap();
        assert!(matches!(
            c.slot().await.unwrap_err(),
            Refusal::QueueTimeout { .. }
        ));
        drop(one);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn slots_queue_in_order_and_refuse_beyond_the_queue() {
        let d = directory(&format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{A}\"\ntools = [\"*\"]\n\
             max_inflight = 1\nqueue = 1\nqueue_timeout = \"50ms\"\n"
        ));
        let c = d.authenticate(Some("a")).unwrap();
        let held = c.slot().await.unwrap();
        let c2 = Arc::clone(&c);
        let waiter = tokio::spawn(async move { c2.slot().await.map(drop) });
        tokio::task::yield_now().await;
        assert_eq!(c.stats().view().queued, 1);
        let full = c.slot().await.unwrap_err();
        assert!(matches!(full, Refusal::QueueFull { .. }), "{full}");
        drop(held);
        waiter.await.unwrap().unwrap();
        let held = c.slot().await.unwrap();
        let e = c.slot().await.unwrap_err();
        assert!(matches!(e, Refusal::QueueTimeout { .. }), "{e}");
        assert_eq!(c.stats().view().in_flight, 1);
        drop(held);
        let v = c.stats().view();
        assert_eq!((v.in_flight, v.queued, v.queue_wait.1), (0, 0, 2));
    }
}
