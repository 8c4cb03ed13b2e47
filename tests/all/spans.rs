//! Sampled spans: exported as JSON lines or to a callback, one in
//! `sample_every`, without ever stalling a worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use toolplane_core::{Event, Outcome, Span, SpanExport, handler_fn};

use crate::support::{builder, run_all};

#[test]
fn spans_are_written_as_json_lines_one_in_sample_every() {
    let path = std::env::temp_dir().join(format!("toolplane-spans-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let engine = builder(2)
        .sample_every(10)
        .span_export(SpanExport::JsonLines(path.clone()))
        .build(handler_fn(|e| {
            if e.payload().is_empty() {
                Outcome::error("empty")
            } else {
                Outcome::Ok(e.payload().clone())
            }
        }))
        .unwrap();
    let tool = engine.tool("echo");
    let mut p = engine.producer();
    let events = (0..2000u64).map(|i| {
        let body: &[u8] = if i % 2 == 0 { b"x" } else { b"" };
        Event::new(tool, body).with_key(i).with_tag(i)
    });
    let done = run_all(&mut p, events, Duration::from_secs(10));
    let report = engine.shutdown(Duration::from_secs(1));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let spans: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(spans.len() as u64, report.spans_exported);
    // Each worker samples one in ten of its own events.
    let per_worker = |w: u16| done.iter().filter(|c| c.worker == w).count() as u64;
    let expected = per_worker(0) / 10 + per_worker(1) / 10;
    assert_eq!(report.spans_exported + report.spans_dropped, expected);
    assert!(
        spans.len() as u64 >= expected * 3 / 4,
        "{} of {expected} spans",
        spans.len()
    );
    for s in &spans {
        assert_eq!(s["tool"], "echo");
        assert!(s["worker"].as_u64().unwrap() < 2);
        assert!(
            ["ok", "error"].contains(&s["outcome"].as_str().unwrap()),
            "{s}"
        );
        let (q, sv, e) = (
            s["queue_wait_ns"].as_u64().unwrap(),
            s["service_ns"].as_u64().unwrap(),
            s["end_to_end_ns"].as_u64().unwrap(),
        );
        assert!(q + sv <= e + 1 && e <= q + sv + 1, "{s}");
        assert_eq!(s["key"], s["tag"]);
    }
}

#[test]
fn a_span_callback_sees_the_sampled_spans() {
    let seen: Arc<Mutex<Vec<Span>>> = Arc::default();
    let s = seen.clone();
    let engine = builder(1)
        .sample_every(1)
        .span_export(SpanExport::Callback(Arc::new(move |span: &Span| {
            s.lock().unwrap().push(span.clone())
        })))
        .build(handler_fn(|_e| Outcome::Ok(Default::default())))
        .unwrap();
    let tool = engine.tool("noop");
    let mut p = engine.producer();
    run_all(
        &mut p,
        (0..100u64).map(|i| Event::new(tool, b"".as_slice()).with_tag(i)),
        Duration::from_secs(10),
    );
    let report = engine.shutdown(Duration::from_secs(1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, report.spans_exported);
    assert_eq!(report.spans_exported + report.spans_dropped, 100);
    assert!(seen.iter().all(|s| s.tool == "noop" && s.outcome == "ok"));
}

#[test]
fn a_stalled_exporter_drops_and_counts_spans_and_never_stalls_a_worker() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let engine = builder(1)
        .sample_every(1)
        .span_export(SpanExport::Callback(Arc::new(move |_span: &Span| {
            // The exporter blocks on its first span until the test lets go.
            let _ = release_rx.lock().unwrap().recv();
        })))
        .build(handler_fn(|_e| Outcome::Ok(Default::default())))
        .unwrap();
    let tool = engine.tool("noop");
    let mut p = engine.producer();
    // Far more spans than the export ring holds (4096), with the exporter
    // stuck: every event still completes.
    let events = (0..20_000u64).map(|i| Event::new(tool, b"".as_slice()).with_tag(i));
    run_all(&mut p, events, Duration::from_secs(20));
    crate::support::eventually(Duration::from_secs(5), "every span sampled", || {
        let m = engine.counters();
        m.spans_exported + m.spans_dropped == 20_000
    });
    let m = engine.counters();
    assert!(m.spans_dropped > 0, "{m:?}");
    assert!(m.spans_exported <= 4096 + 1, "{m:?}");
    drop(release_tx);
    assert!(engine.shutdown(Duration::from_secs(1)).is_balanced());
}
