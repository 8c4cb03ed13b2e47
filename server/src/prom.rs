//! `/metrics`: the Prometheus text exposition format (version 0.0.4) of the
//! engine's counters, gauges and latency histograms, the server's per-tool
//! call counts, the registry's state and the process's memory.

use std::fmt::Write;

use hdrhistogram::Histogram;
use toolplane_core::{OutcomeKind, RejectReason};

use crate::app::App;

/// Bucket bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 20] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric.
pub fn render(app: &App) -> String {
    let mut out = String::with_capacity(8 << 10);
    let o = &mut out;

    head(o, "toolplane_up", "gauge", "1 while the server runs.");
    let _ = writeln!(o, "toolplane_up 1");
    head(o, "toolplane_ready", "gauge", "1 when /readyz answers 200.");
    let ready = matches!(app.readiness(), crate::app::Readiness::Ready);
    let _ = writeln!(o, "toolplane_ready {}", u8::from(ready));
    head(
        o,
        "toolplane_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        o,
        "toolplane_uptime_seconds {:.3}",
        app.uptime().as_secs_f64()
    );

    head(
        o,
        "toolplane_calls_total",
        "counter",
        "Calls made through this server (REST, MCP), by tool and result.",
    );
    for (tool, result, n) in app.counters().snapshot(&app.registry().tool_table()) {
        let _ = writeln!(
            o,
            "toolplane_calls_total{{tool=\"{}\",result=\"{result}\"}} {n}",
            escape(&tool)
        );
    }
    head(
        o,
        "toolplane_calls_in_flight",
        "gauge",
        "Calls through this server not yet answered.",
    );
    let _ = writeln!(o, "toolplane_calls_in_flight {}", app.in_flight());

    let c = app.connections();
    head(
        o,
        "toolplane_http_connections",
        "gauge",
        "HTTP connections open.",
    );
    let _ = writeln!(o, "toolplane_http_connections {}", c.open());
    head(
        o,
        "toolplane_http_connections_max",
        "gauge",
        "HTTP connections served in full (server.max_connections).",
    );
    let _ = writeln!(o, "toolplane_http_connections_max {}", c.max());
    head(
        o,
        "toolplane_http_connections_reserve_total",
        "counter",
        "Connections accepted above the cap: health, readiness and metrics only.",
    );
    let _ = writeln!(
        o,
        "toolplane_http_connections_reserve_total {}",
        c.reserve_total()
    );
    head(
        o,
        "toolplane_http_connections_refused_total",
        "counter",
        "Connections closed at once, beyond the cap and its reserve.",
    );
    let _ = writeln!(
        o,
        "toolplane_http_connections_refused_total {}",
        c.refused_total()
    );
    let m = app.sessions();
    head(o, "toolplane_mcp_sessions", "gauge", "MCP sessions open.");
    let _ = writeln!(o, "toolplane_mcp_sessions {}", m.open());
    head(
        o,
        "toolplane_mcp_sessions_refused_total",
        "counter",
        "MCP initializes refused at server.max_sessions.",
    );
    let _ = writeln!(o, "toolplane_mcp_sessions_refused_total {}", m.refused());
    head(
        o,
        "toolplane_mcp_sessions_expired_total",
        "counter",
        "MCP sessions closed after server.session_idle unused.",
    );
    let _ = writeln!(o, "toolplane_mcp_sessions_expired_total {}", m.expired());

    head(
        o,
        "toolplane_tools",
        "gauge",
        "Tools listed, by load state.",
    );
    for (state, n) in app.tool_states() {
        let _ = writeln!(o, "toolplane_tools{{state=\"{state}\"}} {n}");
    }
    head(
        o,
        "toolplane_registry_version",
        "gauge",
        "Changes whenever the tool list does.",
    );
    let _ = writeln!(o, "toolplane_registry_version {}", app.registry().version());
    head(
        o,
        "toolplane_registry_problems",
        "gauge",
        "Files the registry could not use.",
    );
    let _ = writeln!(
        o,
        "toolplane_registry_problems {}",
        app.registry().problems().len()
    );

    if let Some(m) = app.metrics() {
        head(
            o,
            "toolplane_events_accepted_total",
            "counter",
            "Events the engine accepted.",
        );
        let _ = writeln!(o, "toolplane_events_accepted_total {}", m.accepted);
        head(
            o,
            "toolplane_events_total",
            "counter",
            "Completed events, by outcome.",
        );
        for k in OutcomeKind::ALL {
            let _ = writeln!(
                o,
                "toolplane_events_total{{outcome=\"{}\"}} {}",
                k.as_str(),
                m.outcomes.get(k)
            );
        }
        head(
            o,
            "toolplane_rejected_total",
            "counter",
            "Events refused at admission, by reason.",
        );
        for r in RejectReason::ALL {
            let _ = writeln!(
                o,
                "toolplane_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                m.rejected.get(r)
            );
        }
        head(
            o,
            "toolplane_events_in_flight",
            "gauge",
            "Accepted events not completed.",
        );
        let _ = writeln!(o, "toolplane_events_in_flight {}", m.in_flight);
        head(
            o,
            "toolplane_queue_depth",
            "gauge",
            "Events waiting, per worker.",
        );
        for (i, w) in m.workers.iter().enumerate() {
            let _ = writeln!(
                o,
                "toolplane_queue_depth{{worker=\"{i}\"}} {}",
                w.queue_depth
            );
        }
        head(
            o,
            "toolplane_worker_calls_in_flight",
            "gauge",
            "Calls running, per worker.",
        );
        for (i, w) in m.workers.iter().enumerate() {
            let _ = writeln!(
                o,
                "toolplane_worker_calls_in_flight{{worker=\"{i}\"}} {}",
                w.calls_in_flight
            );
        }
        head(
            o,
            "toolplane_worker_alive",
            "gauge",
            "1 while the worker thread runs.",
        );
        for (i, w) in m.workers.iter().enumerate() {
            let _ = writeln!(
                o,
                "toolplane_worker_alive{{worker=\"{i}\"}} {}",
                u8::from(w.alive)
            );
        }
        head(
            o,
            "toolplane_spans_dropped_total",
            "counter",
            "Sampled spans dropped on a full export ring.",
        );
        let _ = writeln!(o, "toolplane_spans_dropped_total {}", m.spans_dropped);
        head(
            o,
            "toolplane_latency_seconds",
            "histogram",
            "Event latency by stage: queue_wait (admission to start), service (start to finish), end_to_end.",
        );
        histogram(o, "queue_wait", &m.latency.queue_wait);
        histogram(o, "service", &m.latency.service);
        histogram(o, "end_to_end", &m.latency.end_to_end);
    }

    if let Some((rss, vsz)) = process_memory() {
        head(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {rss}");
        head(
            o,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        let _ = writeln!(o, "process_virtual_memory_bytes {vsz}");
    }
    out
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One labelled histogram from nanosecond samples: cumulative buckets, sum
/// and count.
fn histogram(o: &mut String, stage: &str, h: &Histogram<u64>) {
    for le in BUCKETS {
        let n = h.count_between(0, (le * 1e9) as u64);
        let _ = writeln!(
            o,
            "toolplane_latency_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} {n}"
        );
    }
    let count = h.len();
    let _ = writeln!(
        o,
        "toolplane_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}"
    );
    let sum = h.mean() * count as f64 / 1e9;
    let _ = writeln!(
        o,
        "toolplane_latency_seconds_sum{{stage=\"{stage}\"}} {sum:.9}"
    );
    let _ = writeln!(
        o,
        "toolplane_latency_seconds_count{{stage=\"{stage}\"}} {count}"
    );
}

/// Label values escape backslash, quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident and virtual size from /proc/self/statm.
fn process_memory() -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut it = statm.split_whitespace().map(|v| v.parse::<u64>().ok());
    let vsz = it.next()??;
    let rss = it.next()??;
    let page = rustix::param::page_size() as u64;
    Some((rss * page, vsz * page))
}
