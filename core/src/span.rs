//! Spans: one record per event (queue wait, service time, tool, outcome,
//! worker), and a sampled export of one in `sample_every` of them.
//!
//! Span records live in the worker's fixed in-flight table while a call
//! runs; a sampled record is pushed onto the worker's own bounded rtrb ring
//! to the exporter thread. A full ring drops the record and counts it: the
//! exporter can never stall a worker. The exporter wakes every 10 ms,
//! drains every ring, scales the raw timestamps, and writes JSON lines to a
//! file or hands each span to a callback.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::event::ToolId;
use crate::outcome::{OutcomeKind, Timestamps};
use crate::tools::ToolTable;

/// Capacity of each worker's export ring.
pub(crate) const EXPORT_RING: usize = 4096;
const EXPORT_EVERY: Duration = Duration::from_millis(10);

/// A span as the worker records it: raw timestamps, no strings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanRecord {
    pub(crate) worker: u16,
    pub(crate) tool: ToolId,
    pub(crate) key: Option<u64>,
    pub(crate) tag: u64,
    pub(crate) outcome: OutcomeKind,
    pub(crate) times: Timestamps,
}

/// An exported span, with durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// The worker that ran the event.
    pub worker: u16,
    /// The tool's name (or `#<id>` if it was never interned).
    pub tool: String,
    /// The event's ordering key.
    pub key: Option<u64>,
    /// The event's tag.
    pub tag: u64,
    /// How it ended: `ok`, `error`, `timeout`, `trap`, `panicked`,
    /// `cancelled`.
    pub outcome: &'static str,
    /// Admission to start.
    pub queue_wait_ns: u64,
    /// Start to finish.
    pub service_ns: u64,
    /// Admission to finish.
    pub end_to_end_ns: u64,
}

/// Where sampled spans go.
#[derive(Clone, Default)]
pub enum SpanExport {
    /// Nowhere: sampling is off.
    #[default]
    Off,
    /// JSON lines appended to this file.
    JsonLines(PathBuf),
    /// This callback, on the exporter thread.
    Callback(Arc<dyn Fn(&Span) + Send + Sync>),
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpanExport::Off => f.write_str("Off"),
            SpanExport::JsonLines(p) => f.debug_tuple("JsonLines").field(p).finish(),
            SpanExport::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

enum Output {
    File(BufWriter<File>),
    Callback(Arc<dyn Fn(&Span) + Send + Sync>),
}

/// The exporter thread and the means to stop it.
pub(crate) struct Exporter {
    stop: flume::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// Opens the export file (so a bad path fails the build, not later).
pub(crate) fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(BufWriter::new(file))
}

impl Exporter {
    /// Starts the exporter over the consumer ends of the workers' rings.
    pub(crate) fn start(
        export: &SpanExport,
        file: Option<BufWriter<File>>,
        rings: Vec<rtrb::Consumer<SpanRecord>>,
        clock: quanta::Clock,
        tools: Arc<ToolTable>,
    ) -> std::io::Result<Exporter> {
        let mut output = match (export, file) {
            (_, Some(f)) => Output::File(f),
            (SpanExport::Callback(cb), None) => Output::Callback(cb.clone()),
            _ => unreachable!("the exporter starts only with a file or a callback"),
        };
        let (stop, stopped) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("toolplane-spans".into())
            .spawn(move || {
                let mut rings = rings;
                loop {
                    let done = !matches!(
                        stopped.recv_timeout(EXPORT_EVERY),
                        Err(flume::RecvTimeoutError::Timeout)
                    );
                    drain(&mut rings, &mut output, &clock, &tools);
                    if done {
                        if let Output::File(f) = &mut output {
                            let _ = f.flush();
                        }
                        return;
                    }
                }
            })?;
        Ok(Exporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Drains what the workers left and stops.
    pub(crate) fn finish(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn drain(
    rings: &mut [rtrb::Consumer<SpanRecord>],
    output: &mut Output,
    clock: &quanta::Clock,
    tools: &ToolTable,
) {
    for ring in rings {
        let n = ring.slots();
        let Ok(chunk) = ring.read_chunk(n) else {
            continue;
        };
        for r in chunk {
            let span = Span {
                worker: r.worker,
                tool: tools
                    .name(r.tool)
                    .map_or_else(|| format!("#{}", r.tool.0), |n| n.to_string()),
                key: r.key,
                tag: r.tag,
                outcome: r.outcome.as_str(),
                queue_wait_ns: clock.delta_as_nanos(r.times.submitted, r.times.started),
                service_ns: clock.delta_as_nanos(r.times.started, r.times.finished),
                end_to_end_ns: clock.delta_as_nanos(r.times.submitted, r.times.finished),
            };
            match output {
                Output::File(f) => {
                    // A write error (disk full) loses spans, never events.
                    let _ = serde_json::to_writer(&mut *f, &span);
                    let _ = f.write_all(b"\n");
                }
                Output::Callback(cb) => cb(&span),
            }
        }
    }
    if let Output::File(f) = output {
        let _ = f.flush();
    }
}
