//! `[cluster]` (or `toolplane serve --cluster URL`): this server as a node
//! of a toolplane cluster on NATS JetStream (docs/cluster.md). The front
//! door stays this node's (Host/Origin, tokens, scopes, rates); a call it
//! takes is published to the cluster and runs on whichever node pulls it,
//! this one included (`runner.rs`).
//!
//! ```toml
//! [cluster]
//! nats = ["nats://127.0.0.1:4222"]  # or one URL as a string
//! node = "tp-1"                      # default: the host's name
//! partitions = 64                    # the same on every node, for the stream's life
//! credentials = "nats.creds"         # relative to this file
//! ack_wait = "30s"                   # a node silent this long loses the call it holds
//! max_deliver = 5
//! replicas = 1                       # 3 on a NATS cluster of three
//! max_inflight = 1024                # calls this node runs for the cluster at once
//! max_pending = 1000000              # calls waiting in the stream at most
//! max_pending_bytes = "1 GiB"
//! connect_timeout = "5s"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toolplane_cluster::Options;

use crate::token::parse_duration_in;

/// The `[cluster]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    nats: Option<toml::Value>,
    node: Option<String>,
    partitions: Option<u32>,
    credentials: Option<std::path::PathBuf>,
    ack_wait: Option<String>,
    max_deliver: Option<u32>,
    replicas: Option<u32>,
    max_inflight: Option<u32>,
    max_pending: Option<u64>,
    max_pending_bytes: Option<String>,
    connect_timeout: Option<String>,
}

/// The node's options from `[cluster]`, paths relative to `base`.
///
/// # Errors
///
/// A message naming the key and what is accepted.
pub fn parse(f: ClusterFile, base: &Path) -> Result<Options, String> {
    let nats = match f.nats {
        None => {
            return Err("cluster.nats: missing: the NATS server URLs (nats://host:port)".into());
        }
        Some(toml::Value::String(u)) => vec![u],
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(u) => Ok(u),
                _ => Err("cluster.nats: each URL is a string".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("cluster.nats: a URL or a list of URLs".into()),
    };
    let mut o = Options::new(nats, f.node.unwrap_or_else(Options::default_node));
    if let Some(p) = f.partitions {
        o.partitions = p;
    }
    o.credentials = f.credentials.map(|c| base.join(c));
    let duration = |key: &str, v: &Option<String>, min: Duration, max: Duration| {
        v.as_deref()
            .map(|t| parse_duration_in(t, min, max).map_err(|m| format!("cluster.{key}: {m}")))
            .transpose()
    };
    if let Some(d) = duration(
        "ack_wait",
        &f.ack_wait,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )? {
        o.ack_wait = d;
    }
    if let Some(d) = duration(
        "connect_timeout",
        &f.connect_timeout,
        Duration::from_millis(100),
        Duration::from_secs(600),
    )? {
        o.connect_timeout = d;
    }
    if let Some(n) = f.max_deliver {
        o.max_deliver = n;
    }
    if let Some(n) = f.replicas {
        o.replicas = n;
    }
    if let Some(n) = f.max_inflight {
        o.max_inflight = n;
    }
    if let Some(n) = f.max_pending {
        o.max_pending = n;
    }
    if let Some(b) = &f.max_pending_bytes {
        o.max_pending_bytes = toolplane_pool::manifest::parse_size(b)
            .filter(|n| (1 << 20..=1 << 40).contains(n))
            .ok_or_else(|| {
                format!(
                    "cluster.max_pending_bytes = {b:?}: accepted a size from \"1 MiB\" to \"1 TiB\""
                )
            })?;
    }
    o.validate()?;
    Ok(o)
}

/// How long the node that took a call waits for its answer: the call may
/// wait in the stream for one redelivery (`ack_wait`), then run for the
/// tool's time limit.
pub fn waits(opts: &Options, tool_timeout: Duration) -> (Duration, Duration) {
    let start_by = opts.ack_wait + Duration::from_secs(1);
    (start_by, start_by + tool_timeout + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Options, String> {
        let f: ClusterFile = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(f, Path::new("/etc/tp"))
    }

    #[test]
    fn the_table_is_read_with_its_defaults_and_each_bad_key_named() {
        let o = parse_text("nats = \"nats://127.0.0.1:4222\"\nnode = \"a\"\ncredentials = \"x.creds\"\nack_wait = \"2s\"\nmax_pending_bytes = \"1 MiB\"\n").unwrap();
        assert_eq!(o.nats, ["nats://127.0.0.1:4222"]);
        assert_eq!(o.partitions, 64);
        assert_eq!(o.ack_wait, Duration::from_secs(2));
        assert_eq!(o.max_pending_bytes, 1 << 20);
        assert_eq!(o.credentials.as_deref(), Some(Path::new("/etc/tp/x.creds")));
        let o = parse_text("nats = [\"nats://a:1\", \"nats://b:2\"]\n").unwrap();
        assert_eq!(o.nats.len(), 2);
        for (text, key) in [
            ("node = \"a\"\n", "cluster.nats"),
            ("nats = 4\n", "cluster.nats"),
            (
                "nats = \"nats://a:1\"\npartitions = 0\n",
                "cluster.partitions",
            ),
            (
                "nats = \"nats://a:1\"\nack_wait = \"1ms\"\n",
                "cluster.ack_wait",
            ),
            (
                "nats = \"nats://a:1\"\nmax_pending_bytes = \"lots\"\n",
                "cluster.max_pending_bytes",
            ),
            ("nats = \"nats://a:1\"\nnode = \"a b\"\n", "cluster.node"),
        ] {
            let e = parse_text(text).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
        assert!(
            parse_text("nats = \"nats://a:1\"\nlanes = 3\n")
                .unwrap_err()
                .contains("lanes")
        );
    }
}
