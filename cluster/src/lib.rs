//! toolplane's cluster path on NATS JetStream (docs/cluster.md): a node
//! publishes each call it takes to a partitioned subject of one
//! WorkQueue stream, every node pulls from every partition's consumer
//! while its engine has room, the node that runs a call stores its
//! outcome (first stored wins) and sends it to the node that took it.
//!
//! ```no_run
//! # async fn f(exec: std::sync::Arc<impl toolplane_cluster::Execute>) -> Result<(), toolplane_cluster::ClusterError> {
//! use toolplane_cluster::{Cluster, Options};
//! let node = Cluster::connect(Options::new(vec!["nats://127.0.0.1:4222".into()], "tp-1".into())).await?;
//! node.serve(exec); // pull and run calls for the cluster
//! # Ok(()) }
//! ```

mod error;
pub mod local;
pub mod names;
mod node;
mod options;
pub mod partition;
mod server;
mod status;
pub mod wire;

pub use error::ClusterError;
pub use node::{Cluster, Execute, Job, LATENCY_BOUNDS, Latency, Pending, Request, Stats, Verdict};
pub use options::{DEFAULT_PARTITIONS, MAX_PARTITIONS, Options};
pub use status::{ConsumerStatus, NodeStatus, Status, status};
pub use wire::Outcome;
