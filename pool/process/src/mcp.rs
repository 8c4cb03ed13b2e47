//! `protocol = "mcp"`: an upstream MCP server over stdio, spoken with
//! rmcp's client; and a remote one over streamable HTTP (`remote.rs`),
//! the same from the session on.
//!
//! Its tools are the set's members, listed as `<set>.<tool>` with their own
//! schemas and annotations; its `notifications/tools/list_changed` makes
//! the pool list them again and the registry republish them. A call is a
//! `tools/call`; a call that runs out of time, or whose caller goes away,
//! is cancelled (`notifications/cancelled`, rmcp sends it when the request
//! is dropped), and the process is then pinged: one that does not answer
//! within [`CANCEL_GRACE`] is hung, and killed.
//!
//! A result with `isError` is the call's `Error` (its text content); one
//! with `structuredContent` is that object; any other is
//! `{"content": [...]}` with the upstream's content blocks as they are
//! (served to MCP clients as those blocks again).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::collections::{HashMap, VecDeque};

use rmcp::model::RequestParamsMeta;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    Implementation, JsonRpcMessage, JsonRpcNotification, NumberOrString, PingRequest,
    ProgressToken, ServerNotification, ServerResult,
};
use rmcp::service::{NotificationContext, RunningService, RunningServiceCancellationToken};
use rmcp::service::{PeerRequestOptions, RequestHandle};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use std::sync::atomic::Ordering;
use toolplane_core::Outcome;

use super::life::{CANCEL_GRACE, Life};
use super::remote::Remote;
use super::shared::Shared;
use super::spawn::Child;
use crate::error::{UpstreamError, service_words};
use crate::spec::{MAX_PAGES, MAX_SCHEMA, MAX_TOOLS, Member};
use toolplane_tool::Annotations;
use toolplane_tool::progress::{Progress, ProgressSink};

/// Calls whose progress someone watches.
type Watchers = Arc<Mutex<Watching>>;

/// How many progress reports for calls nobody watches (yet) are kept,
/// and how many bytes of their tokens and messages.
const EARLY: usize = 64;
const EARLY_BYTES: usize = 1 << 20;

/// Where an upstream's progress notifications go.
#[derive(Default)]
struct Watching {
    /// By the progress token rmcp gave the call's request.
    sinks: HashMap<ProgressToken, ProgressSink>,
    /// Reports for tokens with no sink, oldest first: a watched call
    /// learns its token only once rmcp has queued the request, and a quick
    /// upstream may report before the call registers its sink, which then
    /// takes them. Unwatched calls' reports are never taken: the oldest
    /// are dropped past [`EARLY`] reports or [`EARLY_BYTES`].
    early: VecDeque<(ProgressToken, Progress)>,
    /// The bytes of the tokens and messages in `early`.
    early_bytes: usize,
}

/// The bytes an early report holds: its token (the upstream chooses it,
/// and may make it as long as a line) and its message.
fn weight(token: &ProgressToken, p: &Progress) -> usize {
    let token = match &token.0 {
        NumberOrString::String(s) => s.len(),
        NumberOrString::Number(_) => 0,
    };
    token + p.message.as_ref().map_or(0, String::len)
}

impl Watching {
    fn report(&mut self, token: &ProgressToken, progress: Progress) {
        match self.sinks.get(token) {
            Some(sink) => {
                let _ = sink.try_send(progress);
            }
            None => {
                self.early_bytes += weight(token, &progress);
                self.early.push_back((token.clone(), progress));
                while self.early.len() > EARLY || self.early_bytes > EARLY_BYTES {
                    let Some((t, old)) = self.early.pop_front() else {
                        break;
                    };
                    self.early_bytes -= weight(&t, &old);
                }
            }
        }
    }

    /// `sink` watches `token` from now on, after the reports already in.
    fn watch(&mut self, token: ProgressToken, sink: ProgressSink) {
        let mut taken = 0;
        self.early.retain(|(t, p)| {
            if *t == token {
                taken += weight(t, p);
                let _ = sink.try_send(p.clone());
            }
            *t != token
        });
        self.early_bytes -= taken;
        self.sinks.insert(token, sink);
    }
}

/// The client side of one upstream process.
pub(crate) struct Upstream {
    peer: rmcp::Peer<RoleClient>,
    /// The process host's runtime (calls run on their caller's).
    host: tokio::runtime::Handle,
    watchers: Watchers,
    stop: Mutex<Option<RunningServiceCancellationToken>>,
    overlong: Arc<Overlong>,
    /// A remote server's session (`remote.rs`), not a process's stdio.
    remote: bool,
    /// Becomes true when its transport ends (the stream closed).
    ended: tokio::sync::watch::Receiver<bool>,
    /// Kept so the service runs as long as the process does.
    _service: RunningService<RoleClient, Notified>,
}

/// What the upstream tells us unasked.
pub(crate) struct Notified {
    shared: Weak<Shared>,
    relist: Arc<Relist>,
}

/// `notifications/tools/list_changed`, coalesced: one re-list at a time,
/// and one more after it however many came while it ran.
#[derive(Default)]
struct Relist {
    running: std::sync::atomic::AtomicBool,
    again: std::sync::atomic::AtomicBool,
}

impl ClientHandler for Notified {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("toolplane", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let r = &self.relist;
        r.again.store(true, Ordering::SeqCst);
        // SeqCst throughout: a store of one flag followed by a load of the
        // other on each side (a notification's `again`, then `running`; the
        // re-list's `running`, then `again`) must not be reordered, or
        // both sides could miss each other.
        if r.running.swap(true, Ordering::SeqCst) {
            return; // the running re-list sees `again`
        }
        loop {
            r.again.store(false, Ordering::SeqCst);
            let Some(shared) = self.shared.upgrade() else {
                r.running.store(false, Ordering::SeqCst);
                return;
            };
            let wait = shared.limits.startup_timeout;
            match tokio::time::timeout(wait, list(&context.peer)).await {
                Ok(Ok(members)) => shared.set_members(members),
                Ok(Err(e)) => {
                    tracing::warn!(tool = %shared.name, "listing its tools again failed: {e}");
                }
                Err(_) => tracing::warn!(
                    tool = %shared.name,
                    "listing its tools again failed: no answer within limits.startup_timeout = {wait:?}"
                ),
            }
            drop(shared);
            r.running.store(false, Ordering::SeqCst);
            // A notification that came while it listed: list once more,
            // unless another task took the turn.
            if !r.again.load(Ordering::SeqCst) || r.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}

/// The upstream's stdio, whose progress notifications go to their
/// watchers as they are read, so in the order the upstream sent them: rmcp
/// hands each notification to the handler in a task of its own, and those
/// tasks may run in any order (the host's scheduler runs the newest
/// first). rmcp still sees every message.
struct InOrder<T> {
    inner: T,
    watchers: Watchers,
    /// Told when the stream ends.
    ended: tokio::sync::watch::Sender<bool>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for InOrder<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let Some(message) = self.inner.receive().await else {
            self.ended.send_replace(true);
            return None;
        };
        if let JsonRpcMessage::Notification(JsonRpcNotification {
            notification: ServerNotification::ProgressNotification(n),
            ..
        }) = &message
        {
            let report = Progress {
                progress: n.params.progress,
                total: n.params.total,
                message: n.params.message.clone(),
            };
            self.watchers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .report(&n.params.progress_token, report);
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// Told when an upstream's line went over the bound.
#[derive(Default)]
struct Overlong {
    seen: tokio::sync::Notify,
    max: std::sync::atomic::AtomicUsize,
}

/// The upstream's stdout, ended with an error at the first line longer
/// than `max` bytes: an answer over `limits.max_output` fails its call at
/// once, and the process is replaced (rmcp alone would drop the line and
/// leave the call waiting for its deadline).
struct LineGuard<R> {
    inner: R,
    max: usize,
    /// Bytes since the last newline.
    run: usize,
    overlong: Arc<Overlong>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LineGuard<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let new = &buf.filled()[before..];
            self.run = match new.iter().rposition(|&b| b == b'\n') {
                Some(at) => {
                    // Every line that ended here, the first one included.
                    let first = new.iter().position(|&b| b == b'\n').unwrap_or(at);
                    let longest = new[..at]
                        .split(|&b| b == b'\n')
                        .skip(1)
                        .map(<[u8]>::len)
                        .max()
                        .unwrap_or(0);
                    if self.run + first > self.max || longest > self.max {
                        return self.trip();
                    }
                    new.len() - at - 1
                }
                None => self.run + new.len(),
            };
            if self.run > self.max {
                return self.trip();
            }
        }
        polled
    }
}

impl<R> LineGuard<R> {
    fn trip(&self) -> std::task::Poll<std::io::Result<()>> {
        self.overlong.max.store(self.max, Ordering::Relaxed);
        self.overlong.seen.notify_one();
        std::task::Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a line over limits.max_output",
        )))
    }
}

impl Upstream {
    /// Speaks MCP over the child's stdio: the `initialize` handshake.
    pub(crate) async fn connect(
        child: &mut Child,
        shared: &Arc<Shared>,
    ) -> Result<Upstream, UpstreamError> {
        let (Some(stdout), Some(stdin)) = (child.inner.stdout.take(), child.inner.stdin.take())
        else {
            return Err(UpstreamError::NotPiped);
        };
        let max_line = usize::try_from(shared.limits.max_output).unwrap_or(usize::MAX);
        let overlong = Arc::new(Overlong::default());
        let stdout = LineGuard {
            inner: stdout,
            max: max_line,
            run: 0,
            overlong: Arc::clone(&overlong),
        };
        // The guard ends the stream first (rmcp would drop the line and
        // leave its request unanswered).
        let transport = AsyncRwTransport::new_client(stdout, stdin)
            .with_max_line_length(max_line.saturating_add(1));
        Upstream::serve(transport, shared, overlong, false).await
    }

    /// Opens a session with a remote server over streamable HTTP: the
    /// `initialize` handshake.
    pub(crate) async fn open(
        remote: &Remote,
        shared: &Arc<Shared>,
    ) -> Result<Upstream, UpstreamError> {
        let transport = remote.transport(&shared.limits, shared.pool.max_inflight_per_process);
        Upstream::serve(transport, shared, Arc::default(), true).await
    }

    /// The client over `transport`, once `initialize` is done.
    async fn serve<T>(
        transport: T,
        shared: &Arc<Shared>,
        overlong: Arc<Overlong>,
        remote: bool,
    ) -> Result<Upstream, UpstreamError>
    where
        T: Transport<RoleClient> + Send + 'static,
    {
        let watchers = Watchers::default();
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        let transport = InOrder {
            inner: transport,
            watchers: Arc::clone(&watchers),
            ended: ended_tx,
        };
        let handler = Notified {
            shared: Arc::downgrade(shared),
            relist: Arc::default(),
        };
        let service = handler
            .serve(transport)
            .await
            .map_err(|e| UpstreamError::Initialize(Box::new(e)))?;
        Ok(Upstream {
            peer: service.peer().clone(),
            host: tokio::runtime::Handle::current(),
            watchers,
            stop: Mutex::new(Some(service.cancellation_token())),
            overlong,
            remote,
            ended,
            _service: service,
        })
    }

    /// Resolves once its transport has ended.
    pub(crate) async fn ended(&self) {
        let mut ended = self.ended.clone();
        // An error: the transport is gone, which is an end too.
        let _ = ended.wait_for(|e| *e).await;
    }

    /// Resolves once the upstream wrote a line over `limits.max_output`
    /// (its stream is then ended), with the reason.
    pub(crate) async fn overlong(&self) -> String {
        self.overlong.seen.notified().await;
        format!(
            "wrote a line longer than limits.max_output = {}",
            toolplane_units::fmt_size(self.overlong.max.load(Ordering::Relaxed) as u64)
        )
    }

    /// Its tools now.
    pub(crate) async fn tools(&self) -> Result<Vec<Member>, UpstreamError> {
        list(&self.peer).await
    }

    /// Ends the session, which closes the process's stdin.
    pub(crate) fn close(&self) {
        if let Some(t) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.cancel();
        }
    }

    /// One `tools/call` of `target` until `deadline`; the upstream's
    /// progress notifications for it go to `meta.progress`, when given;
    /// `meta.trace` goes in the request's `_meta` (`traceparent`,
    /// `tracestate`), so that the upstream's span of the call joins the
    /// caller's trace.
    pub(crate) async fn call(
        &self,
        proc: &Arc<Life>,
        target: &str,
        input: &[u8],
        deadline: tokio::time::Instant,
        meta: toolplane_tool::CallMeta,
    ) -> Outcome {
        let arguments =
            match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(input) {
                Ok(a) => a,
                Err(e) => {
                    return Outcome::Error(
                        format!(
                            "tool {}: an MCP tool's input is a JSON object: {e}",
                            proc.tool
                        )
                        .into(),
                    );
                }
            };
        let mut params = CallToolRequestParams::new(target.to_string()).with_arguments(arguments);
        if let Some(trace) = &meta.trace {
            params.set_traceparent(&trace.traceparent);
            if let Some(state) = &trace.tracestate {
                params.set_tracestate(state);
            }
        }
        let result = match meta.progress {
            // Dropped at the deadline (or with the caller): rmcp then
            // sends `notifications/cancelled` for it.
            None => tokio::time::timeout_at(deadline, self.peer.call_tool(params)).await,
            Some(sink) => tokio::time::timeout_at(deadline, self.watched(params, sink)).await,
        };
        match result {
            Ok(Ok(result)) => {
                proc.mark_answered();
                outcome(&proc.tool, result)
            }
            // The server's own error answer: the session is well.
            Ok(Err(e @ rmcp::ServiceError::McpError(_))) => {
                Outcome::Error(format!("tool {}: {e}", proc.tool).into())
            }
            // A session whose transport failed the call is closed: the next
            // call opens a new one.
            Ok(Err(e)) if self.remote => {
                // The session ended under the call: say why, with its URL.
                let wait = match e {
                    rmcp::ServiceError::TransportClosed => Duration::from_millis(200),
                    _ => Duration::ZERO,
                };
                if let Some(why) = proc.exit_within(wait).await {
                    return proc.ended(&why);
                }
                let e = service_words(&e);
                proc.kill_because(format!("a call's request failed: {e}"));
                Outcome::Error(format!("tool {}: the remote server: {e}", proc.tool).into())
            }
            Ok(Err(e)) => match proc.exit_within(Duration::from_secs(1)).await {
                Some(why) => proc.ended(&why),
                None => Outcome::Error(format!("tool {}: {}", proc.tool, service_words(&e)).into()),
            },
            Err(_) => {
                self.check_alive(proc);
                Outcome::Timeout
            }
        }
    }

    /// A `tools/call` whose progress notifications go to `sink`; cancelled
    /// (`notifications/cancelled`) if dropped unanswered.
    async fn watched(
        &self,
        params: CallToolRequestParams,
        sink: ProgressSink,
    ) -> Result<rmcp::model::CallToolResult, rmcp::ServiceError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let handle = self
            .peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await?;
        let mut watch = Watch {
            token: handle.progress_token.clone(),
            handle: Some(handle),
            watchers: Arc::clone(&self.watchers),
            host: self.host.clone(),
        };
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch(watch.token.clone(), sink);
        let rx = &mut watch.handle.as_mut().expect("just set").rx;
        let answer = rx.await;
        // Answered (or the session ended): nothing to cancel.
        watch.handle = None;
        match answer.map_err(|_| rmcp::ServiceError::TransportClosed)?? {
            ServerResult::CallToolResult(r) => Ok(r),
            _ => Err(rmcp::ServiceError::UnexpectedResponse),
        }
    }

    /// After a cancel: a process (a session) that does not answer a ping
    /// within [`CANCEL_GRACE`] is hung, and is killed (closed); one whose
    /// ping cannot be sent is broken, and is too.
    fn check_alive(&self, proc: &Arc<Life>) {
        let peer = self.peer.clone();
        let proc = Arc::clone(proc);
        self.host.spawn(async move {
            let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
            let answer = tokio::time::timeout(CANCEL_GRACE, ping).await;
            if proc.exit().is_some() {
                return;
            }
            match answer {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let e = service_words(&e);
                    tracing::warn!(tool = %proc.tool, serial = proc.serial, "its ping after a cancel failed: {e}");
                    proc.kill_because(format!("its ping after a cancel failed: {e}"));
                }
                Err(_) => {
                    tracing::warn!(tool = %proc.tool, pid = proc.pid, serial = proc.serial, "no answer to a ping {CANCEL_GRACE:?} after a cancel: killing it");
                    proc.kill();
                }
            }
        });
    }
}

/// Every tool the upstream lists, as members, bounded: at most
/// [`MAX_PAGES`] pages and [`MAX_TOOLS`] tools, each listed once, with
/// schemas of at most [`MAX_SCHEMA`] bytes (a name that breaks the
/// `[[tools]]` rule is left out by the registry, as a problem). The caller
/// bounds the time.
async fn list(peer: &rmcp::Peer<RoleClient>) -> Result<Vec<Member>, UpstreamError> {
    let mut out: Vec<Member> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = None;
    for page in 0.. {
        if page == MAX_PAGES {
            return Err(UpstreamError::Endless);
        }
        let params = rmcp::model::PaginatedRequestParams::default().with_cursor(cursor);
        let listed = peer
            .list_tools(Some(params))
            .await
            .map_err(UpstreamError::List)?;
        if out.len() + listed.tools.len() > MAX_TOOLS {
            return Err(UpstreamError::TooMany);
        }
        for t in listed.tools {
            // A name that breaks the rule is the registry's problem to
            // report (`Manifest::member`), and that tool is left out.
            let name = t.name.to_string();
            if !seen.insert(name.clone()) {
                return Err(UpstreamError::Twice(name));
            }
            out.push(member(t)?);
        }
        match listed.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}

/// One listed tool as a member, its schemas' sizes checked.
fn member(t: rmcp::model::Tool) -> Result<Member, UpstreamError> {
    let a = t.annotations.as_ref();
    let input_schema = serde_json::Value::Object((*t.input_schema).clone());
    let output_schema = t
        .output_schema
        .as_ref()
        .map(|s| serde_json::Value::Object((**s).clone()));
    for (key, schema) in [
        ("inputSchema", Some(&input_schema)),
        ("outputSchema", output_schema.as_ref()),
    ] {
        let Some(schema) = schema else { continue };
        let size = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
        if size > MAX_SCHEMA {
            return Err(UpstreamError::SchemaTooLarge {
                key,
                tool: t.name.to_string(),
                size,
            });
        }
    }
    Ok(Member {
        name: t.name.to_string(),
        description: t.description.as_deref().unwrap_or("").to_string(),
        input_schema,
        title: t.title.clone().or_else(|| a.and_then(|a| a.title.clone())),
        output_schema,
        annotations: Annotations {
            read_only: a.and_then(|a| a.read_only_hint),
            destructive: a.and_then(|a| a.destructive_hint),
            idempotent: a.and_then(|a| a.idempotent_hint),
            open_world: a.and_then(|a| a.open_world_hint),
        },
    })
}

/// The outcome of an upstream's result (see the module's comment).
fn outcome(tool: &str, r: rmcp::model::CallToolResult) -> Outcome {
    if r.is_error == Some(true) {
        let text: Vec<String> = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        return Outcome::Error(format!("tool {tool}: {}", text.join("\n")).into());
    }
    let bytes = match r.structured_content {
        Some(v) => serde_json::to_vec(&v),
        None => serde_json::to_vec(&Unstructured { content: r.content }),
    };
    match bytes {
        Ok(bytes) => Outcome::Ok(bytes.into()),
        Err(e) => Outcome::Error(format!("tool {tool}: its result: {e}").into()),
    }
}

/// An upstream's unstructured result as a call's output: its content
/// blocks as they came, `{"content": [...]}` (what REST answers; MCP serves
/// the blocks, [`content_blocks`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Unstructured {
    content: Vec<rmcp::model::ContentBlock>,
}

/// An MCP content block (text, image, audio, a resource), as rmcp models it.
pub use rmcp::model::ContentBlock;

/// The content blocks of an output an upstream's unstructured result made
/// (a tool whose output form is content); `None` for any other output.
pub fn content_blocks(output: &[u8]) -> Option<Vec<rmcp::model::ContentBlock>> {
    serde_json::from_slice::<Unstructured>(output)
        .ok()
        .map(|u| u.content)
}

/// A watched call: its progress token forgotten when it ends, and the
/// request cancelled if it ends unanswered.
struct Watch {
    token: ProgressToken,
    handle: Option<RequestHandle<RoleClient>>,
    watchers: Watchers,
    host: tokio::runtime::Handle,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sinks
            .remove(&self.token);
        if let Some(h) = self.handle.take() {
            self.host.spawn(async move {
                let _ = h.cancel(Some("the caller gave up".into())).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: f64) -> Progress {
        Progress {
            progress: n,
            total: None,
            message: None,
        }
    }

    #[test]
    fn reports_before_the_sink_reach_it_first_and_in_order() {
        let mut w = Watching::default();
        let mine = ProgressToken(NumberOrString::Number(7));
        let other = ProgressToken(NumberOrString::Number(8));
        w.report(&mine, report(1.0));
        w.report(&other, report(5.0));
        w.report(&mine, report(2.0));
        let (tx, mut rx) = toolplane_tool::progress::channel();
        w.watch(mine.clone(), tx);
        w.report(&mine, report(3.0));
        let got: Vec<f64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| p.progress)
            .collect();
        assert_eq!(got, [1.0, 2.0, 3.0]);
        // The other call's report waits for its own sink.
        assert_eq!(w.early.len(), 1);
    }

    #[test]
    fn reports_nobody_takes_are_bounded() {
        let mut w = Watching::default();
        for i in 0..(EARLY as i64 * 3) {
            w.report(&ProgressToken(NumberOrString::Number(i)), report(1.0));
        }
        assert_eq!(w.early.len(), EARLY);
        // The oldest went first.
        assert_eq!(
            w.early.front().map(|(t, _)| t.clone()),
            Some(ProgressToken(NumberOrString::Number(EARLY as i64 * 2)))
        );
        // And so do they past EARLY_BYTES of messages.
        let big = Progress {
            message: Some("x".repeat(EARLY_BYTES / 4)),
            ..report(1.0)
        };
        for i in 0..8 {
            w.report(&ProgressToken(NumberOrString::Number(-i)), big.clone());
        }
        assert!(w.early_bytes <= EARLY_BYTES, "{}", w.early_bytes);
        assert_eq!(w.early.len(), 4);
        let (tx, _rx) = toolplane_tool::progress::channel();
        w.watch(ProgressToken(NumberOrString::Number(-7)), tx);
        assert_eq!(w.early_bytes, 3 * (EARLY_BYTES / 4));
        // A token is the upstream's to choose, as long as it likes: it
        // counts too.
        let long = ProgressToken(NumberOrString::String("t".repeat(EARLY_BYTES / 2).into()));
        for _ in 0..4 {
            w.report(&long, report(1.0));
        }
        assert!(w.early_bytes <= EARLY_BYTES, "{}", w.early_bytes);
        assert_eq!(w.early.len(), 2);
    }

    #[test]
    fn a_call_that_reports_faster_than_its_caller_takes_loses_reports_not_memory() {
        let mut w = Watching::default();
        let mine = ProgressToken(NumberOrString::Number(1));
        let (tx, mut rx) = toolplane_tool::progress::channel();
        w.watch(mine.clone(), tx);
        for i in 0..(toolplane_tool::progress::BACKLOG * 4) {
            w.report(&mine, report(i as f64));
        }
        let got: Vec<f64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| p.progress)
            .collect();
        assert_eq!(got.len(), toolplane_tool::progress::BACKLOG);
        assert_eq!(got.first(), Some(&0.0));
    }
}
