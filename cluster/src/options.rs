//! `[cluster]`: where NATS is, who this node is, and the settings every
//! node of a cluster must share.

use std::path::PathBuf;
use std::time::Duration;

/// A cluster node's settings (`[cluster]` in `toolplane.toml`, or
/// `toolplane serve --cluster URL`).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// NATS server URLs (`nats://host:port`); the client tries them in turn.
    pub nats: Vec<String>,
    /// This node's name: a NATS subject token (`[A-Za-z0-9_-]`), unique in
    /// the cluster. Answers to the calls it takes come to `tp.reply.{node}`.
    pub node: String,
    /// Partitions of keyed calls: fixed for the life of the stream, the
    /// same on every node.
    pub partitions: u32,
    /// A NATS credentials file (`.creds`), when the server asks for one.
    pub credentials: Option<PathBuf>,
    /// How long a pulled call may go without an acknowledgement (or a
    /// progress note, sent every third of it while the call runs) before
    /// the server hands it to another node.
    pub ack_wait: Duration,
    /// Deliveries of one call at most; the last is answered with an error
    /// naming this limit.
    pub max_deliver: u32,
    /// Copies of each stream in a NATS cluster (1, or 3 for a cluster of
    /// three servers).
    pub replicas: u32,
    /// Calls this node runs for the cluster at once: it pulls no more.
    pub max_inflight: u32,
    /// Calls waiting in the stream at most (`discard = new`: a publish
    /// past it is refused, and its caller told).
    pub max_pending: u64,
    /// Bytes of calls waiting in the stream at most.
    pub max_pending_bytes: u64,
    /// How long to try to reach NATS at start before giving up.
    pub connect_timeout: Duration,
}

/// The partitions when `[cluster]` does not say.
pub const DEFAULT_PARTITIONS: u32 = 64;
/// The most partitions (each is a consumer on the server, pulled by every
/// node).
pub const MAX_PARTITIONS: u32 = 4096;

impl Options {
    /// A node named `node` of a cluster on `nats`, with every other setting
    /// at its default.
    pub fn new(nats: Vec<String>, node: String) -> Options {
        Options {
            nats,
            node,
            partitions: DEFAULT_PARTITIONS,
            credentials: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            replicas: 1,
            max_inflight: 1024,
            max_pending: 1_000_000,
            max_pending_bytes: 1 << 30,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The NATS URLs as they may be shown (logs, errors, `/readyz`):
    /// without a `user:password@` part.
    pub fn nats_shown(&self) -> String {
        self.nats
            .iter()
            .map(|u| match u.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => u.clone(),
                },
                None => u.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The host's name as a node name: characters a subject token may not
    /// hold become `-` (`tp` when there is no host name).
    pub fn default_node() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "tp".into());
        host.chars()
            .map(|c| if valid_char(c) { c } else { '-' })
            .take(64)
            .collect()
    }

    /// Every setting in range, or the first that is not, named as
    /// `[cluster]` names it.
    ///
    /// # Errors
    ///
    /// A message naming the key, its value and what is accepted.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats.is_empty() {
            return Err("cluster.nats: name at least one NATS server URL".into());
        }
        for u in &self.nats {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) {
                return Err(format!(
                    "cluster.nats: {u:?} is not a NATS URL (nats://host:port or tls://host:port)"
                ));
            }
        }
        if self.node.is_empty() || self.node.len() > 64 || !self.node.chars().all(valid_char) {
            return Err(format!(
                "cluster.node: {:?} must be 1 to 64 of A-Z a-z 0-9 _ - (it is a NATS subject token)",
                self.node
            ));
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(format!(
                "cluster.partitions: {} is out of range (1 to {MAX_PARTITIONS})",
                self.partitions
            ));
        }
        // Progress acks go every ack_wait / 3: below a second, a node
        // whose runtime stalls for a moment loses the calls it runs.
        if self.ack_wait < Duration::from_secs(1) || self.ack_wait > Duration::from_secs(3600) {
            return Err(format!(
                "cluster.ack_wait: {} is out of range (1s to 1h)",
                humantime::format_duration(self.ack_wait)
            ));
        }
        if self.max_deliver < 2 {
            return Err(format!(
                "cluster.max_deliver: {} is too few (at least 2: a call whose node dies is delivered again)",
                self.max_deliver
            ));
        }
        if !matches!(self.replicas, 1..=5) {
            return Err(format!(
                "cluster.replicas: {} is out of range (1 to 5)",
                self.replicas
            ));
        }
        if self.max_inflight <= self.partitions {
            return Err(format!(
                "cluster.max_inflight: {} must be above cluster.partitions ({}): every partition keeps one pull open",
                self.max_inflight, self.partitions
            ));
        }
        if self.max_pending == 0 || self.max_pending_bytes == 0 {
            return Err(
                "cluster.max_pending and cluster.max_pending_bytes must be above zero".into(),
            );
        }
        Ok(())
    }
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_out_of_range_is_named() {
        let ok = Options::new(vec!["nats://127.0.0.1:4222".into()], "n1".into());
        assert_eq!(ok.validate(), Ok(()));
        type Bad = fn(&mut Options);
        let cases: [(&str, Bad); 8] = [
            ("cluster.nats", |o| o.nats.clear()),
            ("cluster.nats", |o| o.nats = vec!["http://x".into()]),
            ("cluster.node", |o| o.node = "a.b".into()),
            ("cluster.partitions", |o| o.partitions = 0),
            ("cluster.ack_wait", |o| {
                o.ack_wait = Duration::from_millis(10)
            }),
            ("cluster.max_deliver", |o| o.max_deliver = 1),
            ("cluster.replicas", |o| o.replicas = 7),
            ("cluster.max_inflight", |o| o.max_inflight = 64),
        ];
        for (key, bad) in cases {
            let mut o = ok.clone();
            bad(&mut o);
            let e = o.validate().unwrap_err();
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        let o = Options::new(
            vec![
                "nats://tp:s3cret@10.0.0.1:4222".into(),
                "tls://10.0.0.2:4222".into(),
            ],
            "n".into(),
        );
        assert_eq!(o.nats_shown(), "nats://10.0.0.1:4222, tls://10.0.0.2:4222");
    }

    #[test]
    fn a_host_name_becomes_a_subject_token() {
        let n = Options::default_node();
        assert!(!n.is_empty() && n.chars().all(valid_char), "{n}");
    }
}
