//! `/metrics`: the Prometheus text exposition format (version 0.0.4) of the
//! engine's counters, gauges and latency histograms, the server's per-tool
//! call counts, the registry's state and the process's memory.

use std::fmt::Write;

use hdrhistogram::Histogram;
use toolplane_core::{OutcomeKind, RejectReason};

use crate::app::App;

/// Bucket bounds of the engine's latency histograms (by stage), in
/// seconds.
const STAGE_BUCKETS: [f64; 20] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric.
pub fn render(app: &App) -> String {
    let mut out = String::with_capacity(8 << 10);
    server(&mut out, app);
    if let Some(m) = app.metrics() {
        engine(&mut out, &m);
    }
    processes(&mut out, app);
    if let Some(c) = app.clients() {
        clients(&mut out, c);
    }
    if let Some(v) = app.oauth() {
        let help = "OAuth access tokens held checked (taken again without a check for up to 60 s).";
        one(
            &mut out,
            "toolplane_oauth_tokens_cached",
            GAUGE,
            help,
            v.cached_tokens(),
        );
    }
    if let Some(log) = app.audit() {
        audit(&mut out, log);
    }
    if let Some(c) = app.cluster() {
        cluster(&mut out, c);
    }
    if let Some(t) = app.tracing() {
        use std::sync::atomic::Ordering::Relaxed;
        let s = t.stats();
        one(
            &mut out,
            "toolplane_trace_spans_exported_total",
            COUNTER,
            "Spans the OTLP collector took.",
            s.exported.load(Relaxed),
        );
        one(
            &mut out,
            "toolplane_trace_spans_failed_total",
            COUNTER,
            "Spans in OTLP exports that failed (the collector refused them, or did not answer in time).",
            s.failed.load(Relaxed),
        );
    }
    if let Some((rss, vsz)) = process_memory() {
        let o = &mut out;
        one(
            o,
            "process_resident_memory_bytes",
            GAUGE,
            "Resident memory size in bytes.",
            rss,
        );
        one(
            o,
            "process_virtual_memory_bytes",
            GAUGE,
            "Virtual memory size in bytes.",
            vsz,
        );
    }
    out
}

const GAUGE: &str = "gauge";

/// A process tool's counter's value.
type PerTool = fn(&toolplane_pool::kind::ProcessStats) -> u64;

/// A per-worker gauge's value.
type PerWorker = fn(&toolplane_core::WorkerMetrics) -> u64;
const COUNTER: &str = "counter";

/// The server's own: liveness, readiness, calls by tool and result,
/// connections, MCP sessions and the registry.
fn server(o: &mut String, app: &App) {
    let ready = matches!(app.readiness(), crate::app::Readiness::Ready(_));
    one(o, "toolplane_up", GAUGE, "1 while the server runs.", 1);
    one(
        o,
        "toolplane_ready",
        GAUGE,
        "1 when /readyz answers 200.",
        u8::from(ready),
    );
    let uptime = format!("{:.3}", app.uptime().as_secs_f64());
    one(
        o,
        "toolplane_uptime_seconds",
        GAUGE,
        "Seconds since the server started.",
        uptime,
    );

    head(
        o,
        "toolplane_calls_total",
        COUNTER,
        "Calls made through this server (REST, MCP), by tool and result.",
    );
    for (tool, result, n) in app.counters().snapshot(&app.registry().tool_table()) {
        let _ = writeln!(
            o,
            "toolplane_calls_total{{tool=\"{}\",result=\"{result}\"}} {n}",
            escape(&tool)
        );
    }
    let help = "Calls through this server not yet answered.";
    one(o, "toolplane_calls_in_flight", GAUGE, help, app.in_flight());

    let c = app.connections();
    one(
        o,
        "toolplane_http_connections",
        GAUGE,
        "HTTP connections open.",
        c.open(),
    );
    let help = "HTTP connections served in full (server.max_connections).";
    one(o, "toolplane_http_connections_max", GAUGE, help, c.max());
    let help = "Connections accepted above the cap: health, readiness and metrics only.";
    let name = "toolplane_http_connections_reserve_total";
    one(o, name, COUNTER, help, c.reserve_total());
    let help = "Connections closed at once, beyond the cap and its reserve.";
    let name = "toolplane_http_connections_refused_total";
    one(o, name, COUNTER, help, c.refused_total());

    let m = app.sessions();
    one(
        o,
        "toolplane_mcp_sessions",
        GAUGE,
        "MCP sessions open.",
        m.open(),
    );
    let help = "MCP initializes refused at server.max_sessions.";
    one(
        o,
        "toolplane_mcp_sessions_refused_total",
        COUNTER,
        help,
        m.refused(),
    );
    let help = "MCP sessions closed after server.session_idle unused.";
    one(
        o,
        "toolplane_mcp_sessions_expired_total",
        COUNTER,
        help,
        m.expired(),
    );

    head(o, "toolplane_tools", GAUGE, "Tools listed, by load state.");
    for (state, n) in app.tool_states() {
        let _ = writeln!(o, "toolplane_tools{{state=\"{state}\"}} {n}");
    }
    let r = app.registry();
    let help = "Changes whenever the tool list does.";
    one(o, "toolplane_registry_version", GAUGE, help, r.version());
    let help = "Files the registry could not use.";
    one(
        o,
        "toolplane_registry_problems",
        GAUGE,
        help,
        r.problems().len(),
    );
}

/// The engine's: events by outcome, rejections by reason, queues and
/// workers, spans, latency histograms.
fn engine(o: &mut String, m: &toolplane_core::Metrics) {
    let help = "Events the engine accepted.";
    one(
        o,
        "toolplane_events_accepted_total",
        COUNTER,
        help,
        m.accepted,
    );
    head(
        o,
        "toolplane_events_total",
        COUNTER,
        "Completed events, by outcome.",
    );
    for k in OutcomeKind::ALL {
        let (label, n) = (k.as_str(), m.outcomes.get(k));
        let _ = writeln!(o, "toolplane_events_total{{outcome=\"{label}\"}} {n}");
    }
    let help = "Events refused at admission, by reason.";
    head(o, "toolplane_rejected_total", COUNTER, help);
    for r in RejectReason::AT_ADMISSION {
        let (label, n) = (r.as_str(), m.rejected.get(r));
        let _ = writeln!(o, "toolplane_rejected_total{{reason=\"{label}\"}} {n}");
    }
    let help = "Accepted events not completed.";
    one(o, "toolplane_events_in_flight", GAUGE, help, m.in_flight);
    let per_worker: [(&str, &str, PerWorker); 3] = [
        (
            "toolplane_queue_depth",
            "Events waiting, per worker.",
            |w| w.queue_depth,
        ),
        (
            "toolplane_worker_calls_in_flight",
            "Calls running, per worker.",
            |w| w.calls_in_flight,
        ),
        (
            "toolplane_worker_alive",
            "1 while the worker thread runs.",
            |w| u64::from(w.alive),
        ),
    ];
    for (name, help, value) in per_worker {
        head(o, name, GAUGE, help);
        for (i, w) in m.workers.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", value(w));
        }
    }
    let help = "Sampled spans dropped on a full export ring.";
    one(
        o,
        "toolplane_spans_dropped_total",
        COUNTER,
        help,
        m.spans_dropped,
    );
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

/// A metric with one unlabelled sample.
/// The audit log: records written, batches and their syncs, records
/// dropped, calls that waited for room, write errors, the ring's depth.
fn audit(o: &mut String, log: &toolplane_audit::AuditLog) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = log.stats();
    let rows: [(&str, &str, &str, u64); 7] = [
        (
            "toolplane_audit_records_total",
            COUNTER,
            "Audit records on disk.",
            s.written.load(Relaxed),
        ),
        (
            "toolplane_audit_batches_total",
            COUNTER,
            "Audit batches written, one write and one fdatasync each.",
            s.batches.load(Relaxed),
        ),
        (
            "toolplane_audit_bytes_total",
            COUNTER,
            "Bytes written to the audit log.",
            s.bytes.load(Relaxed),
        ),
        (
            "toolplane_audit_dropped_total",
            COUNTER,
            "Audit records dropped because the ring stayed full (audit.on_full).",
            s.dropped.load(Relaxed),
        ),
        (
            "toolplane_audit_full_waits_total",
            COUNTER,
            "Calls that found the audit ring full and waited for room.",
            s.full_waits.load(Relaxed),
        ),
        (
            "toolplane_audit_errors_total",
            COUNTER,
            "Audit writes or syncs that failed (the disk full or failing).",
            s.errors.load(Relaxed),
        ),
        (
            "toolplane_audit_queued",
            GAUGE,
            "Audit records waiting in the ring.",
            log.queued() as u64,
        ),
    ];
    for (name, kind, help, v) in rows {
        one(o, name, kind, help, v);
    }
    let sync = s.sync_ns.load(Relaxed) as f64 / 1e9;
    one(
        o,
        "toolplane_audit_sync_seconds_total",
        COUNTER,
        "Time spent in the audit log's fdatasync.",
        sync,
    );
    one(
        o,
        "toolplane_audit_failing",
        GAUGE,
        "1 while writing the audit log fails.",
        u8::from(log.failing().is_some()),
    );
}

/// The cluster path: what this node published, pulled, ran again or
/// answered from the results bucket, and its connection.
fn cluster(o: &mut String, c: &toolplane_cluster::Cluster) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = c.stats();
    let rows: [(&str, &str, &str, u64); 12] = [
        (
            "toolplane_cluster_published_total",
            COUNTER,
            "Calls this node took and the cluster's stream accepted.",
            s.published.load(Relaxed),
        ),
        (
            "toolplane_cluster_refused_total",
            COUNTER,
            "Calls this node took that the stream refused (nothing ran).",
            s.refused.load(Relaxed),
        ),
        (
            "toolplane_cluster_no_answer_total",
            COUNTER,
            "Calls this node took whose answer did not come in time.",
            s.no_answer.load(Relaxed),
        ),
        (
            "toolplane_cluster_answered_from_store_total",
            COUNTER,
            "Answers read from the results bucket after the reply was lost.",
            s.answered_from_store.load(Relaxed),
        ),
        (
            "toolplane_cluster_pulled_total",
            COUNTER,
            "Calls this node pulled from the cluster to run.",
            s.pulled.load(Relaxed),
        ),
        (
            "toolplane_cluster_redelivered_total",
            COUNTER,
            "Pulled calls delivered before (a node died, paused, or sent them back).",
            s.redelivered.load(Relaxed),
        ),
        (
            "toolplane_cluster_duplicates_suppressed_total",
            COUNTER,
            "Deliveries whose result was stored already: acknowledged, not run again.",
            s.duplicates_suppressed.load(Relaxed),
        ),
        (
            "toolplane_cluster_lost_races_total",
            COUNTER,
            "Results this node made for calls another node had answered first.",
            s.lost_races.load(Relaxed),
        ),
        (
            "toolplane_cluster_sent_back_total",
            COUNTER,
            "Pulled calls sent back to the stream (engine full or stopping).",
            s.sent_back.load(Relaxed),
        ),
        (
            "toolplane_cluster_outcome_unknown_total",
            COUNTER,
            "Calls answered \"outcome unknown\": started elsewhere, no result, not safe to run twice.",
            s.outcome_unknown.load(Relaxed),
        ),
        (
            "toolplane_cluster_stale_answers_total",
            COUNTER,
            "Answers that came for no waiting call.",
            s.stale_answers.load(Relaxed),
        ),
        (
            "toolplane_cluster_running",
            GAUGE,
            "Calls this node runs for the cluster now.",
            s.running.load(Relaxed),
        ),
    ];
    for (name, kind, help, v) in rows {
        one(o, name, kind, help, v);
    }
    one(
        o,
        "toolplane_cluster_connected",
        GAUGE,
        "1 while the connection to NATS is up.",
        u8::from(c.connected()),
    );
    let (le, sum, count) = s.latency.snapshot();
    let name = "toolplane_cluster_call_seconds";
    head(
        o,
        name,
        "histogram",
        "Calls this node took: from publishing to the answer, through the cluster.",
    );
    for (b, n) in le {
        let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
    );
    // Per partition (and `any`), as the consumers said at the last read.
    let rows = c.consumers();
    if rows.is_empty() {
        return;
    }
    type Col = fn(&toolplane_cluster::ConsumerStatus) -> Option<f64>;
    let cols: [(&str, &str, Col); 4] = [
        (
            "toolplane_cluster_partition_pending",
            "Calls waiting in the stream, per partition (`any`: keyless), not yet delivered.",
            |r| Some(r.pending as f64),
        ),
        (
            "toolplane_cluster_partition_in_flight",
            "Calls delivered and not yet acknowledged, per partition.",
            |r| Some(r.in_flight as f64),
        ),
        (
            "toolplane_cluster_partition_redelivered",
            "Calls delivered more than once and not yet acknowledged, per partition.",
            |r| Some(r.redelivered as f64),
        ),
        (
            "toolplane_cluster_partition_oldest_seconds",
            "Age of the partition's oldest call not yet acknowledged.",
            |r| r.oldest_ms.map(|ms| ms as f64 / 1e3),
        ),
    ];
    for (name, help, col) in cols {
        head(o, name, GAUGE, help);
        for r in &rows {
            let v = col(r).unwrap_or(0.0);
            let _ = writeln!(o, "{name}{{partition=\"{}\"}} {v}", r.name);
        }
    }
}

fn one(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}

/// Process tools: processes by state, restarts, queue, refusals, why a
/// tool is down, and the latency of waiting and of service.
fn processes(o: &mut String, app: &App) {
    let tools: Vec<(String, toolplane_pool::kind::ProcessStats)> = app
        .registry()
        .snapshot()
        .iter()
        // A set's members share its processes: the set's series are theirs
        // (so /metrics does not grow with the member count).
        .filter(|e| e.set.is_none())
        .filter_map(|e| {
            let stats = e.loaded()?.as_ref().ok()?.stats()?;
            Some((escape(&e.manifest.name), stats))
        })
        .collect();
    if tools.is_empty() {
        return;
    }
    let help = "Processes of a process tool, by state (starting, alive).";
    head(o, "toolplane_process_processes", GAUGE, help);
    for (t, s) in &tools {
        let _ = writeln!(
            o,
            "toolplane_process_processes{{tool=\"{t}\",state=\"starting\"}} {}",
            s.starting
        );
        let _ = writeln!(
            o,
            "toolplane_process_processes{{tool=\"{t}\",state=\"alive\"}} {}",
            s.alive
        );
    }
    let per_tool: [(&str, &str, &str, PerTool); 3] = [
        (
            "toolplane_process_restarts_total",
            COUNTER,
            "Processes that ended unasked (crashed, exited, killed for a hung call or garbage) or failed to start.",
            |s| s.restarts,
        ),
        (
            "toolplane_process_queue_depth",
            GAUGE,
            "Calls waiting for a turn.",
            |s| s.queued,
        ),
        (
            "toolplane_process_refused_total",
            COUNTER,
            "Calls refused because pool.queue calls were waiting already.",
            |s| s.refused,
        ),
    ];
    for (name, kind, help, value) in per_tool {
        head(o, name, kind, help);
        for (t, s) in &tools {
            let _ = writeln!(o, "{name}{{tool=\"{t}\"}} {}", value(s));
        }
    }
    let help = "1 while a process tool is down (its processes keep failing), with the reason.";
    head(o, "toolplane_process_down", GAUGE, help);
    for (t, s) in &tools {
        match &s.down {
            Some(why) => {
                let _ = writeln!(
                    o,
                    "toolplane_process_down{{tool=\"{t}\",reason=\"{}\"}} 1",
                    escape(why)
                );
            }
            None => {
                let _ = writeln!(o, "toolplane_process_down{{tool=\"{t}\",reason=\"\"}} 0");
            }
        }
    }
    let name = "toolplane_process_latency_seconds";
    let help = "Process tool calls: waiting for a turn and a process (queue), and from a process taking a call to its answer (service).";
    head(o, name, "histogram", help);
    for (t, s) in &tools {
        for (stage, h) in [("queue", &s.queue_wait), ("service", &s.service)] {
            for (le, n) in toolplane_pool::kind::LATENCY_BUCKETS
                .iter()
                .zip(h.cumulative)
            {
                let _ = writeln!(
                    o,
                    "{name}_bucket{{tool=\"{t}\",stage=\"{stage}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                o,
                "{name}_bucket{{tool=\"{t}\",stage=\"{stage}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "{name}_sum{{tool=\"{t}\",stage=\"{stage}\"}} {:.9}",
                h.sum.as_secs_f64()
            );
            let _ = writeln!(
                o,
                "{name}_count{{tool=\"{t}\",stage=\"{stage}\"}} {}",
                h.count
            );
        }
    }
}

/// Each client's: calls by result (refusals by reason among them), in
/// flight, queued, the queue's wait and latency; requests refused for
/// their token. Only a client with `metrics = true` reads these.
fn clients(o: &mut String, dir: &crate::clients::Directory) {
    let list = dir.list();
    let help = "Clients served ([[clients]]).";
    one(o, "toolplane_clients", GAUGE, help, list.clients().len());
    let help = "HTTP requests refused for their bearer token (missing, or no client's).";
    one(
        o,
        "toolplane_unauthorized_total",
        COUNTER,
        help,
        dir.unauthorized(),
    );
    let help = "Keys held by the clients' rate limiters.";
    one(
        o,
        "toolplane_rate_limiter_keys",
        GAUGE,
        help,
        dir.limiter_keys(),
    );
    // The list's clients, then OAuth clients not in it (bounded: see
    // `Directory::oauth_client`).
    let views: Vec<(String, crate::clients::StatsView)> = list
        .clients()
        .iter()
        .map(|c| (escape(c.name()), c.stats().view()))
        .chain(dir.oauth_stats().iter().map(|(n, s)| (escape(n), s.view())))
        .collect();
    head(
        o,
        "toolplane_client_calls_total",
        COUNTER,
        "Calls by client and result (out_of_scope, rate_limited, queue_full and queue_timeout are the client's own refusals).",
    );
    for (c, v) in &views {
        for (result, n) in &v.by_result {
            let _ = writeln!(
                o,
                "toolplane_client_calls_total{{client=\"{c}\",result=\"{result}\"}} {n}"
            );
        }
    }
    type PerClient = fn(&crate::clients::StatsView) -> u64;
    let gauges: [(&str, &str, PerClient); 2] = [
        (
            "toolplane_client_calls_in_flight",
            "A client's calls running (holding one of its max_inflight slots).",
            |v| v.in_flight,
        ),
        (
            "toolplane_client_calls_queued",
            "A client's calls waiting for a slot.",
            |v| v.queued,
        ),
    ];
    for (name, help, f) in gauges {
        head(o, name, GAUGE, help);
        for (c, v) in &views {
            let _ = writeln!(o, "{name}{{client=\"{c}\"}} {}", f(v));
        }
    }
    head(
        o,
        "toolplane_client_queue_wait_seconds",
        "summary",
        "Time a client's calls waited for a slot (those that waited).",
    );
    for (c, v) in &views {
        let (sum, n) = v.queue_wait;
        let _ = writeln!(
            o,
            "toolplane_client_queue_wait_seconds_sum{{client=\"{c}\"}} {sum:.6}\n\
             toolplane_client_queue_wait_seconds_count{{client=\"{c}\"}} {n}"
        );
    }
    let name = "toolplane_client_call_duration_seconds";
    head(
        o,
        name,
        "histogram",
        "A client's calls from arrival to answer, queue included.",
    );
    for (c, v) in &views {
        let (buckets, count, sum) = &v.latency;
        for (le, n) in crate::clients::LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(o, "{name}_bucket{{client=\"{c}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "{name}_bucket{{client=\"{c}\",le=\"+Inf\"}} {count}\n\
             {name}_sum{{client=\"{c}\"}} {sum:.6}\n{name}_count{{client=\"{c}\"}} {count}"
        );
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One labelled histogram from nanosecond samples: cumulative buckets, sum
/// and count.
fn histogram(o: &mut String, stage: &str, h: &Histogram<u64>) {
    for le in STAGE_BUCKETS {
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
