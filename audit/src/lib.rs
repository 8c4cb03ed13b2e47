//! toolplane's audit log: one record per call that reached admission
//! (who, which tool, what outcome, how long, the input's digest), written
//! durably in batches (group commit) by a background thread, in files of
//! framed, checksummed records that [`read`] reads back, telling a torn
//! tail (a crash mid-write) from a corrupted record.
//!
//! ```no_run
//! # async fn f(record: toolplane_audit::Record) -> Result<(), toolplane_audit::AuditError> {
//! let opts = toolplane_audit::Options::new("audit".into());
//! let log = toolplane_audit::AuditLog::open(opts)?;
//! log.append(record).await?; // in the ring (async), or on disk (before-answer)
//! log.close();
//! # Ok(()) }
//! ```

mod error;
pub mod frame;
pub mod log;
mod options;
pub mod read;
pub mod record;

pub use error::AuditError;
pub use log::{AuditLog, State, Stats};
pub use options::{Durability, OnFull, Options};
pub use record::Record;
