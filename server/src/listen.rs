//! HTTP serving, thread per core: one acceptor hands each new connection,
//! round robin, to one of N threads, and each thread serves its
//! connections with hyper on its own single-threaded tokio runtime.
//!
//! Why not one multi-threaded runtime: a request then often wakes a second
//! thread (the I/O driver is polled by one worker and the task is stolen
//! or handed to another), a futex wake and a cache miss per request. Here a
//! connection lives on one thread from accept to close; the cost is that a
//! few heavy connections are not spread across threads (the engine's
//! workers, not the HTTP threads, run the tools). PERF.md "Serving" has
//! the measurement.
//!
//! Bounds (HOSTILE callers: 21,000 idle connections once took the server
//! to its open-file limit, and a header dribbled a byte at a time held a
//! connection for as long as the client liked):
//! - at most `server.max_connections` connections are served in full;
//!   `server.reserve_connections` more may only ask for `/healthz`,
//!   `/readyz` and `/metrics` (the edge answers anything else 503), one
//!   request each, sent within a second, so health checks still answer
//!   at the cap however many idle connections hold it; beyond that a new
//!   connection is closed at once. Crossing the cap is logged once per
//!   episode.
//! - a request's headers must arrive within `server.header_timeout`,
//!   counted from the moment the connection waits for a request, so an
//!   idle keep-alive connection also ends then (hyper's header timer);
//!   its body within `server.body_timeout` (the edge).
//!
//! ## Metrics
//! - `toolplane_http_connections` — open connections (gauge).
//! - `toolplane_http_connections_max` — `server.max_connections`.
//! - `toolplane_http_connections_reserve_total` — connections accepted in
//!   the reserve, above the cap.
//! - `toolplane_http_connections_refused_total` — connections closed at
//!   once, beyond the reserve.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::connections::Connections;
use crate::http::edge::Reserve;

/// How long a connection in the reserve may take to send its one request.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// At stop, how long a connection may still bring a request before it is
/// closed as idle.
const STOP_GRACE: Duration = Duration::from_millis(250);

/// A connection accepted by the acceptor, not yet registered with the
/// runtime that will serve it, and whether it is in the reserve.
struct Handoff {
    stream: std::net::TcpStream,
    reserve: bool,
    guard: Open,
}

/// One open connection in [`Connections::open`], until dropped.
struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the HTTP threads serve.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub reserve_connections: usize,
    pub header_timeout: Duration,
}

/// The running HTTP threads.
pub(crate) struct HttpThreads {
    /// Closed when every thread has finished.
    done: mpsc::Receiver<()>,
    /// Ends the acceptor (which then closes the listener).
    accepting: CancellationToken,
    acceptor: tokio::task::JoinHandle<()>,
}

impl HttpThreads {
    /// Starts `threads` HTTP threads serving `router`, fed by an acceptor on
    /// `listener` spawned on the current runtime. Stopping is in two steps:
    /// [`HttpThreads::stop_accepting`], then `stop`, which starts each
    /// thread's graceful shutdown of its connections.
    ///
    /// # Errors
    ///
    /// A runtime or a thread that cannot be created.
    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        router: Router,
        threads: usize,
        limits: Limits,
        connections: Arc<Connections>,
        stop: &CancellationToken,
    ) -> std::io::Result<HttpThreads> {
        connections
            .max
            .store(limits.max_connections, Ordering::Relaxed);
        let (done_tx, done) = mpsc::channel(1);
        let mut feeds = Vec::with_capacity(threads);
        for i in 0..threads {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            feeds.push(tx);
            let router = router.clone();
            let stop = stop.clone();
            let done = done_tx.clone();
            let header_timeout = limits.header_timeout;
            std::thread::Builder::new()
                .name(format!("toolplane-http-{i}"))
                .spawn(move || {
                    rt.block_on(serve_handed(rx, router, header_timeout, stop));
                    // A metrics render still running on the blocking pool
                    // is not waited for past this.
                    rt.shutdown_timeout(Duration::from_secs(1));
                    drop(done);
                })?;
        }
        let accepting = CancellationToken::new();
        let acceptor = tokio::spawn(accept(
            listener,
            feeds,
            limits,
            connections,
            accepting.clone(),
        ));
        Ok(HttpThreads {
            done,
            accepting,
            acceptor,
        })
    }

    /// Stops accepting: connections already queued on the listener are
    /// taken and served (they get an answer), then the listener closes.
    pub(crate) async fn stop_accepting(&mut self) {
        self.accepting.cancel();
        let _ = (&mut self.acceptor).await;
    }

    /// Waits for every thread to finish its graceful shutdown (their open
    /// connections answer their last request and close).
    pub(crate) async fn finished(mut self) {
        while self.done.recv().await.is_some() {}
    }
}

/// Accepts connections until `stop`, handing them round robin to `feeds`.
async fn accept(
    listener: tokio::net::TcpListener,
    feeds: Vec<mpsc::UnboundedSender<Handoff>>,
    limits: Limits,
    connections: Arc<Connections>,
    stop: CancellationToken,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            c = listener.accept() => c,
        };
        match accepted {
            Ok((stream, peer)) => hand(stream, peer, &feeds, &mut next, &limits, &connections),
            Err(e) => pause_on_error(&e).await,
        }
    }
    // Connections the kernel has already completed are answered rather
    // than reset when the listener closes.
    loop {
        let ready = std::future::poll_fn(|cx| match listener.poll_accept(cx) {
            std::task::Poll::Pending => std::task::Poll::Ready(None),
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
        })
        .await;
        match ready {
            Some(Ok((stream, peer))) => {
                hand(stream, peer, &feeds, &mut next, &limits, &connections)
            }
            Some(Err(_)) | None => break,
        }
    }
}

/// After an accept error: resource exhaustion (EMFILE, ENFILE, ENOMEM)
/// would repeat at once, so wait a little, as hyper's and axum's servers do.
async fn pause_on_error(e: &std::io::Error) {
    let transient = matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    );
    if !transient {
        tracing::warn!("accepting a connection: {e}; pausing 50 ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hand(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    feeds: &[mpsc::UnboundedSender<Handoff>],
    next: &mut usize,
    limits: &Limits,
    connections: &Arc<Connections>,
) {
    let n = connections.open.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = Open(Arc::clone(connections));
    let reserve = n > limits.max_connections;
    if !reserve {
        if n * 10 < limits.max_connections * 9 && connections.at_cap.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                "connections back under the cap: {n} open (server.max_connections = {})",
                limits.max_connections
            );
        }
    } else if n > limits.max_connections + limits.reserve_connections {
        connections.refused_total.fetch_add(1, Ordering::Relaxed);
        // Dropping the stream closes it; the client sees the connection
        // end before it is answered.
        drop((stream, guard));
        return;
    } else {
        connections.reserve_total.fetch_add(1, Ordering::Relaxed);
        if !connections.at_cap.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "connection cap reached: {} open (server.max_connections); \
                 up to {} more may ask for /healthz, /readyz and /metrics only (server.reserve_connections), \
                 further ones are closed at once",
                limits.max_connections,
                limits.reserve_connections
            );
        }
    }
    // Responses are written whole; do not hold the last segment back.
    let _ = stream.set_nodelay(true);
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("dropping a connection from {peer}: {e}");
            return;
        }
    };
    // A thread that has ended (its runtime failed) is skipped; the
    // connection goes to the next one.
    let mut handoff = Handoff {
        stream,
        reserve,
        guard,
    };
    for _ in 0..feeds.len() {
        let feed = &feeds[*next];
        *next = (*next + 1) % feeds.len();
        match feed.send(handoff) {
            Ok(()) => break,
            Err(mpsc::error::SendError(h)) => handoff = h,
        }
    }
}

/// One HTTP thread: serves each connection handed to it as a task on this
/// thread's runtime until the acceptor has stopped; at `stop` each
/// connection gets [`STOP_GRACE`] to bring one more request (answered,
/// then closed), then shuts down gracefully, and a connection handed over after `stop` (queued on the
/// listener when accepting stopped) is answered once and closed. Returns
/// when every connection has closed.
async fn serve_handed(
    mut rx: mpsc::UnboundedReceiver<Handoff>,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some(handoff) = rx.recv().await {
        // Registers the socket with this thread's reactor.
        let stream = match tokio::net::TcpStream::from_std(handoff.stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("dropping a connection: {e}");
                continue;
            }
        };
        let router = router.clone();
        let reserve = handoff.reserve;
        let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
            if reserve {
                req.extensions_mut().insert(Reserve);
            }
            router.clone().oneshot(req.map(Body::new))
        });
        let stop = stop.clone();
        let guard = handoff.guard;
        tracker.spawn(async move {
            let _open = guard;
            let late = stop.is_cancelled();
            // A connection in the reserve asks one question, soon: idle
            // connections must not hold the places kept for health checks.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(if reserve {
                    header_timeout.min(RESERVE_HEADER_TIMEOUT)
                } else {
                    header_timeout
                })
                .keep_alive(!late && !reserve);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            // Errors are per connection (a client that went away, a header
            // that timed out): nothing to report.
            if late {
                let _ = conn.await;
                return;
            }
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stop.cancelled() => {}
            }
            // A request may be on its way on a connection that looks idle
            // (hyper closes an idle connection at once on a graceful
            // shutdown, and the client sees it close under its request).
            // Every answer now carries `Connection: close`, so a busy
            // connection ends itself after one more answer; only one idle
            // for the whole grace is closed.
            tokio::select! {
                _ = conn.as_mut() => return,
                () = tokio::time::sleep(STOP_GRACE) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    tracker.close();
    tracker.wait().await;
}
