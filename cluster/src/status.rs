//! What a cluster holds, read from its NATS server without joining it:
//! the live nodes, and per partition the calls waiting, in flight and
//! delivered again, and the oldest waiting (`toolplane cluster status`,
//! and the per-partition rows of a node's `/metrics`).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::ClusterError;
use crate::names;
use crate::options::Options;

/// A live node, as it last said.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its toolplane version.
    pub version: String,
    /// Calls it ran for the cluster when it last said.
    pub running: u64,
    /// How long ago it last said it lives (ms).
    pub seen_ms: u64,
}

/// One consumer: a partition's (`k{p}`) or the keyless calls' (`any`).
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    /// Its name.
    pub name: String,
    /// Calls waiting, not yet delivered.
    pub pending: u64,
    /// Calls delivered, not yet acknowledged (running somewhere).
    pub in_flight: u64,
    /// Calls delivered more than once and not yet acknowledged.
    pub redelivered: u64,
    /// Pull requests waiting (nodes asking).
    pub waiting: u64,
    /// How long the oldest call not yet acknowledged has been in the
    /// stream (ms), when one is.
    pub oldest_ms: Option<u64>,
}

/// The cluster as its NATS server holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The NATS server read (host:port) and its version.
    pub server: String,
    /// See `server`.
    pub version: String,
    /// The stream's partition count.
    pub partitions: u32,
    /// Calls in the stream (waiting or running).
    pub calls: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The consumers' `ack_wait`.
    pub ack_wait_ms: u64,
    /// The live nodes, by name.
    pub nodes: Vec<NodeStatus>,
    /// Every partition's consumer, then `any`.
    pub consumers: Vec<ConsumerStatus>,
}

/// The partition count a stream's description names.
pub(crate) fn partitions_of(info: &stream::Info) -> Option<u32> {
    info.config
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix("toolplane calls, "))
        .and_then(|d| d.strip_suffix(" partitions"))
        .and_then(|n| n.parse::<u32>().ok())
}

/// The consumers' state: each partition's, then `any`'s. With `oldest`,
/// each one's oldest unacknowledged call is read too (one request each).
pub(crate) async fn consumers(
    stream: &stream::Stream,
    partitions: u32,
    oldest: bool,
) -> Result<(Vec<ConsumerStatus>, u64), ClusterError> {
    let mut out = Vec::with_capacity(partitions as usize + 1);
    let mut ack_wait = 0;
    let names = (0..partitions)
        .map(|p| (names::consumer(p), crate::partition::subject(p)))
        .chain(std::iter::once((
            names::ANY_CONSUMER.to_string(),
            names::ANY.to_string(),
        )));
    for (name, subject) in names {
        let c: consumer::PullConsumer =
            stream
                .get_consumer(&name)
                .await
                .map_err(|e| ClusterError::JetStream {
                    what: format!("reading consumer {name}"),
                    source: e,
                })?;
        // As `get_consumer` just read it: one request per consumer.
        let i = c.cached_info();
        ack_wait = i.config.ack_wait.as_millis() as u64;
        let in_flight = i.num_ack_pending as u64;
        let mut row = ConsumerStatus {
            name: name.clone(),
            pending: i.num_pending,
            in_flight,
            redelivered: i.num_redelivered as u64,
            waiting: i.num_waiting as u64,
            oldest_ms: None,
        };
        if oldest && (row.pending > 0 || in_flight > 0) {
            let from = i.ack_floor.stream_sequence + 1;
            if let Ok(m) = stream
                .get_first_raw_message_by_subject(&subject, from)
                .await
            {
                row.oldest_ms = SystemTime::now()
                    .duration_since(SystemTime::from(m.time))
                    .ok()
                    .map(|d| d.as_millis() as u64);
            }
        }
        out.push(row);
    }
    Ok((out, ack_wait))
}

/// Reads the cluster on the NATS server `opts` names: no stream there is
/// an error saying no node has started.
///
/// # Errors
///
/// The server unreachable, without JetStream, or holding no cluster.
pub async fn status(opts: &Options) -> Result<Status, ClusterError> {
    let (client, server, version) =
        crate::server::open(opts, async_nats::ConnectOptions::new()).await?;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(names::STREAM).await.map_err(|e| {
        ClusterError::js(
            format!(
                "reading stream {} (no toolplane node has started on {} yet?)",
                names::STREAM,
                opts.nats_shown()
            ),
            e,
        )
    })?;
    let info = stream
        .info()
        .await
        .map_err(|e| ClusterError::js(format!("reading stream {}", names::STREAM), e))?
        .clone();
    let partitions = partitions_of(&info).ok_or_else(|| ClusterError::Mismatch {
        what: format!("stream {}", names::STREAM),
        field: "description",
        have: format!("{:?}", info.config.description),
        want: "toolplane calls, P partitions".into(),
        hint: ": it was not made by toolplane",
    })?;
    let (consumers, ack_wait_ms) = consumers(&stream, partitions, true).await?;
    let nodes = live_nodes(&js).await?;
    let _ = client.flush().await;
    Ok(Status {
        server,
        version,
        partitions,
        calls: info.state.messages,
        bytes: info.state.bytes,
        ack_wait_ms,
        nodes,
        consumers,
    })
}

async fn live_nodes(js: &jetstream::Context) -> Result<Vec<NodeStatus>, ClusterError> {
    let kv = js
        .get_key_value(names::NODES)
        .await
        .map_err(|e| ClusterError::js(format!("opening bucket {}", names::NODES), e))?;
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| ClusterError::js(format!("listing bucket {}", names::NODES), e))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        if let Ok(k) = k {
            names.push(k);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Ok(Some(e)) = kv.entry(name.as_str()).await else {
            continue;
        };
        if e.operation != async_nats::jetstream::kv::Operation::Put {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap_or_default();
        let seen = SystemTime::now()
            .duration_since(SystemTime::from(e.created))
            .unwrap_or(Duration::ZERO);
        out.push(NodeStatus {
            name,
            version: v["version"].as_str().unwrap_or("").to_string(),
            running: v["running"].as_u64().unwrap_or(0),
            seen_ms: seen.as_millis() as u64,
        });
    }
    Ok(out)
}
