//! A node of the cluster: its connection, the stream, consumers and
//! buckets it checks at start, the calls it publishes (ingress) and the
//! calls it pulls and runs (docs/cluster.md, "The call path").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::ClusterError;
use crate::names::{self, header};
use crate::options::Options;
use crate::wire::Outcome;

/// How long a result stays in the results bucket: longer than the
/// duplicate window and any call's wait.
const RESULT_AGE: Duration = Duration::from_secs(600);
/// How long a call stays in the stream at most: a call whose last
/// delivery was lost with its node would otherwise stay for good (no
/// caller waits this long; a call answered is gone at once).
const CALL_AGE: Duration = Duration::from_secs(24 * 3600);
/// The stream's duplicate window: a publish retried within it is stored
/// once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How often a node says it is alive, and how long the bucket keeps it.
const HEARTBEAT: Duration = Duration::from_secs(2);
const NODE_AGE: Duration = Duration::from_secs(10);
/// How often the consumers' state is read for `/metrics`.
const SAMPLE: Duration = Duration::from_secs(5);
/// How long one pull request waits for a message. A pull the server
/// lost (it restarted, its JetStream was not up yet) is given up a second
/// after this, and asked again.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
const PULL_GIVE_UP: Duration = Duration::from_secs(3);
/// Keyless calls handed out at once, cluster-wide (each node pulls no more
/// than its own `max_inflight`).
const ANY_MAX_ACK_PENDING: i64 = 65_536;
/// How long a call waits for a lost connection to NATS to come back
/// before it is refused.
const RECONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long a request to JetStream (a publish's ack, a bucket's read or
/// write) is waited for, once the node has started.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write the results bucket does not take is tried again.
const STORE_PATIENCE: Duration = Duration::from_secs(10);
/// How long a publish the stream does not answer is tried again.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(6);
/// The most keyless calls one pull asks for.
const ANY_BATCH: usize = 256;
/// Room left in a NATS message for the subject and headers of an answer
/// (its payload is the rest of the server's `max_payload`).
const ANSWER_HEADROOM: usize = 1024;

/// A call to publish.
#[derive(Debug)]
pub struct Request<'a> {
    /// The call's id (unique: the stream de-duplicates by it).
    pub call: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The ordering key.
    pub key: Option<u64>,
    /// The input, as the caller sent it.
    pub input: &'a [u8],
    /// Who called.
    pub client: &'a str,
    /// How long the caller waits for the answer.
    pub wait: Duration,
    /// Not started after this long (the caller would have stopped
    /// waiting before it could finish).
    pub start_by: Duration,
    /// W3C `traceparent` and `tracestate` to pass on.
    pub traceparent: Option<String>,
    /// See `traceparent`.
    pub tracestate: Option<String>,
}

/// A call pulled from the stream, for this node's engine.
#[derive(Debug, Clone)]
pub struct Job {
    /// The call's id.
    pub call: String,
    /// The tool.
    pub tool: String,
    /// The ordering key.
    pub key: Option<u64>,
    /// The input.
    pub input: Bytes,
    /// Who called, as the node that took the call named them.
    pub client: String,
    /// The node that took the call.
    pub ingress: String,
    /// W3C trace context from the node that took the call.
    pub traceparent: Option<String>,
    /// See `traceparent`.
    pub tracestate: Option<String>,
    /// Which delivery this is (1 the first).
    pub delivered: i64,
    /// Its place in the stream: calls of one key run in this order.
    pub sequence: u64,
}

/// What this node's engine made of a job.
#[derive(Debug)]
pub enum Verdict {
    /// It ran (or failed): its result, as the server counts it (`ok`,
    /// `error`, ...), the message when it failed, and its output.
    Done {
        /// The result's label.
        result: String,
        /// Why it failed.
        message: String,
        /// The tool's output.
        output: Bytes,
    },
    /// Not run: the engine is full or stopping, or lacks the tool. The
    /// call goes back to the stream, to be delivered after `after` (here
    /// or elsewhere).
    Retry {
        /// The delay.
        after: Duration,
        /// The result the last delivery answers (`busy`, `unknown_tool`).
        result: &'static str,
        /// Why, for the last delivery's answer.
        why: String,
    },
}

/// The engine a node runs pulled calls on.
pub trait Execute: Send + Sync + 'static {
    /// Runs a job; never panics for a bad job (answers it).
    fn execute(&self, job: Job) -> impl std::future::Future<Output = Verdict> + Send;
    /// Whether running `tool` twice could do harm: such a call gets a run
    /// marker first, and a second delivery after a crash answers
    /// "outcome unknown" instead of running again.
    fn protected(&self, tool: &str) -> impl std::future::Future<Output = bool> + Send;
}

/// What this node has done for the cluster, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls this node published (accepted by the stream).
    pub published: AtomicU64,
    /// Publishes the stream refused.
    pub refused: AtomicU64,
    /// Calls published here whose answer did not come in time.
    pub no_answer: AtomicU64,
    /// Answers found in the results bucket after the wait (the reply was
    /// lost).
    pub answered_from_store: AtomicU64,
    /// Calls this node pulled.
    pub pulled: AtomicU64,
    /// Of those, deliveries after the first (a node died, was paused, or
    /// sent the call back).
    pub redelivered: AtomicU64,
    /// Deliveries whose result was stored already: answered again, not run.
    pub duplicates_suppressed: AtomicU64,
    /// Results this node made whose call another node had answered first.
    pub lost_races: AtomicU64,
    /// Calls sent back to the stream (engine full or stopping).
    pub sent_back: AtomicU64,
    /// Answers that came for no waiting call (late, or after a restart).
    pub stale_answers: AtomicU64,
    /// Calls answered "outcome unknown": run markers found.
    pub outcome_unknown: AtomicU64,
    /// Calls this node is running for the cluster now.
    pub running: AtomicU64,
    /// How long calls this node took waited for their answer.
    pub latency: Latency,
}

/// Bucket bounds of [`Latency`], in seconds.
pub const LATENCY_BOUNDS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A latency histogram on fixed bounds (Prometheus's form): a count per
/// bucket, the sum and the count; recorded without a lock.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Latency {
    fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts at each bound (`le`), then the sum (seconds) and
    /// the count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        // The count first: a record between the reads then shows in a
        // bucket and not the count, and the count is raised to the last
        // bucket, so the histogram stays monotonic (+Inf >= every le).
        let count = self.count.load(Ordering::Relaxed);
        let mut acc = 0;
        let le = LATENCY_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                acc += n.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        let count = count.max(acc);
        (le, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, count)
    }
}

/// One node's view of the cluster.
pub struct Cluster {
    opts: Options,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    results: kv::Store,
    nodes: kv::Store,
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    stats: Stats,
    budget: Arc<Semaphore>,
    /// Set once: this node pulls no more.
    stop: tokio::sync::watch::Sender<bool>,
    /// Pullers running, and keyless calls (or drained pulls) held.
    pullers: AtomicUsize,
    holding: AtomicUsize,
    server: String,
    /// Bumped at each reconnection, once JetStream answers again.
    rejoined: tokio::sync::watch::Sender<u64>,
    /// Each consumer's state, read every few seconds for `/metrics`.
    consumers: Mutex<Vec<crate::status::ConsumerStatus>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.opts.node)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Says what happened to the connection, once, in words; a reconnection
/// bumps the generation.
fn connection_event(
    generation: &tokio::sync::watch::Sender<u64>,
    first: &AtomicBool,
    event: async_nats::Event,
) {
    match event {
        async_nats::Event::Connected => {
            if !first.swap(false, Ordering::AcqRel) {
                tracing::info!("cluster: reconnected to NATS");
            }
            generation.send_modify(|g| *g += 1);
        }
        async_nats::Event::Disconnected => {
            tracing::warn!(
                "cluster: the connection to NATS is lost; reconnecting (calls wait up to 2s for it, then are refused)"
            );
        }
        async_nats::Event::LameDuckMode => {
            tracing::warn!("cluster: the NATS server is going away (lame duck mode)");
        }
        async_nats::Event::SlowConsumer(_) => {
            tracing::warn!("cluster: NATS says this node reads too slowly; messages were dropped");
        }
        async_nats::Event::ServerError(e) => tracing::warn!("cluster: NATS server error: {e}"),
        async_nats::Event::ClientError(e) => tracing::debug!("cluster: NATS client error: {e}"),
        async_nats::Event::Draining | async_nats::Event::Closed => {}
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn get<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
}

/// A call message's id, the reply subject of the node that took it, and
/// its tool; none when one is missing. Answers go only to a node's reply
/// subject: a call naming any other subject is not run (it would send its
/// output there).
fn addressed(msg: &jetstream::Message) -> Option<(&str, &str, &str)> {
    let h = msg.headers.as_ref();
    Some((
        get(h, "Nats-Msg-Id")?,
        get(h, header::REPLY).filter(|r| names::ingress_of(r).is_some())?,
        get(h, header::TOOL)?,
    ))
}

impl Cluster {
    /// Connects, checks the server, and makes (or checks) the stream, its
    /// consumers and the buckets; starts listening for this node's
    /// answers and saying that it lives. Pulls nothing until [`serve`].
    ///
    /// [`serve`]: Cluster::serve
    ///
    /// # Errors
    ///
    /// A setting out of range, an unreachable server, a server too old or
    /// without JetStream, a stream or consumer made with other settings, a
    /// node of the same name alive: each named. Never a fallback to one
    /// node.
    pub async fn connect(opts: Options) -> Result<Arc<Cluster>, ClusterError> {
        // Each reconnection bumps the generation: pulls open on the old
        // connection are gone from the server, and are asked again.
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let events = generation.clone();
        let first = Arc::new(AtomicBool::new(true));
        let co = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let (events, first) = (events.clone(), Arc::clone(&first));
                async move { connection_event(&events, &first, event) }
            })
            .max_reconnects(None::<usize>);
        let (client, server, _) = crate::server::open(&opts, co).await?;
        let js = jetstream::new(client.clone());
        let stream = ensure_stream(&js, &opts).await?;
        ensure_consumers(&stream, &opts).await?;
        // Made and checked with the client's patience (5 s); from here on,
        // a request the server does not answer is given up sooner and
        // tried again (a publish; a bucket read or write goes back to the
        // stream), so that a leader's election is waited out in steps.
        let mut fast = js.clone();
        fast.set_timeout(REQUEST_TIMEOUT);
        let results = ensure_bucket(&js, &fast, names::RESULTS, RESULT_AGE, &opts).await?;
        let nodes = ensure_bucket(&js, &fast, names::NODES, NODE_AGE, &opts).await?;
        let js = fast;
        let cluster = Arc::new(Cluster {
            // Partitions run one call at a time each; keyless calls share
            // the rest.
            budget: Arc::new(Semaphore::new(
                (opts.max_inflight - opts.partitions) as usize,
            )),
            opts,
            client,
            js,
            stream,
            results,
            nodes,
            waiters: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            stop: tokio::sync::watch::channel(false).0,
            pullers: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            server,
            rejoined: tokio::sync::watch::channel(0).0,
            consumers: Mutex::new(Vec::new()),
        });
        cluster.join().await?;
        let sub = cluster
            .client
            .subscribe(names::reply(&cluster.opts.node))
            .await
            .map_err(|e| ClusterError::js("subscribing to this node's answers", e))?;
        tokio::spawn(Arc::clone(&cluster).answers(sub));
        tokio::spawn(Arc::clone(&cluster).rejoin(generation.subscribe()));
        tokio::spawn(Arc::clone(&cluster).heartbeat());
        tokio::spawn(Arc::clone(&cluster).sample());
        Ok(cluster)
    }

    /// This node's settings.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// What this node has done for the cluster.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The server this node is connected to (host:port).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Refuses to start beside a live node of the same name (its answers
    /// would go to either), then says this one lives. A node of that
    /// name that said so lately is watched for two heartbeats: one that
    /// died (a restart after `kill -9`) says nothing more, and this one
    /// takes its place.
    async fn join(&self) -> Result<(), ClusterError> {
        let name = &self.opts.node;
        if let Ok(Some(entry)) = self.nodes.entry(name.as_str()).await
            && entry.operation == kv::Operation::Put
        {
            // The bucket's clock, not this node's: the entry's age as the
            // server's own timestamps tell it.
            let age = SystemTime::now()
                .duration_since(SystemTime::from(entry.created))
                .unwrap_or_default();
            if age < HEARTBEAT * 3 {
                let watch_until = tokio::time::Instant::now() + HEARTBEAT * 2 + HEARTBEAT / 4;
                while tokio::time::Instant::now() < watch_until {
                    tokio::time::sleep(HEARTBEAT / 8).await;
                    if let Ok(Some(now)) = self.nodes.entry(name.as_str()).await
                        && now.revision != entry.revision
                        && now.operation == kv::Operation::Put
                    {
                        return Err(ClusterError::Setting(format!(
                            "cluster.node: a node named {name:?} is alive in the cluster (it says so every {}): name this one otherwise",
                            humantime::format_duration(HEARTBEAT)
                        )));
                    }
                }
            }
        }
        self.beat().await
    }

    async fn beat(&self) -> Result<(), ClusterError> {
        let v = serde_json::json!({
            "node": self.opts.node,
            "version": env!("CARGO_PKG_VERSION"),
            "running": self.stats.running.load(Ordering::Relaxed),
            "partitions": self.opts.partitions,
        });
        self.nodes
            .put(self.opts.node.as_str(), Bytes::from(v.to_string()))
            .await
            .map(|_| ())
            .map_err(|e| {
                ClusterError::js(
                    format!("writing node {} to bucket {}", self.opts.node, names::NODES),
                    e,
                )
            })
    }

    /// After each reconnection, once JetStream answers (a restarted
    /// server recovers its streams first), tells the pullers to ask again:
    /// a pull asked before may have died with the old server.
    async fn rejoin(self: Arc<Self>, mut reconnected: tokio::sync::watch::Receiver<u64>) {
        while reconnected.changed().await.is_ok() {
            let since = tokio::time::Instant::now();
            while let Err(why) = crate::server::jetstream_info(&self.js).await {
                if since.elapsed() > Duration::from_secs(30) {
                    tracing::warn!(
                        "cluster: JetStream does not answer since the reconnection: {why}"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.rejoined.send_modify(|g| *g += 1);
        }
    }

    /// Each consumer's state (waiting, in flight, delivered again, the
    /// oldest waiting), as of the last read (every few seconds).
    pub fn consumers(&self) -> Vec<crate::status::ConsumerStatus> {
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn sample(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopping() {
            tick.tick().await;
            if let Ok((rows, _)) =
                crate::status::consumers(&self.stream, self.opts.partitions, true).await
            {
                *self.consumers.lock().unwrap_or_else(|p| p.into_inner()) = rows;
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A stopping node stays in the bucket while it drains (its
            // name is taken until then); `close` removes it.
            if self.stopping() {
                return;
            }
            if let Err(e) = self.beat().await {
                tracing::debug!(error = %e, "cluster heartbeat failed");
            }
        }
    }

    /// Answers to calls published here: each goes to its waiting caller.
    async fn answers(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(m) = sub.next().await {
            match Outcome::decode(&m.payload) {
                Ok(o) => {
                    let tx = self
                        .waiters
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&o.call);
                    match tx {
                        Some(tx) => {
                            let _ = tx.send(o);
                        }
                        None => {
                            self.stats.stale_answers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "an answer that cannot be read was dropped"),
            }
        }
    }

    /// Publishes a call and waits for its one answer.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotAccepted`]: the stream did not take it (nothing
    /// ran); [`ClusterError::NoAnswer`]: it was taken, and no answer came
    /// within `wait`, nor is one stored.
    pub async fn call(&self, r: Request<'_>) -> Result<Outcome, ClusterError> {
        self.submit(r).await?.answer().await
    }

    /// Publishes a call, and returns once the stream has stored it (its
    /// place among its key's calls is taken then): the answer is awaited
    /// with [`Pending::answer`]. A caller may submit a key's next call
    /// before the last is answered; they run in the order submitted.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotAccepted`]: the stream did not take it (nothing
    /// ran); [`ClusterError::Unconfirmed`]: sent, not confirmed.
    pub async fn submit(&self, r: Request<'_>) -> Result<Pending<'_>, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.call.to_string(), tx);
        let waiting = Waiting {
            waiters: &self.waiters,
            call: r.call.to_string(),
        };
        let started = tokio::time::Instant::now();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", r.call);
        h.insert(header::REPLY, names::reply(&self.opts.node).as_str());
        h.insert(header::TOOL, r.tool);
        h.insert(header::CLIENT, r.client);
        h.insert(
            header::START_BY,
            (now_ms() + r.start_by.as_millis() as u64)
                .to_string()
                .as_str(),
        );
        let subject = match r.key {
            Some(k) => {
                h.insert(header::KEY, k.to_string().as_str());
                crate::partition::subject(crate::partition::of(k, self.opts.partitions))
            }
            None => names::ANY.to_string(),
        };
        if let Some(t) = &r.traceparent {
            h.insert(header::TRACEPARENT, t.as_str());
        }
        if let Some(t) = &r.tracestate {
            h.insert(header::TRACESTATE, t.as_str());
        }
        let refused = |source: Option<crate::error::Source>, reason: String| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            ClusterError::NotAccepted { reason, source }
        };
        // A server restarting, or a connection moving to another server
        // of a NATS cluster, takes a moment: the call waits for it a
        // little, then is refused (nothing sent, nothing ran).
        let reconnect = RECONNECT_WAIT.min(r.wait);
        let waiting_since = tokio::time::Instant::now();
        while !self.connected() && waiting_since.elapsed() < reconnect {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self.connected() {
            return Err(refused(
                None,
                format!(
                    "this node is not connected to NATS ({})",
                    self.opts.nats_shown()
                ),
            ));
        }
        // A publish with no answer from the stream (its leader moving in a
        // NATS cluster, a server restarting) is tried again for a while
        // with the same call id: the stream stores one of them.
        let payload = Bytes::copy_from_slice(r.input);
        let patience = tokio::time::Instant::now() + PUBLISH_PATIENCE.min(r.wait);
        let mut backoff = Duration::from_millis(25);
        // Whether an earlier try may have been stored (sent, its ack lost).
        let mut sent = false;
        loop {
            let ack = match self
                .js
                .publish_with_headers(subject.clone(), h.clone(), payload.clone())
                .await
            {
                Ok(f) => f.await.map_err(|e| (e, true)),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(refused(
                        None,
                        format!(
                            "the call's input is over the NATS server's max_payload ({} bytes)",
                            self.client.server_info().max_payload
                        ),
                    ));
                }
                Err(e) => Err((e, false)),
            };
            let (e, reached) = match ack {
                // A call id is used once: another publish took this one
                // (within the duplicate window), and this caller's call is
                // not stored. After a try of this call's own that may have
                // been stored, it is that one.
                Ok(a) if a.duplicate && !sent => {
                    return Err(refused(
                        None,
                        format!("call id {} was published already", r.call),
                    ));
                }
                Ok(_) => break,
                Err(e) => e,
            };
            let text = e.to_string();
            let limit = if text.contains("maximum messages") {
                Some(format!(
                    "the stream holds cluster.max_pending ({}) calls",
                    self.opts.max_pending
                ))
            } else if text.contains("maximum bytes") {
                Some(format!(
                    "the stream holds cluster.max_pending_bytes ({}) of calls",
                    self.opts.max_pending_bytes
                ))
            } else {
                None
            };
            // Sent and not confirmed (no ack in time, the connection
            // dropped after sending): it may be stored.
            sent |= reached
                && matches!(
                    e.kind(),
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                );
            if limit.is_some() || tokio::time::Instant::now() + backoff >= patience {
                if sent {
                    self.stats.no_answer.fetch_add(1, Ordering::Relaxed);
                    return Err(ClusterError::Unconfirmed {
                        call: r.call.to_string(),
                        source: Box::new(e),
                    });
                }
                let reason = limit.unwrap_or(text);
                return Err(refused(Some(Box::new(e)), reason));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(400));
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(Pending {
            started,
            cluster: self,
            rx,
            wait: r.wait,
            waiting,
        })
    }

    /// Starts pulling: one puller per partition, one for keyless calls,
    /// each asking only while this node's budget has room.
    pub fn serve<E: Execute>(self: &Arc<Self>, exec: Arc<E>) {
        for p in 0..self.opts.partitions {
            self.spawn_puller(names::consumer(p), 1, Arc::clone(&exec));
        }
        self.spawn_puller(names::ANY_CONSUMER.into(), ANY_BATCH, exec);
    }

    fn spawn_puller<E: Execute>(self: &Arc<Self>, name: String, batch: usize, exec: Arc<E>) {
        let me = Arc::clone(self);
        me.pullers.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let pullers = Arc::clone(&me);
            let _left = Counted(&pullers.pullers);
            me.pull(name, batch, exec).await;
        });
    }

    /// Stops pulling: the open pulls end, and what they still bring goes
    /// back to the stream at once, for another node; calls already
    /// running finish (or go back to the stream if the engine refuses
    /// them).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops pulling (see [`stop`](Cluster::stop)), waits up to `within`
    /// for the pulls to end (an open pull ends within 3 s) and the calls
    /// this node holds to be answered or sent back, says this node has
    /// left, and flushes what is still to be sent to NATS (a second at
    /// most). Returns whether the pulls and held calls ended in time.
    pub async fn close(&self, within: Duration) -> bool {
        self.stop();
        let until = tokio::time::Instant::now() + within;
        let mut ended = false;
        while tokio::time::Instant::now() < until {
            if self.pullers.load(Ordering::Acquire) == 0
                && self.holding.load(Ordering::Acquire) == 0
            {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.nodes.delete(self.opts.node.as_str()).await;
            let _ = self.client.flush().await;
        })
        .await;
        ended
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once [`stop`](Cluster::stop) has been called (at once if
    /// it was).
    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    async fn pull<E: Execute>(self: Arc<Self>, name: String, batch: usize, exec: Arc<E>) {
        let mut consumer: consumer::PullConsumer = loop {
            if self.stopping() {
                return;
            }
            match self.stream.get_consumer(&name).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "cannot read a cluster consumer; trying again in 1s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = self.stopped() => return,
                    }
                }
            }
        };
        // A partition has its own one call; keyless calls take what the
        // node's budget has left.
        let budget = if batch == 1 {
            Arc::new(Semaphore::new(1))
        } else {
            Arc::clone(&self.budget)
        };
        let mut rejoined = false;
        // Pulls stay short for a while after a reconnection: a pull that a
        // restarted 2.9 server took while recovering may not be served.
        let mut short_until = tokio::time::Instant::now();
        while !self.stopping() {
            if std::mem::take(&mut rejoined) {
                short_until = tokio::time::Instant::now() + Duration::from_secs(3);
                // A restarted server answers before it has recovered every
                // consumer, and drops a pull for one it has not.
                let since = tokio::time::Instant::now();
                while !self.stopping()
                    && consumer.info().await.is_err()
                    && since.elapsed() < Duration::from_secs(30)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut permits = tokio::select! {
                p = Arc::clone(&budget).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = self.stopped() => return,
            };
            let more = batch.saturating_sub(1).min(budget.available_permits());
            if more > 0
                && let Ok(p) = Arc::clone(&budget).try_acquire_many_owned(more as u32)
            {
                permits.merge(p);
            }
            let n = permits.num_permits();
            // Before the pull is asked: a reconnection from here on may
            // have ended it.
            let mut reconnected = self.rejoined.subscribe();
            // A waiting pull: the server answers when it has messages, or
            // after PULL_EXPIRES with none.
            let expires = if tokio::time::Instant::now() < short_until {
                Duration::from_millis(200)
            } else {
                PULL_EXPIRES
            };
            let pulled = consumer
                .batch()
                .max_messages(n)
                .expires(expires)
                .messages()
                .await;
            let mut messages = match pulled {
                Ok(m) => m,
                Err(e) => {
                    drop(permits);
                    tracing::debug!(consumer = %name, error = %e, "pull failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = self.stopped() => {}
                    }
                    continue;
                }
            };
            loop {
                let m = tokio::select! {
                    m = tokio::time::timeout(PULL_GIVE_UP, messages.next()) => match m {
                        Ok(m) => m,
                        // The server lost the pull: ask again.
                        Err(_) => break,
                    },
                    () = self.stopped() => {
                        // This node pulls no more: what the open pull
                        // still brings goes back at once, for another node.
                        drop(permits);
                        self.give_back(messages).await;
                        return;
                    }
                    _ = reconnected.changed() => {
                        // The pull died with the old server, or lives on
                        // (the same server, a new connection): a new one is
                        // asked now, and this one is still read until it
                        // ends, so that no message given to it is lost.
                        // Its places go back to the budget now; a message
                        // that comes to it takes one then.
                        drop(permits);
                        let (me, exec, budget) =
                            (Arc::clone(&self), Arc::clone(&exec), Arc::clone(&budget));
                        me.holding.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(async move {
                            let _held = Counted(&me.holding);
                            while let Ok(Some(Ok(msg))) =
                                tokio::time::timeout(PULL_GIVE_UP, messages.next()).await
                            {
                                if me.stopping() {
                                    me.hand_on(&msg).await;
                                    continue;
                                }
                                let received = tokio::time::Instant::now();
                                // Held while it waits for a place.
                                let _progress = me.progress(&msg);
                                let Ok(one) = Arc::clone(&budget).acquire_owned().await else {
                                    break;
                                };
                                me.deliver(&exec, batch, msg, one, received).await;
                            }
                        });
                        rejoined = true;
                        break;
                    }
                };
                let msg = match m {
                    Some(Ok(msg)) => msg,
                    // The server ended the pull with an error (the consumer
                    // gone, too many pulls waiting, a leader moving): a
                    // moment before the next, not a spin.
                    Some(Err(e)) => {
                        tracing::debug!(consumer = %name, error = %e, "pull ended with an error; asking again in 1s");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = self.stopped() => {}
                        }
                        break;
                    }
                    None => break,
                };
                let Some(one) = permits.split(1) else { break };
                self.deliver(&exec, batch, msg, one, tokio::time::Instant::now())
                    .await;
            }
        }
    }

    /// Reads an open pull to its end (it expires within PULL_EXPIRES),
    /// sending back at once what it brings.
    async fn give_back(&self, mut messages: consumer::pull::Batch) {
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(PULL_GIVE_UP, messages.next()).await {
            self.hand_on(&msg).await;
        }
    }

    /// A message a stopping node will not run: back to the stream for
    /// another node, or, on its last delivery (the server would not
    /// deliver it again), answered `shutting_down`.
    async fn hand_on(&self, msg: &jetstream::Message) {
        let delivered = msg.info().map_or(1, |i| i.delivered);
        match addressed(msg) {
            Some((call, reply, tool)) if delivered >= i64::from(self.opts.max_deliver) => {
                let o = Outcome::failed(
                    call,
                    &self.opts.node,
                    "shutting_down",
                    format!(
                        "tool {tool}: not run: on its last delivery (cluster.max_deliver = {}) its node {} was stopping",
                        self.opts.max_deliver, self.opts.node
                    ),
                );
                self.finish(msg, reply, tool, o, true).await;
            }
            _ => self.send_back(msg, None).await,
        }
    }

    /// Sends a message back to the stream, to be delivered again after
    /// `after` (at once when `None`).
    async fn send_back(&self, msg: &jetstream::Message, after: Option<Duration>) {
        self.stats.sent_back.fetch_add(1, Ordering::Relaxed);
        let _ = msg.ack_with(jetstream::AckKind::Nak(after)).await;
    }

    /// A partition's call runs before the next is pulled (one at a time,
    /// in order); keyless calls run side by side.
    async fn deliver<E: Execute>(
        self: &Arc<Self>,
        exec: &Arc<E>,
        batch: usize,
        msg: jetstream::Message,
        permit: OwnedSemaphorePermit,
        received: tokio::time::Instant,
    ) {
        if batch == 1 {
            self.handle(&**exec, msg, permit, received).await;
        } else {
            let (me, exec) = (Arc::clone(self), Arc::clone(exec));
            me.holding.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                let _held = Counted(&me.holding);
                me.handle(&*exec, msg, permit, received).await;
            });
        }
    }

    /// Tells the server, every `ack_wait / 3` while this node holds the
    /// message (waiting for a place, reading the bucket, running), that
    /// it is still at work on it: no redelivery while this node lives.
    fn progress(&self, msg: &jetstream::Message) -> Option<AbortOnDrop> {
        let reply = msg.reply.clone()?;
        let client = self.client.clone();
        let every = self.opts.ack_wait / 3;
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let _ = client
                    .publish(reply.clone(), jetstream::AckKind::Progress.into())
                    .await;
            }
        })))
    }

    async fn handle<E: Execute>(
        &self,
        exec: &E,
        msg: jetstream::Message,
        _permit: OwnedSemaphorePermit,
        received: tokio::time::Instant,
    ) {
        self.stats.pulled.fetch_add(1, Ordering::Relaxed);
        let _progress = self.progress(&msg);
        let h = msg.headers.as_ref();
        let Some((call, reply, tool)) = addressed(&msg) else {
            tracing::warn!(subject = %msg.subject, "a message without a call id, a node's reply subject or a tool was dropped");
            let _ = msg.ack_with(jetstream::AckKind::Term).await;
            return;
        };
        let ingress = names::ingress_of(reply).unwrap_or_default();
        let (delivered, sequence) = msg
            .info()
            .map_or((1, 0), |i| (i.delivered, i.stream_sequence));
        // The last delivery the server makes: what cannot be done now is
        // answered, never left in the stream unanswered.
        let last = delivered >= i64::from(self.opts.max_deliver);
        if delivered > 1 {
            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        // Answered already (a redelivery after a lost ack, or a node that
        // was paused): not run again. A first delivery handled as it
        // arrives cannot have a result (only a delivery stores one, and
        // the stream stored the call once) and skips the lookup; one held
        // here past half of ack_wait (this node was paused, or its
        // runtime starved) may have been delivered again and answered
        // elsewhere. (A copy that waited in this node's socket while it
        // was paused is not seen here: it runs, and its result loses to
        // the stored one.)
        let held = received.elapsed() > self.opts.ack_wait / 2;
        let stored = if delivered > 1 || held {
            self.results.get(call).await
        } else {
            Ok(None)
        };
        let node = self.opts.node.as_str();
        let not_run = |why: String| {
            Outcome::failed(
                call,
                node,
                "error",
                format!(
                    "tool {tool}: not run: delivered {delivered} times (cluster.max_deliver), and {why}"
                ),
            )
        };
        match stored {
            Ok(Some(_)) => {
                // Not sent again: the node that stored it sent it, and a
                // caller whose answer was lost (that node died between
                // storing and sending) reads it from the bucket. A call
                // gets one answer message, never two.
                self.stats
                    .duplicates_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                let _ = msg.ack().await;
                return;
            }
            Ok(None) => {}
            Err(e) if last => {
                let o = not_run(format!("the results bucket cannot be read: {e}"));
                self.finish(&msg, reply, tool, o, last).await;
                return;
            }
            Err(e) => {
                tracing::warn!(call, error = %e, "cannot read the results bucket; the call goes back to the stream");
                self.send_back(&msg, Some(Duration::from_secs(1))).await;
                return;
            }
        }
        let start_by = get(h, header::START_BY).and_then(|v| v.parse::<u64>().ok());
        let outcome = if start_by.is_some_and(|t| now_ms() > t) {
            // Too late to start. A delivery after the first may follow a
            // node that started the call and died: its marker says so,
            // and the answer must not say "did not run".
            let marker = if delivered > 1 && exec.protected(tool).await {
                self.results
                    .get(names::run_marker(call))
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            match marker {
                Some(theirs) => {
                    self.stats.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                    let theirs = String::from_utf8_lossy(&theirs);
                    let who = theirs.split('/').next().unwrap_or_default();
                    Outcome::failed(
                        call,
                        node,
                        "error",
                        format!(
                            "tool {tool}: outcome unknown: the call started on node {who:?}, which left no result; it is not run twice (the tool is neither read-only nor idempotent)"
                        ),
                    )
                }
                None if delivered > 1 => Outcome::failed(
                    call,
                    node,
                    "timeout",
                    format!(
                        "tool {tool}: delivered {delivered} times, and now past its caller's deadline: not run again (a node that held it before, and left no result, may have run it)"
                    ),
                ),
                None => Outcome::failed(
                    call,
                    node,
                    "timeout",
                    format!(
                        "tool {tool}: the call waited in the cluster past its caller's deadline and did not run"
                    ),
                ),
            }
        } else {
            let marked = exec.protected(tool).await;
            if marked {
                // The marker names this node and this delivery: a write
                // whose answer was lost, tried again, finds its own.
                let mine = format!("{node}/{delivered}");
                match self
                    .store(&names::run_marker(call), Bytes::from(mine.clone()))
                    .await
                {
                    Ok(()) => {}
                    Err(Stored::Exists(theirs)) if theirs == mine.as_bytes() => {}
                    Err(Stored::Exists(theirs)) => {
                        self.stats.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                        let theirs = String::from_utf8_lossy(&theirs);
                        let who = theirs.split('/').next().unwrap_or_default();
                        let o = Outcome::failed(
                            call,
                            node,
                            "error",
                            format!(
                                "tool {tool}: outcome unknown: the call started on node {who:?}, which left no result; it is not run twice (the tool is neither read-only nor idempotent)"
                            ),
                        );
                        self.finish(&msg, reply, tool, o, last).await;
                        return;
                    }
                    Err(Stored::Failed(e)) if last => {
                        let o = not_run(format!("its run marker cannot be written: {e}"));
                        self.finish(&msg, reply, tool, o, last).await;
                        return;
                    }
                    Err(Stored::Failed(e)) => {
                        tracing::warn!(call, error = %e, "cannot write a run marker; the call goes back to the stream");
                        self.send_back(&msg, Some(Duration::from_secs(1))).await;
                        return;
                    }
                }
            }
            let job = Job {
                call: call.to_string(),
                tool: tool.to_string(),
                key: get(h, header::KEY).and_then(|k| k.parse().ok()),
                input: msg.payload.clone(),
                client: get(h, header::CLIENT).unwrap_or("anonymous").to_string(),
                ingress: ingress.to_string(),
                traceparent: get(h, header::TRACEPARENT).map(str::to_string),
                tracestate: get(h, header::TRACESTATE).map(str::to_string),
                delivered,
                sequence,
            };
            self.stats.running.fetch_add(1, Ordering::Relaxed);
            let verdict = exec.execute(job).await;
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
            match verdict {
                Verdict::Done {
                    result,
                    message,
                    output,
                } => Outcome {
                    call: call.to_string(),
                    node: node.to_string(),
                    result,
                    message,
                    output,
                },
                Verdict::Retry { after, result, why } => {
                    if marked {
                        // It did not run: the next delivery may.
                        let _ = self.results.purge(names::run_marker(call)).await;
                    }
                    if !last {
                        self.send_back(&msg, Some(after)).await;
                        return;
                    }
                    Outcome::failed(
                        call,
                        node,
                        result,
                        format!(
                            "tool {tool}: delivered {delivered} times (cluster.max_deliver), and refused each time: {why}"
                        ),
                    )
                }
            }
        };
        self.finish(&msg, reply, tool, outcome, last).await;
    }

    /// Writes `key` in the results bucket unless it is there. A write the
    /// bucket does not take (its leader moving, a request timed out) is
    /// tried again for up to STORE_PATIENCE while the message's progress
    /// acks keep it here: a result already made is not thrown away, and
    /// its tool not run again, for a moment's outage.
    async fn store(&self, key: &str, value: Bytes) -> Result<(), Stored> {
        let until = tokio::time::Instant::now() + STORE_PATIENCE;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.results.create(key, value.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    return match self.results.get(key).await {
                        Ok(Some(v)) => Err(Stored::Exists(v)),
                        Ok(None) => Err(Stored::Failed(format!("{key} exists and cannot be read"))),
                        Err(e) => Err(Stored::Failed(e.to_string())),
                    };
                }
                Err(e) if tokio::time::Instant::now() + backoff >= until => {
                    return Err(Stored::Failed(e.to_string()));
                }
                Err(e) => {
                    tracing::debug!(key, error = %e, "the results bucket did not take a write; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Stores the outcome (the first stored wins), sends the stored one to
    /// the node that took the call, and acknowledges the message. An
    /// outcome NATS cannot carry is answered as an error naming the
    /// limit; one that cannot be stored goes back to the stream, or on
    /// its last delivery is answered unstored and taken off the stream.
    async fn finish(
        &self,
        msg: &jetstream::Message,
        reply: &str,
        tool: &str,
        mut outcome: Outcome,
        last: bool,
    ) {
        let mut bytes = outcome.encode();
        let max = self.client.server_info().max_payload;
        if bytes.len() + ANSWER_HEADROOM > max {
            outcome = Outcome::failed(
                &outcome.call,
                &outcome.node,
                "error",
                format!(
                    "tool {tool}: its answer ({} bytes) is over the NATS server's max_payload ({max} bytes), so the cluster cannot carry it: the tool ran, its output is dropped",
                    bytes.len()
                ),
            );
            bytes = outcome.encode();
        }
        let answer = match self.store(&outcome.call, bytes.clone()).await {
            Ok(()) => bytes,
            // This node's own write, whose answer was lost and tried again.
            Err(Stored::Exists(theirs)) if theirs == bytes => bytes,
            Err(Stored::Exists(_)) => {
                // Another node answered first (this one was paused past
                // ack_wait): its answer stands.
                self.stats.lost_races.fetch_add(1, Ordering::Relaxed);
                let _ = msg.ack().await;
                return;
            }
            Err(Stored::Failed(e)) if last => {
                // Not stored, and not delivered again: answered as it is,
                // and taken off the stream (else it would stay, unanswered).
                tracing::warn!(call = %outcome.call, error = %e, "cannot store a result on the call's last delivery; answered without storing it");
                let _ = self.client.publish(reply.to_string(), bytes).await;
                let _ = msg.ack_with(jetstream::AckKind::Term).await;
                return;
            }
            Err(Stored::Failed(e)) => {
                // Not stored, so not answered: the call is delivered again.
                tracing::warn!(call = %outcome.call, error = %e, "cannot store a result; the call goes back to the stream");
                self.send_back(msg, Some(Duration::from_secs(1))).await;
                return;
            }
        };
        if let Err(e) = self.client.publish(reply.to_string(), answer).await {
            tracing::debug!(call = %outcome.call, error = %e, "an answer was not sent; its caller reads it from the results bucket");
        }
        if let Err(e) = msg.ack().await {
            tracing::debug!(call = %outcome.call, error = %e, "an ack was not confirmed; a redelivery will find the stored result");
        }
    }
}

/// Why a write to the results bucket did not happen.
enum Stored {
    /// The key is there: its value.
    Exists(Bytes),
    /// The bucket did not take it within STORE_PATIENCE.
    Failed(String),
}

/// Counts a task while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a caller's entry when its wait ends, however it ends.
struct Waiting<'a> {
    waiters: &'a Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    call: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.call);
    }
}

/// A call the stream has stored, its answer to come.
#[derive(Debug)]
pub struct Pending<'a> {
    started: tokio::time::Instant,
    cluster: &'a Cluster,
    rx: oneshot::Receiver<Outcome>,
    wait: Duration,
    waiting: Waiting<'a>,
}

impl std::fmt::Debug for Waiting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.call)
    }
}

impl Pending<'_> {
    /// The call's id.
    pub fn call(&self) -> &str {
        &self.waiting.call
    }

    /// Waits for the call's one answer: the node that ran it sends it.
    /// Every `ack_wait` without it, and when the wait ends, the results
    /// bucket is read: an answer stored by a node that died before
    /// sending it is found there (no node sends it again).
    ///
    /// # Errors
    ///
    /// [`ClusterError::NoAnswer`]: no answer came within `wait`, nor is
    /// one stored.
    pub async fn answer(self) -> Result<Outcome, ClusterError> {
        let c = self.cluster;
        let until = tokio::time::Instant::now() + self.wait;
        let mut rx = Some(self.rx);
        loop {
            let now = tokio::time::Instant::now();
            let look = until.min(now + c.opts.ack_wait);
            match rx.as_mut() {
                Some(r) => match tokio::time::timeout_at(look, r).await {
                    Ok(Ok(o)) => {
                        c.stats.latency.record(self.started.elapsed());
                        return Ok(o);
                    }
                    // No sender (not while this waits): the bucket only.
                    Ok(Err(_)) => rx = None,
                    Err(_) => {}
                },
                None => tokio::time::sleep_until(look).await,
            }
            if let Ok(Some(v)) = c.results.get(&self.waiting.call).await {
                c.stats.answered_from_store.fetch_add(1, Ordering::Relaxed);
                c.stats.latency.record(self.started.elapsed());
                return Outcome::decode(&v).map_err(|message| ClusterError::BadAnswer {
                    node: String::new(),
                    message,
                });
            }
            if look >= until {
                c.stats.no_answer.fetch_add(1, Ordering::Relaxed);
                return Err(ClusterError::NoAnswer { waited: self.wait });
            }
        }
    }
}

/// The stream's settings this node asks for.
fn stream_config(opts: &Options) -> stream::Config {
    stream::Config {
        name: names::STREAM.into(),
        description: Some(description(opts.partitions)),
        subjects: vec![names::CALLS.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas as usize,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::New,
        max_messages: opts.max_pending as i64,
        max_bytes: opts.max_pending_bytes as i64,
        max_age: CALL_AGE,
        ..Default::default()
    }
}

fn description(partitions: u32) -> String {
    format!("toolplane calls, {partitions} partitions")
}

async fn ensure_stream(
    js: &jetstream::Context,
    opts: &Options,
) -> Result<stream::Stream, ClusterError> {
    let want = stream_config(opts);
    let what = format!("stream {}", names::STREAM);
    let s = js.get_or_create_stream(want.clone()).await.map_err(|e| {
        ClusterError::js(
            format!(
                "creating or reading {what} (cluster.replicas = {})",
                opts.replicas
            ),
            e,
        )
    })?;
    let have = &s.cached_info().config;
    let parts = have
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix("toolplane calls, "))
        .and_then(|d| d.strip_suffix(" partitions"))
        .and_then(|n| n.parse::<u32>().ok());
    if parts != Some(opts.partitions) {
        return Err(ClusterError::Mismatch {
            what,
            field: "partitions",
            have: parts.map_or_else(|| format!("{:?}", have.description), |p| p.to_string()),
            want: format!("{} (cluster.partitions)", opts.partitions),
            hint: ": every node must name the stream's partition count; changing it would move keys while their calls wait (delete the stream when none wait to change it)",
        });
    }
    let hint = ": the stream was made with other settings (delete it when no call waits, or give this node the cluster's)";
    let checks = [
        (
            "subjects",
            format!("{:?}", have.subjects),
            format!("{:?}", want.subjects),
            "",
        ),
        (
            "retention",
            format!("{:?}", have.retention),
            format!("{:?}", want.retention),
            "",
        ),
        (
            "storage",
            format!("{:?}", have.storage),
            format!("{:?}", want.storage),
            "",
        ),
        (
            "num_replicas",
            have.num_replicas.to_string(),
            want.num_replicas.to_string(),
            "cluster.replicas",
        ),
        (
            "duplicate_window",
            duration(have.duplicate_window),
            duration(want.duplicate_window),
            "",
        ),
        (
            "discard",
            format!("{:?}", have.discard),
            format!("{:?}", want.discard),
            "",
        ),
        (
            "max_age",
            duration(have.max_age),
            duration(want.max_age),
            "",
        ),
        (
            "max_msgs",
            have.max_messages.to_string(),
            want.max_messages.to_string(),
            "cluster.max_pending",
        ),
        (
            "max_bytes",
            have.max_bytes.to_string(),
            want.max_bytes.to_string(),
            "cluster.max_pending_bytes",
        ),
    ];
    compare(&what, &checks, hint)?;
    Ok(s)
}

fn consumer_config(
    name: String,
    filter: String,
    max_ack_pending: i64,
    opts: &Options,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name),
        filter_subject: filter,
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: opts.ack_wait,
        max_deliver: i64::from(opts.max_deliver),
        max_ack_pending,
        // Pull requests waiting at once: every node's puller.
        max_waiting: 512,
        ..Default::default()
    }
}

async fn ensure_consumers(s: &stream::Stream, opts: &Options) -> Result<(), ClusterError> {
    let mut all: Vec<consumer::pull::Config> = (0..opts.partitions)
        .map(|p| consumer_config(names::consumer(p), crate::partition::subject(p), 1, opts))
        .collect();
    all.push(consumer_config(
        names::ANY_CONSUMER.into(),
        names::ANY.into(),
        ANY_MAX_ACK_PENDING,
        opts,
    ));
    for want in all {
        let name = want.durable_name.clone().unwrap_or_default();
        let what = format!("consumer {name} of stream {}", names::STREAM);
        let c: consumer::PullConsumer = s
            .get_or_create_consumer(&name, want.clone())
            .await
            .map_err(|e| ClusterError::js(format!("creating or reading {what}"), e))?;
        let have = &c.cached_info().config;
        let hint = ": the consumer was made with other settings (give every node the same [cluster] settings, or delete the consumer when no call waits)";
        let checks = [
            (
                "filter_subject",
                have.filter_subject.clone(),
                want.filter_subject.clone(),
                "",
            ),
            (
                "ack_policy",
                format!("{:?}", have.ack_policy),
                format!("{:?}", want.ack_policy),
                "",
            ),
            (
                "ack_wait",
                duration(have.ack_wait),
                duration(want.ack_wait),
                "cluster.ack_wait",
            ),
            (
                "max_deliver",
                have.max_deliver.to_string(),
                want.max_deliver.to_string(),
                "cluster.max_deliver",
            ),
            (
                "max_ack_pending",
                have.max_ack_pending.to_string(),
                want.max_ack_pending.to_string(),
                "",
            ),
        ];
        compare(&what, &checks, hint)?;
    }
    Ok(())
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The first field whose value the server echoes otherwise than this node
/// asked: (field, the server's, this node's, the setting it comes from).
fn compare(
    what: &str,
    checks: &[(&'static str, String, String, &'static str)],
    hint: &'static str,
) -> Result<(), ClusterError> {
    match checks.iter().find(|(_, have, want, _)| have != want) {
        None => Ok(()),
        Some((field, have, want, setting)) => Err(ClusterError::Mismatch {
            what: what.to_string(),
            field,
            have: have.clone(),
            want: if setting.is_empty() {
                want.clone()
            } else {
                format!("{want} ({setting})")
            },
            hint,
        }),
    }
}

/// A KV bucket: its stream made as the client's `create_key_value` makes
/// one (which 0.52 cannot do against 2.9: see [`crate::server::jetstream_info`]), then
/// opened; a bucket made otherwise is named.
async fn ensure_bucket(
    js: &jetstream::Context,
    open: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    opts: &Options,
) -> Result<kv::Store, ClusterError> {
    let want = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("toolplane {bucket}")),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: opts.replicas as usize,
        ..Default::default()
    };
    let what = format!("bucket {bucket}");
    let s = js.get_or_create_stream(want.clone()).await.map_err(|e| {
        ClusterError::js(
            format!(
                "creating or reading {what} (cluster.replicas = {})",
                opts.replicas
            ),
            e,
        )
    })?;
    let have = &s.cached_info().config;
    let hint =
        ": the bucket was made with other settings (delete it, or give this node the cluster's)";
    let checks = [
        (
            "max_age",
            duration(have.max_age),
            duration(want.max_age),
            "",
        ),
        (
            "num_replicas",
            have.num_replicas.to_string(),
            want.num_replicas.to_string(),
            "cluster.replicas",
        ),
        (
            "max_msgs_per_subject",
            have.max_messages_per_subject.to_string(),
            want.max_messages_per_subject.to_string(),
            "",
        ),
    ];
    compare(&what, &checks, hint)?;
    open.get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::js(format!("opening {what}"), e))
}
