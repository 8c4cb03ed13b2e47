//! HTTP serving, thread per core: one acceptor hands each new connection,
//! round robin, to one of N threads, and each thread serves its
//! connections with axum on its own single-threaded tokio runtime.
//!
//! Why not one multi-threaded runtime: a request then often wakes a second
//! thread (the I/O driver is polled by one worker and the task is stolen
//! or handed to another), a futex wake and a cache miss per request. Here a
//! connection lives on one thread from accept to close; the cost is that a
//! few heavy connections are not spread across threads (the engine's
//! workers, not the HTTP threads, run the tools). PERF.md "Serving" has
//! the measurement.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::Listener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A connection accepted by the acceptor, not yet registered with the
/// runtime that will serve it.
type Handoff = (std::net::TcpStream, SocketAddr);

/// The running HTTP threads.
pub(crate) struct HttpThreads {
    /// Closed when every thread has finished.
    done: mpsc::Receiver<()>,
}

impl HttpThreads {
    /// Starts `threads` HTTP threads serving `router`, fed by an acceptor on
    /// `listener` spawned on the current runtime. `stop` ends accepting and
    /// starts each thread's graceful shutdown.
    ///
    /// # Errors
    ///
    /// A runtime or a thread that cannot be created.
    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        router: Router,
        threads: usize,
        stop: &CancellationToken,
    ) -> std::io::Result<HttpThreads> {
        let local = listener.local_addr()?;
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
            std::thread::Builder::new()
                .name(format!("toolplane-http-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        // Errors are per connection and logged by hyper's
                        // caller; the serve future itself only ends at stop.
                        let _ = axum::serve(Handed { rx, local }, router)
                            .with_graceful_shutdown(stop.cancelled_owned())
                            .await;
                    });
                    // A metrics render still running on the blocking pool
                    // is not waited for past this.
                    rt.shutdown_timeout(std::time::Duration::from_secs(1));
                    drop(done);
                })?;
        }
        tokio::spawn(accept(listener, feeds, stop.clone()));
        Ok(HttpThreads { done })
    }

    /// Waits for every thread to finish its graceful shutdown (their open
    /// connections answer their last request and close).
    pub(crate) async fn finished(mut self) {
        while self.done.recv().await.is_some() {}
    }
}

/// Accepts connections until `stop`, handing them round robin to `feeds`.
async fn accept(
    mut listener: tokio::net::TcpListener,
    feeds: Vec<mpsc::UnboundedSender<Handoff>>,
    stop: CancellationToken,
) {
    let mut next = 0;
    loop {
        // axum's accept retries on error (after a pause for resource
        // exhaustion such as EMFILE), so this only ends at stop.
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            c = Listener::accept(&mut listener) => c,
        };
        // Responses are written whole; do not hold the last segment back.
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("toolplane: dropping a connection from {peer}: {e}");
                continue;
            }
        };
        // A thread that has ended (its runtime failed) is skipped; the
        // connection goes to the next one.
        let mut handoff = (stream, peer);
        for _ in 0..feeds.len() {
            let feed = &feeds[next];
            next = (next + 1) % feeds.len();
            match feed.send(handoff) {
                Ok(()) => break,
                Err(mpsc::error::SendError(h)) => handoff = h,
            }
        }
    }
}

/// The connections handed to one HTTP thread, as an axum listener.
struct Handed {
    rx: mpsc::UnboundedReceiver<Handoff>,
    local: SocketAddr,
}

impl Listener for Handed {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The acceptor has stopped; the graceful shutdown ends
                // this thread's serve loop.
                return std::future::pending().await;
            };
            // Registers the socket with this thread's reactor.
            match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => return (s, peer),
                Err(e) => eprintln!("toolplane: dropping a connection from {peer}: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
