//! The cluster path against a real `nats-server` (Debian's 2.9.10, started
//! per test on loopback with its own store): the checks at start, and the
//! call path with an engine stand-in that records what ran where.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use toolplane_cluster::local::LocalNats;
use toolplane_cluster::{Cluster, ClusterError, Execute, Job, Options, Request, Verdict, names};

fn options(nats: &LocalNats, node: &str) -> Options {
    let mut o = Options::new(vec![nats.url()], node.into());
    o.partitions = 8;
    o.max_inflight = 64;
    o.ack_wait = Duration::from_secs(2);
    o
}

fn request<'a>(call: &'a str, key: Option<u64>, input: &'a [u8]) -> Request<'a> {
    Request {
        call,
        tool: "echo",
        key,
        input,
        client: "test",
        wait: Duration::from_secs(10),
        start_by: Duration::from_secs(5),
        traceparent: None,
        tracestate: None,
    }
}

/// Each run: the node, the key, the stream sequence, the call.
type Runs = Arc<Mutex<Vec<(&'static str, Option<u64>, u64, String)>>>;

/// An engine stand-in: answers with its input, after `delay`; records
/// each run (node, key, stream sequence) in the order runs start.
struct Recorder {
    node: &'static str,
    delay: Duration,
    runs: Runs,
    /// Refuse this many first deliveries (as a full engine does).
    refuse_first: AtomicU64,
    protected: bool,
    /// Answers with this many bytes instead of the input.
    big: Option<usize>,
    /// A node without the tool (one that lags behind a change).
    lacks_tool: bool,
}

impl Recorder {
    fn new(node: &'static str, runs: &Runs) -> Recorder {
        Recorder {
            node,
            delay: Duration::ZERO,
            runs: Arc::clone(runs),
            refuse_first: AtomicU64::new(0),
            protected: false,
            big: None,
            lacks_tool: false,
        }
    }
}

impl Execute for Recorder {
    async fn execute(&self, job: Job) -> Verdict {
        if self
            .refuse_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Verdict::Retry {
                after: Duration::from_millis(10),
                result: "busy",
                why: "full".into(),
            };
        }
        if self.lacks_tool {
            return Verdict::Retry {
                after: Duration::from_millis(10),
                result: "unknown_tool",
                why: format!("no tool {} on node {}", job.tool, self.node),
            };
        }
        self.runs
            .lock()
            .unwrap()
            .push((self.node, job.key, job.sequence, job.call.clone()));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Verdict::Done {
            result: "ok".into(),
            message: String::new(),
            output: self.big.map_or(job.input, |n| Bytes::from(vec![b'x'; n])),
        }
    }

    async fn protected(&self, _tool: &str) -> bool {
        self.protected
    }
}

/// Takes the next call of `key`'s partition (of 8) as a node that never
/// acks it would: the pull (kept open) and the message.
async fn hold_first_delivery(
    js: &async_nats::jetstream::Context,
    key: u64,
) -> (
    async_nats::jetstream::consumer::pull::Batch,
    async_nats::jetstream::Message,
) {
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(names::STREAM)
        .await
        .unwrap()
        .get_consumer(&names::consumer(toolplane_cluster::partition::of(key, 8)))
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let first = futures_util::StreamExt::next(&mut batch)
        .await
        .unwrap()
        .unwrap();
    (batch, first)
}

async fn raw(nats: &LocalNats) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_and_nothing_falls_back() {
    let mut o = Options::new(vec!["nats://127.0.0.1:1".into()], "a".into());
    o.connect_timeout = Duration::from_millis(300);
    let e = Cluster::connect(o).await.unwrap_err();
    assert!(matches!(e, ClusterError::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("cluster.nats: cannot reach nats://127.0.0.1:1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::without_jetstream(dir.path()).unwrap();
    let e = Cluster::connect(options(&nats, "a")).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("is version 2.9.10") && text.contains("-js"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_differ_from_the_clusters_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let first = Cluster::connect(options(&nats, "a")).await.unwrap();

    // Another partition count: keys would move.
    let mut o = options(&nats, "b");
    o.partitions = 4;
    let text = Cluster::connect(o).await.unwrap_err().to_string();
    assert!(
        text.contains("stream TOOLPLANE_CALLS exists with partitions = 8, this node asks 4 (cluster.partitions)"),
        "{text}"
    );
    // Another ack_wait: the consumers' echo is compared.
    let mut o = options(&nats, "b");
    o.ack_wait = Duration::from_secs(3);
    let text = Cluster::connect(o).await.unwrap_err().to_string();
    assert!(
        text.contains("consumer k0 of stream TOOLPLANE_CALLS exists with ack_wait = 2s, this node asks 3s (cluster.ack_wait)"),
        "{text}"
    );
    // Another stream limit.
    let mut o = options(&nats, "b");
    o.max_pending = 10;
    let text = Cluster::connect(o).await.unwrap_err().to_string();
    assert!(
        text.contains("max_msgs = 1000000, this node asks 10 (cluster.max_pending)"),
        "{text}"
    );
    // A live node's name.
    let text = Cluster::connect(options(&nats, "a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("cluster.node: a node named \"a\" is alive"),
        "{text}"
    );
    // The same settings join.
    Cluster::connect(options(&nats, "b")).await.unwrap();
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_the_same_name_made_otherwise_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    raw(&nats)
        .await
        .create_stream(async_nats::jetstream::stream::Config {
            name: names::STREAM.into(),
            description: Some("toolplane calls, 8 partitions".into()),
            subjects: vec!["tp.call.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let text = Cluster::connect(options(&nats, "a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("exists with retention = Limits, this node asks WorkQueue"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_on_every_node_once_each_and_in_order_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let b = Cluster::connect(options(&nats, "b")).await.unwrap();
    let mut ra = Recorder::new("a", &runs);
    ra.delay = Duration::from_millis(1);
    a.serve(Arc::new(ra));
    let mut rb = Recorder::new("b", &runs);
    rb.delay = Duration::from_millis(1);
    b.serve(Arc::new(rb));

    // 40 keys, 10 calls each, all at once through both nodes, and 100
    // keyless calls.
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let ingress = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            let call = format!("{:032x}", 0x00c0_ffee_0000 + i);
            let key = (i < 400).then_some(i % 40);
            let input = format!("{{\"i\":{i}}}");
            let o = ingress
                .call(request(&call, key, input.as_bytes()))
                .await
                .unwrap();
            (i, o)
        }));
    }
    for t in tasks {
        let (i, o) = t.await.unwrap();
        assert_eq!(o.result, "ok");
        assert_eq!(o.output, Bytes::from(format!("{{\"i\":{i}}}")), "call {i}");
    }
    let runs = runs.lock().unwrap().clone();
    // Each call ran once.
    assert_eq!(runs.len(), 500);
    let mut calls: Vec<_> = runs.iter().map(|r| r.3.clone()).collect();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 500);
    // Both nodes ran calls.
    for n in ["a", "b"] {
        assert!(
            runs.iter().filter(|r| r.0 == n).count() > 50,
            "node {n}: {runs:?}"
        );
    }
    // Per key, in the stream's order, whichever node ran each.
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (_, key, seq, _) in &runs {
        if let Some(k) = key {
            let prev = last.insert(*k, *seq).unwrap_or(0);
            assert!(*seq > prev, "key {k}: {seq} ran after {prev}");
        }
    }
    assert_eq!(a.stats().duplicates_suppressed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_result_is_answered_again_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let call = "0000000000000000000000000000abcd";
    let waiting = {
        let a = Arc::clone(&a);
        tokio::spawn(async move { a.call(request(call, Some(3), b"{\"second\":true}")).await })
    };
    // A node that pulled the call, stored its result and died before its
    // ack: here, a plain consumer of the call's partition that stores a
    // result and never acks.
    let js = raw(&nats).await;
    let (_batch, first) = hold_first_delivery(&js, 3).await;
    assert_eq!(first.info().unwrap().delivered, 1);
    let stored = toolplane_cluster::Outcome {
        call: call.into(),
        node: "gone".into(),
        result: "ok".into(),
        message: String::new(),
        output: Bytes::from_static(b"{\"first\":true}"),
    };
    let kv = js.get_key_value(names::RESULTS).await.unwrap();
    kv.create(&stored.call, stored.encode()).await.unwrap();
    // The node that stored it died before sending it: the caller reads it
    // from the bucket (at its next look, within ack_wait). After ack_wait
    // the call is delivered again, to node a: found answered, not run,
    // and not sent again.
    a.serve(Arc::new(Recorder::new("a", &runs)));
    let o = waiting.await.unwrap().unwrap();
    assert_eq!(o, stored);
    assert_eq!(a.stats().answered_from_store.load(Ordering::Relaxed), 1);
    let t = std::time::Instant::now();
    while a.stats().duplicates_suppressed.load(Ordering::Relaxed) == 0
        && t.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.stats().duplicates_suppressed.load(Ordering::Relaxed), 1);
    assert_eq!(a.stats().redelivered.load(Ordering::Relaxed), 1);
    assert!(runs.lock().unwrap().is_empty());
    // No second answer reached the node that took the call.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.stats().stale_answers.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_sends_the_call_back_and_it_runs_later() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let r = Recorder::new("a", &runs);
    r.refuse_first.store(2, Ordering::SeqCst);
    a.serve(Arc::new(r));
    let o = a
        .call(request("00000000000000000000000000000001", Some(1), b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "ok");
    assert_eq!(runs.lock().unwrap().len(), 1);
    assert_eq!(a.stats().sent_back.load(Ordering::Relaxed), 2);
    assert_eq!(a.stats().redelivered.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_call_that_started_elsewhere_is_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let mut r = Recorder::new("a", &runs);
    r.protected = true;
    a.serve(Arc::new(r));
    // A protected call runs once, with its marker.
    let o = a
        .call(request("00000000000000000000000000000002", None, b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "ok");
    // One whose node died after starting it: the marker is there, no
    // result.
    let kv = raw(&nats)
        .await
        .get_key_value(names::RESULTS)
        .await
        .unwrap();
    let call = "00000000000000000000000000000003";
    kv.create(names::run_marker(call), Bytes::from_static(b"gone"))
        .await
        .unwrap();
    let o = a.call(request(call, None, b"{}")).await.unwrap();
    assert_eq!(o.result, "error");
    assert!(
        o.message
            .contains("outcome unknown: the call started on node \"gone\""),
        "{}",
        o.message
    );
    assert_eq!(runs.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_the_call_naming_the_limit_and_an_unanswered_call_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let mut o = options(&nats, "a");
    o.max_pending = 2;
    // Nobody pulls: calls wait in the stream.
    let a = Cluster::connect(o).await.unwrap();
    for n in 0..2 {
        let call = format!("{n:032x}");
        let mut r = request(&call, None, b"{}");
        r.wait = Duration::from_millis(200);
        let e = a.call(r).await.unwrap_err();
        assert!(matches!(e, ClusterError::NoAnswer { .. }), "{e}");
    }
    let e = a
        .call(request("00000000000000000000000000000009", None, b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::NotAccepted { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("nothing ran): the stream holds cluster.max_pending (2) calls"),
        "{e}"
    );
    assert_eq!(a.stats().refused.load(Ordering::Relaxed), 1);
    assert_eq!(a.stats().no_answer.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_rejoined_and_calls_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    a.serve(Arc::new(Recorder::new("a", &runs)));
    let o = a
        .call(request(&format!("{:032x}", 1), Some(5), b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "ok");
    nats.restart().unwrap();
    // The node reconnects by itself; its pulls are asked again once
    // JetStream has recovered the consumers. A delivery lost in the
    // restart comes again after ack_wait (2s): the call is answered
    // within that, not lost.
    let t = std::time::Instant::now();
    let o = a
        .call(request(&format!("{:032x}", 2), Some(5), b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "ok");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "{:?}\n{}",
        t.elapsed(),
        nats.log()
    );
    assert_eq!(runs.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_id_published_already_is_refused_not_answered_with_anothers_result() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    // Someone else publishes first with the id this caller will use.
    let call = "000000000000000000000000000000ee";
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", call);
    raw(&nats)
        .await
        .publish_with_headers(names::ANY, h, Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .await
        .unwrap();
    let e = a.call(request(call, None, b"{}")).await.unwrap_err();
    assert!(matches!(e, ClusterError::NotAccepted { .. }), "{e:?}");
    assert!(e.to_string().contains("was published already"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_max_payload_is_an_error_naming_the_limit_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let mut r = Recorder::new("a", &runs);
    // Over the server's default max_payload (1 MiB).
    r.big = Some(2 << 20);
    a.serve(Arc::new(r));
    let o = a
        .call(request(&format!("{:032x}", 7), Some(1), b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "error");
    assert!(
        o.message
            .contains("over the NATS server's max_payload (1048576 bytes)")
            && o.message.starts_with("tool echo: its answer ("),
        "{}",
        o.message
    );
    assert_eq!(runs.lock().unwrap().len(), 1);
    assert_eq!(a.stats().redelivered.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_naming_another_subject_for_its_answer_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    a.serve(Arc::new(Recorder::new("a", &runs)));
    let js = raw(&nats).await;
    for reply in [
        "$JS.API.STREAM.DELETE.TOOLPLANE_CALLS",
        "tp.reply.a.b",
        "tp.reply.>",
    ] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("{:032x}", reply.len()).as_str());
        h.insert(names::header::REPLY, reply);
        h.insert(names::header::TOOL, "echo");
        js.publish_with_headers(names::ANY, h, Bytes::from_static(b"{}"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Taken off the stream, and not run.
    let mut stream = js.get_stream(names::STREAM).await.unwrap();
    let t = std::time::Instant::now();
    while stream.info().await.unwrap().state.messages > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    assert!(runs.lock().unwrap().is_empty());
    // The stream is still there.
    let o = a
        .call(request(&format!("{:032x}", 99), None, b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_tool_sends_the_call_on_and_the_last_delivery_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let mut ra = Recorder::new("a", &runs);
    ra.lacks_tool = true;
    a.serve(Arc::new(ra));
    // Only node a pulls: every delivery is sent back, the last answers.
    let o = a
        .call(request(&format!("{:032x}", 1), Some(2), b"{}"))
        .await
        .unwrap();
    assert_eq!(o.result, "unknown_tool");
    assert!(
        o.message
            .contains("delivered 5 times (cluster.max_deliver)")
            && o.message.contains("no tool echo on node a"),
        "{}",
        o.message
    );
    // With node b, which has the tool, beside it: every call runs, on b.
    let b = Cluster::connect(options(&nats, "b")).await.unwrap();
    b.serve(Arc::new(Recorder::new("b", &runs)));
    for i in 0..20u64 {
        let o = a
            .call(request(&format!("{:032x}", 100 + i), Some(i), b"{}"))
            .await
            .unwrap();
        assert_eq!(o.result, "ok", "{}", o.message);
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 20);
    assert!(runs.iter().all(|r| r.0 == "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_sends_back_what_its_open_pulls_bring_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    a.serve(Arc::new(Recorder::new("a", &runs)));
    let b = Cluster::connect(options(&nats, "b")).await.unwrap();
    // Node a's pulls are open; it stops, and calls come now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.stop();
    let waiting: Vec<_> = (0..10u64)
        .map(|i| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                b.call(request(&format!("{:032x}", i + 1), Some(i), b"{}"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.serve(Arc::new(Recorder::new("b", &runs)));
    // Answered by b well within ack_wait (2s): sent back at once, not
    // left to time out in a's pulls.
    let t = std::time::Instant::now();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap().result, "ok");
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(runs.lock().unwrap().iter().all(|r| r.0 == "b"));
    assert!(a.close(Duration::from_secs(5)).await);
    // It has left the nodes bucket.
    let nodes = raw(&nats).await.get_key_value(names::NODES).await.unwrap();
    assert!(nodes.get("a").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_live_nodes_and_each_partitions_calls() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    // No node has started: said so, naming the server.
    let e = toolplane_cluster::status(&options(&nats, "status"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no toolplane node has started on nats://127.0.0.1:"),
        "{e}"
    );
    // Node a takes three calls of key 1 and runs none.
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let mut waiting = Vec::new();
    for n in 0..3u64 {
        let call = format!("{n:032x}");
        waiting.push(a.submit(request(&call, Some(1), b"{}")).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = toolplane_cluster::status(&options(&nats, "status"))
        .await
        .unwrap();
    assert_eq!(s.partitions, 8);
    assert_eq!(s.calls, 3);
    assert_eq!(s.ack_wait_ms, 2000);
    assert_eq!(
        s.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let p = names::consumer(toolplane_cluster::partition::of(1, 8));
    assert_eq!(s.consumers.len(), 9);
    for c in &s.consumers {
        if c.name == p {
            assert_eq!((c.pending, c.in_flight), (3, 0), "{c:?}");
            assert!(c.oldest_ms.is_some_and(|ms| ms >= 250), "{c:?}");
        } else {
            assert_eq!((c.pending, c.in_flight, c.oldest_ms), (0, 0, None), "{c:?}");
        }
    }
    // Node a's own view, for /metrics, reads the same within a few seconds.
    let t = std::time::Instant::now();
    while a.consumers().iter().all(|c| c.pending == 0) && t.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mine = a.consumers();
    assert_eq!(
        mine.iter().find(|c| c.name == p).map(|c| c.pending),
        Some(3)
    );
    drop(waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_of_three_losing_the_streams_leader_loses_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = LocalNats::cluster(dir.path(), 3).unwrap();
    let urls: Vec<String> = servers.iter().map(LocalNats::url).collect();
    let opts = |node: &str| {
        let mut o = Options::new(urls.clone(), node.into());
        o.partitions = 8;
        o.max_inflight = 64;
        o.ack_wait = Duration::from_secs(2);
        o.replicas = 3;
        o
    };
    // JetStream answers once the servers have elected a leader.
    let t = std::time::Instant::now();
    while !servers
        .iter()
        .any(|s| s.log().contains("new metadata leader"))
        && t.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = loop {
        match Cluster::connect(opts("a")).await {
            Ok(c) => break c,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("{:?}: {e}", t.elapsed());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{e}\n{}", servers[0].log()),
        }
    };
    eprintln!("JetStream answered after {:?}", t.elapsed());
    let b = Cluster::connect(opts("b")).await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    for (node, c) in [("a", &a), ("b", &b)] {
        let mut r = Recorder::new(node, &runs);
        r.delay = Duration::from_millis(1);
        c.serve(Arc::new(r));
    }
    // The stream is replicated on all three, and its leader is known.
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let js = async_nats::jetstream::new(async_nats::connect(addrs).await.unwrap());
    let mut stream = js.get_stream(names::STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");

    // Callers through both nodes, each key's calls in turn, for 8 s; the
    // stream's leader is killed at 2 s.
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let ingress = if w % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(8) {
                let call = format!("{w:016x}{n:016x}");
                let mut req = request(&call, Some(w), b"{}");
                // A call may wait out the elections of the stream's, its
                // consumer's and the buckets' leaders, and a redelivery.
                (req.wait, req.start_by) = (Duration::from_secs(25), Duration::from_secs(20));
                let t = std::time::Instant::now();
                let r = ingress.call(req).await;
                out.push((call, r, start.elapsed(), t.elapsed()));
                n += 1;
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i = (0..3)
        .find(|i| leader == format!("s{i}"))
        .expect("the leader is one of s0, s1, s2");
    servers[i].kill();
    let killed = start.elapsed();

    let (mut ok, mut refused, mut unconfirmed) = (0, 0, 0);
    let mut answered_at = Vec::new();
    let mut slowest = (Duration::ZERO, Duration::ZERO);
    for t in tasks {
        for (call, r, at, took) in t.await.unwrap() {
            if took > slowest.1 {
                slowest = (at, took);
            }
            match r {
                Ok(o) => {
                    assert_eq!(o.result, "ok", "{call}: {}", o.message);
                    ok += 1;
                    answered_at.push(call);
                }
                // Not taken (nothing ran), or sent and not confirmed while
                // the leader moved: the caller was told so.
                Err(ClusterError::NotAccepted { .. }) => refused += 1,
                Err(ClusterError::Unconfirmed { .. }) => unconfirmed += 1,
                // Taken and never answered: lost.
                Err(e) => panic!("{call}: {e}"),
            }
        }
    }
    eprintln!(
        "leader {leader} killed at {killed:?}: {ok} answered, {refused} refused, {unconfirmed} unconfirmed; the slowest took {:?} (answered at {:?})",
        slowest.1, slowest.0
    );
    assert!(ok > 200, "{ok} answered");
    assert!(
        refused + unconfirmed <= ok / 10,
        "{refused} refused, {unconfirmed} unconfirmed of {ok}"
    );
    // Each answered call ran, each key's in the stream's order. A call
    // runs again only where docs/cluster.md says it may: its result's
    // write failed while the bucket's leader moved, and it was delivered
    // again (this tool is idempotent, so no run marker); such a run
    // follows its first at once, before the key's next call.
    let runs = runs.lock().unwrap().clone();
    let mut seen = std::collections::HashSet::new();
    let mut again = 0;
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (_, key, seq, call) in &runs {
        let k = key.unwrap();
        let prev = last.insert(k, *seq).unwrap_or(0);
        if !seen.insert(call.clone()) {
            assert_eq!(*seq, prev, "key {k}: {call} ran again after another call");
            again += 1;
            continue;
        }
        assert!(*seq > prev, "key {k}: {seq} ran after {prev}");
    }
    for call in &answered_at {
        assert!(seen.contains(call), "{call} answered, not run");
    }
    eprintln!("{again} calls ran again");
    assert!(again <= 16, "{again} calls ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_call_delivered_again_past_its_deadline_is_outcome_unknown_not_did_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(dir.path()).unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let a = Cluster::connect(options(&nats, "a")).await.unwrap();
    let call = "0000000000000000000000000000beef";
    let waiting = {
        let a = Arc::clone(&a);
        tokio::spawn(async move {
            let mut r = request(call, Some(4), b"{}");
            r.start_by = Duration::from_millis(500);
            a.call(r).await
        })
    };
    // A node pulled it, wrote its run marker, started the tool and died:
    // here, a plain consumer that writes the marker and never acks.
    let js = raw(&nats).await;
    let _held = hold_first_delivery(&js, 4).await;
    let kv = js.get_key_value(names::RESULTS).await.unwrap();
    kv.create(names::run_marker(call), Bytes::from_static(b"gone/1"))
        .await
        .unwrap();
    // Delivered again after ack_wait (2s), past the call's start deadline
    // (0.5s): the marker says it started, so not "did not run".
    let mut r = Recorder::new("a", &runs);
    r.protected = true;
    a.serve(Arc::new(r));
    let o = waiting.await.unwrap().unwrap();
    assert_eq!(o.result, "error", "{}", o.message);
    assert!(
        o.message
            .contains("outcome unknown: the call started on node \"gone\""),
        "{}",
        o.message
    );
    assert!(runs.lock().unwrap().is_empty());
}
