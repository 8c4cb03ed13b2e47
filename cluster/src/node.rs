//! A node of the cluster: its connection, the stream, consumers and
//! buckets it checks at start, the calls it publishes (ingress) and the
//! calls it pulls and runs (docs/cluster.md, "The call path").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::ClusterError;
use crate::names::{self, header};
use crate::options::Options;
use crate::wire::Outcome;

/// The oldest server the cluster speaks to: the client's consumer API is
/// 2.9.0's.
const MIN_VERSION: (u32, u32, u32) = (2, 9, 0);
/// How long a result stays in the results bucket: longer than the
/// duplicate window and any call's wait.
const RESULT_AGE: Duration = Duration::from_secs(600);
/// The stream's duplicate window: a publish retried within it is stored
/// once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How often a node says it is alive, and how long the bucket keeps it.
const HEARTBEAT: Duration = Duration::from_secs(2);
const NODE_AGE: Duration = Duration::from_secs(10);
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
/// The most keyless calls one pull asks for.
const ANY_BATCH: usize = 256;

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
    /// Not run: the engine is full or stopping. The call goes back to the
    /// stream, to be delivered after `after` (here or elsewhere).
    Retry {
        /// The delay.
        after: Duration,
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
    fn protected(&self, tool: &str) -> bool;
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
    stopping: AtomicBool,
    stopped: Notify,
    server: String,
    /// Bumped at each reconnection, once JetStream answers again.
    rejoined: tokio::sync::watch::Sender<u64>,
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

fn version_of(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn get<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
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
        opts.validate().map_err(ClusterError::Setting)?;
        let urls = opts.nats_shown();
        let addrs = opts
            .nats
            .iter()
            .map(|u| u.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Setting(format!("cluster.nats: {e}")))?;
        // Each reconnection bumps the generation: pulls open on the old
        // connection are gone from the server, and are asked again.
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let events = generation.clone();
        let first = Arc::new(AtomicBool::new(true));
        let mut co = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let (events, first) = (events.clone(), Arc::clone(&first));
                async move { connection_event(&events, &first, event) }
            })
            .name(format!("toolplane {}", opts.node))
            .connection_timeout(opts.connect_timeout)
            .max_reconnects(None::<usize>);
        if let Some(path) = &opts.credentials {
            co = co
                .credentials_file(path)
                .await
                .map_err(|source| ClusterError::Credentials {
                    path: path.clone(),
                    source,
                })?;
        }
        let waited = opts.connect_timeout;
        let client = match tokio::time::timeout(
            waited + Duration::from_secs(1),
            async_nats::connect_with_options(addrs, co),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ClusterError::Connect {
                    urls,
                    waited,
                    source: Box::new(e),
                });
            }
            Err(e) => {
                return Err(ClusterError::Connect {
                    urls,
                    waited,
                    source: Box::new(e),
                });
            }
        };
        let info = client.server_info();
        let server = format!("{}:{}", info.host, info.port);
        match version_of(&info.version) {
            Some(v) if v >= MIN_VERSION => {}
            _ => {
                return Err(ClusterError::Server {
                    server,
                    version: info.version,
                    needs: format!(
                        "the cluster needs NATS {}.{}.{} or later (its JetStream consumer API)",
                        MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
                    ),
                });
            }
        }
        let js = jetstream::new(client.clone());
        if let Err(why) = jetstream_info(&js).await {
            return Err(ClusterError::Server {
                server,
                version: info.version,
                needs: format!("JetStream is not available ({why}): start nats-server with -js"),
            });
        }
        let stream = ensure_stream(&js, &opts).await?;
        ensure_consumers(&stream, &opts).await?;
        let results = ensure_bucket(&js, names::RESULTS, RESULT_AGE, &opts).await?;
        let nodes = ensure_bucket(&js, names::NODES, NODE_AGE, &opts).await?;
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
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
            server,
            rejoined: tokio::sync::watch::channel(0).0,
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
    /// would go to either), then says this one lives.
    async fn join(&self) -> Result<(), ClusterError> {
        let name = &self.opts.node;
        if let Ok(Some(entry)) = self.nodes.entry(name.as_str()).await
            && entry.operation == kv::Operation::Put
        {
            let age = SystemTime::now()
                .duration_since(SystemTime::from(entry.created))
                .unwrap_or_default();
            if age < HEARTBEAT * 3 {
                return Err(ClusterError::Setting(format!(
                    "cluster.node: a node named {name:?} is alive in the cluster (it said so {} ago): name this one otherwise",
                    humantime::format_duration(Duration::from_millis(age.as_millis() as u64))
                )));
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
            while let Err(why) = jetstream_info(&self.js).await {
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

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::Acquire) {
                let _ = self.nodes.delete(self.opts.node.as_str()).await;
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
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.call.to_string(), tx);
        let _waiting = Waiting {
            waiters: &self.waiters,
            call: r.call,
        };
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
        let ack = match self
            .js
            .publish_with_headers(subject, h, Bytes::copy_from_slice(r.input))
            .await
        {
            Ok(f) => f.await,
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                return Err(refused(
                    None,
                    format!(
                        "the call's input is over the NATS server's max_payload ({} bytes)",
                        self.client.server_info().max_payload
                    ),
                ));
            }
            Err(e) => return Err(refused(Some(Box::new(e)), "it could not be sent".into())),
        };
        let e = match ack {
            // A call id is used once: another publish took this one (within
            // the duplicate window), and this caller's call is not stored.
            Ok(a) if a.duplicate => {
                return Err(refused(
                    None,
                    format!("call id {} was published already", r.call),
                ));
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = e {
            if e.kind() == jetstream::context::PublishErrorKind::TimedOut {
                // Sent, and not confirmed: it may be stored, and run.
                self.stats.no_answer.fetch_add(1, Ordering::Relaxed);
                return Err(ClusterError::Unconfirmed {
                    call: r.call.to_string(),
                    source: Box::new(e),
                });
            }
            let text = e.to_string();
            let reason = if text.contains("maximum messages") {
                format!(
                    "the stream holds cluster.max_pending ({}) calls",
                    self.opts.max_pending
                )
            } else if text.contains("maximum bytes") {
                format!(
                    "the stream holds cluster.max_pending_bytes ({}) of calls",
                    self.opts.max_pending_bytes
                )
            } else {
                text
            };
            return Err(refused(Some(Box::new(e)), reason));
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(r.wait, rx).await {
            Ok(Ok(o)) => Ok(o),
            _ => match self.results.get(r.call).await {
                Ok(Some(v)) => {
                    self.stats
                        .answered_from_store
                        .fetch_add(1, Ordering::Relaxed);
                    Outcome::decode(&v).map_err(|message| ClusterError::BadAnswer {
                        node: String::new(),
                        message,
                    })
                }
                _ => {
                    self.stats.no_answer.fetch_add(1, Ordering::Relaxed);
                    Err(ClusterError::NoAnswer { waited: r.wait })
                }
            },
        }
    }

    /// Starts pulling: one puller per partition, one for keyless calls,
    /// each asking only while this node's budget has room.
    pub fn serve<E: Execute>(self: &Arc<Self>, exec: Arc<E>) {
        for p in 0..self.opts.partitions {
            let (me, exec) = (Arc::clone(self), Arc::clone(&exec));
            tokio::spawn(async move { me.pull(names::consumer(p), 1, exec).await });
        }
        let (me, exec) = (Arc::clone(self), exec);
        tokio::spawn(async move { me.pull(names::ANY_CONSUMER.into(), ANY_BATCH, exec).await });
    }

    /// Stops pulling; calls already pulled finish (or go back to the
    /// stream if the engine refuses them). Says this node has left.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
    }

    async fn pull<E: Execute>(self: Arc<Self>, name: String, batch: usize, exec: Arc<E>) {
        let mut consumer: consumer::PullConsumer = loop {
            match self.stream.get_consumer(&name).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "cannot read a cluster consumer; trying again in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
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
        while !self.stopping.load(Ordering::Acquire) {
            if std::mem::take(&mut rejoined) {
                short_until = tokio::time::Instant::now() + Duration::from_secs(3);
                // A restarted server answers before it has recovered every
                // consumer, and drops a pull for one it has not.
                let since = tokio::time::Instant::now();
                while consumer.info().await.is_err() && since.elapsed() < Duration::from_secs(30) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let Ok(mut permits) = Arc::clone(&budget).acquire_owned().await else {
                return;
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
                        () = self.stopped.notified() => {}
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
                        tokio::spawn(async move {
                            while let Ok(Some(Ok(msg))) =
                                tokio::time::timeout(PULL_GIVE_UP, messages.next()).await
                            {
                                let Ok(one) = Arc::clone(&budget).acquire_owned().await else {
                                    break;
                                };
                                me.deliver(&exec, batch, msg, one).await;
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
                            () = self.stopped.notified() => {}
                        }
                        break;
                    }
                    None => break,
                };
                let Some(one) = permits.split(1) else { break };
                self.deliver(&exec, batch, msg, one).await;
            }
        }
    }

    /// A partition's call runs before the next is pulled (one at a time,
    /// in order); keyless calls run side by side.
    async fn deliver<E: Execute>(
        self: &Arc<Self>,
        exec: &Arc<E>,
        batch: usize,
        msg: jetstream::Message,
        permit: OwnedSemaphorePermit,
    ) {
        if batch == 1 {
            self.handle(&**exec, msg, permit).await;
        } else {
            let (me, exec) = (Arc::clone(self), Arc::clone(exec));
            tokio::spawn(async move { me.handle(&*exec, msg, permit).await });
        }
    }

    async fn handle<E: Execute>(
        &self,
        exec: &E,
        msg: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        self.stats.pulled.fetch_add(1, Ordering::Relaxed);
        let h = msg.headers.as_ref();
        let (Some(call), Some(reply), Some(tool)) = (
            get(h, "Nats-Msg-Id"),
            get(h, header::REPLY),
            get(h, header::TOOL),
        ) else {
            tracing::warn!(subject = %msg.subject, "a message without a call id, a reply subject or a tool was dropped");
            let _ = msg.ack_with(jetstream::AckKind::Term).await;
            return;
        };
        let (delivered, sequence) = msg
            .info()
            .map_or((1, 0), |i| (i.delivered, i.stream_sequence));
        if delivered > 1 {
            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        // Answered already (a redelivery after a lost ack, or a node that
        // was paused): the stored result again, not a second run. A first
        // delivery cannot have one (only a delivery stores a result, and
        // the stream stored the call once), and skips the lookup.
        let stored = if delivered > 1 {
            self.results.get(call).await
        } else {
            Ok(None)
        };
        match stored {
            Ok(Some(stored)) => {
                self.stats
                    .duplicates_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self.client.publish(reply.to_string(), stored).await;
                let _ = msg.ack().await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(call, error = %e, "cannot read the results bucket; the call goes back to the stream");
                let _ = msg
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
        let node = self.opts.node.as_str();
        let start_by = get(h, header::START_BY).and_then(|v| v.parse::<u64>().ok());
        let outcome = if start_by.is_some_and(|t| now_ms() > t) {
            Outcome::failed(
                call,
                node,
                "timeout",
                format!(
                    "tool {tool}: the call waited in the cluster past its caller's deadline and did not run"
                ),
            )
        } else {
            if exec.protected(tool) {
                match self
                    .results
                    .create(names::run_marker(call), Bytes::from(node.to_string()))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        self.stats.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                        let who = self
                            .results
                            .get(names::run_marker(call))
                            .await
                            .ok()
                            .flatten()
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        let o = Outcome::failed(
                            call,
                            node,
                            "error",
                            format!(
                                "tool {tool}: outcome unknown: the call started on node {who:?}, which left no result; it is not run twice (the tool is neither read-only nor idempotent)"
                            ),
                        );
                        self.finish(&msg, reply, o).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(call, error = %e, "cannot write a run marker; the call goes back to the stream");
                        let _ = msg
                            .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                            .await;
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
                ingress: reply.trim_start_matches("tp.reply.").to_string(),
                traceparent: get(h, header::TRACEPARENT).map(str::to_string),
                tracestate: get(h, header::TRACESTATE).map(str::to_string),
                delivered,
                sequence,
            };
            self.stats.running.fetch_add(1, Ordering::Relaxed);
            let verdict = {
                let run = exec.execute(job);
                tokio::pin!(run);
                let mut progress = tokio::time::interval(self.opts.ack_wait / 3);
                progress.tick().await;
                loop {
                    tokio::select! {
                        v = &mut run => break v,
                        _ = progress.tick() => {
                            let _ = msg.ack_with(jetstream::AckKind::Progress).await;
                        }
                    }
                }
            };
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
                Verdict::Retry { after, why } => {
                    if exec.protected(tool) {
                        // It did not run: the next delivery may.
                        let _ = self.results.purge(names::run_marker(call)).await;
                    }
                    if delivered < i64::from(self.opts.max_deliver) {
                        self.stats.sent_back.fetch_add(1, Ordering::Relaxed);
                        let _ = msg.ack_with(jetstream::AckKind::Nak(Some(after))).await;
                        return;
                    }
                    Outcome::failed(
                        call,
                        node,
                        "busy",
                        format!(
                            "tool {tool}: delivered {delivered} times (cluster.max_deliver), and refused each time: {why}"
                        ),
                    )
                }
            }
        };
        self.finish(&msg, reply, outcome).await;
    }

    /// Stores the outcome (the first stored wins), sends the stored one to
    /// the node that took the call, and acknowledges the message.
    async fn finish(&self, msg: &jetstream::Message, reply: &str, outcome: Outcome) {
        let bytes = outcome.encode();
        let answer = match self.results.create(&outcome.call, bytes.clone()).await {
            Ok(_) => bytes,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Another node answered first (this one was paused past
                // ack_wait): its answer stands.
                self.stats.lost_races.fetch_add(1, Ordering::Relaxed);
                let _ = msg.ack().await;
                return;
            }
            Err(e) => {
                // Not stored, so not answered: the call is delivered again.
                tracing::warn!(call = %outcome.call, error = %e, "cannot store a result; the call goes back to the stream");
                let _ = msg
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
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

/// Removes a caller's entry when its wait ends, however it ends.
struct Waiting<'a> {
    waiters: &'a Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    call: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.call);
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

/// Whether the account has JetStream: `$JS.API.INFO`, read with only the
/// fields a 2.9 server sends (the client's own account type wants fields
/// of 2.10 and later, and so does its `create_key_value`).
async fn jetstream_info(js: &jetstream::Context) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct AccountInfo {
        #[serde(default)]
        #[allow(dead_code)]
        streams: u64,
    }
    match js
        .request::<_, _, jetstream::response::Response<AccountInfo>>("INFO", &())
        .await
    {
        Ok(jetstream::response::Response::Ok(_)) => Ok(()),
        Ok(jetstream::response::Response::Err { error }) => Err(error.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A KV bucket: its stream made as the client's `create_key_value` makes
/// one (which 0.52 cannot do against 2.9: see [`jetstream_info`]), then
/// opened; a bucket made otherwise is named.
async fn ensure_bucket(
    js: &jetstream::Context,
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
    js.get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::js(format!("opening {what}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_the_server_writes_them() {
        assert_eq!(version_of("2.9.10"), Some((2, 9, 10)));
        assert_eq!(version_of("v2.10.0-beta.1"), Some((2, 10, 0)));
        assert_eq!(version_of("2.8"), Some((2, 8, 0)));
        assert!(version_of("2.8.4") < Some(MIN_VERSION));
        assert_eq!(version_of("x"), None);
    }
}
