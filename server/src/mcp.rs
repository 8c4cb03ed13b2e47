//! MCP: `tools/list` from the registry (each tool's manifest schema as its
//! `inputSchema`), `tools/call` through the engine, and
//! `notifications/tools/list_changed` when the registry's list changes,
//! to legacy sessions (stdio, 2025 HTTP sessions) and to
//! `subscriptions/listen` streams (2026-07-28).

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ServerCapabilities, ServerConfig, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use tokio::sync::watch;

use crate::app::{App, ToolCall};
use crate::clients::{Caller, Client};
use crate::otel::{Front, McpFront};

pub mod front;
pub mod jsonrpc;
pub mod stdio;

/// How long a `tools/list` waits for sets still loading (each set's own
/// load is bounded by its `limits.startup_timeout`, 10 s by default).
const LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The MCP service: cheap to clone, one clone per session.
#[derive(Clone)]
pub struct Mcp {
    app: Arc<App>,
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
    changes: watch::Receiver<u64>,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mcp").finish_non_exhaustive()
    }
}

impl Mcp {
    /// Serves `app`'s tools; spawns the task that announces list changes
    /// (on the current tokio runtime).
    pub fn new(app: Arc<App>) -> Mcp {
        let (tx, rx) = watch::channel(app.registry().version());
        let mcp = Mcp {
            peers: Arc::default(),
            changes: rx,
            app,
        };
        let events = mcp.app.registry().subscribe();
        let peers = Arc::clone(&mcp.peers);
        // A reload of the client list changes what a client's list holds.
        let mut clients = mcp.app.clients().map(|d| d.subscribe());
        tokio::spawn(async move {
            loop {
                let reloaded = async {
                    match &mut clients {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    event = events.recv_async() => {
                        let Ok(event) = event else { return };
                        if !event.changes_list() {
                            continue;
                        }
                        // Coalesce a burst (a directory of files replaced
                        // at once).
                        while events.try_recv().is_ok() {}
                    }
                    ok = reloaded => {
                        if !ok {
                            clients = None;
                            continue;
                        }
                    }
                }
                tx.send_modify(|v| *v += 1);
                let live: Vec<Peer<RoleServer>> = {
                    let mut p = peers.lock().unwrap_or_else(|e| e.into_inner());
                    p.retain(|peer| !peer.is_transport_closed());
                    p.clone()
                };
                for peer in live {
                    let _ = peer.notify_tool_list_changed().await;
                }
            }
        });
        mcp
    }

    /// The tools `client` may call (every tool without one).
    fn tools(&self, client: Option<&Client>) -> Vec<Tool> {
        let snap = self.app.registry().snapshot();
        snap.iter()
            // A set is listed by its members.
            .filter(|e| !e.is_set())
            .filter(|e| client.is_none_or(|c| c.may_call(&e.manifest.name)))
            .map(|e| {
                let schema = match &e.manifest.input_schema {
                    serde_json::Value::Object(o) => o.clone(),
                    _ => serde_json::Map::from_iter([("type".to_string(), "object".into())]),
                };
                let m = &e.manifest;
                // Each `.` as the separator: names every client accepts.
                let name = snap.mcp_name(e).into_owned();
                let mut tool = Tool::new(name, m.description.clone(), Arc::new(schema));
                tool.title = m.title.clone();
                if let Some(serde_json::Value::Object(o)) = &m.output_schema {
                    tool.output_schema = Some(Arc::new(o.clone()));
                }
                let a = m.annotations;
                if a != toolplane_pool::Annotations::default() {
                    let mut hints = ToolAnnotations::new();
                    hints.read_only_hint = a.read_only;
                    hints.destructive_hint = a.destructive;
                    hints.idempotent_hint = a.idempotent;
                    hints.open_world_hint = a.open_world;
                    tool.annotations = Some(hints);
                }
                tool
            })
            .collect()
    }
}

impl Mcp {
    /// What a client is told at initialize: one sentence per kind of tool
    /// served now (each kind says how its tools run), then the checks.
    fn instructions(&self) -> String {
        let mut runs: Vec<&'static str> = Vec::new();
        for e in self.app.registry().snapshot().iter() {
            let r = e.manifest.runtime.runs();
            if !runs.contains(&r) {
                runs.push(r);
            }
        }
        runs.push(
            "A tool's inputSchema is enforced before it runs, and its outputSchema, when it has one, on what it returns.",
        );
        runs.join(" ")
    }
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("toolplane", env!("CARGO_PKG_VERSION")))
        .with_instructions(self.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // Sets still loading have no members yet: a client's first list
        // (a stdio client's comes as the server starts) waits for them,
        // bounded, rather than miss them.
        let loading: Vec<_> = self
            .app
            .registry()
            .snapshot()
            .iter()
            .filter(|e| e.is_set() && e.loaded().is_none())
            .cloned()
            .collect();
        if !loading.is_empty() {
            // They load side by side: waiting for each in turn waits for
            // the slowest.
            let all = async {
                for e in &loading {
                    let _ = e.wait().await;
                }
            };
            let _ = tokio::time::timeout(LIST_WAIT, all).await;
        }
        Ok(ListToolsResult::with_all_items(
            self.tools(caller(&context).as_deref()),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let input = serde_json::to_vec(&request.arguments.unwrap_or_default())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        // `notifications/cancelled` cancels `context.ct`; dropping the call
        // then cancels the event in the engine (not started: it never runs;
        // running: it stops at its next epoch tick). The client ignores
        // whatever is answered to a request it cancelled.
        // A client that sent a progressToken gets the tool's progress (an
        // upstream MCP server's notifications/progress, a jsonl worker's
        // progress lines) as its own, sent from here, in order and before
        // the answer: once answered, the token means nothing, and rmcp
        // routes a late notification to another stream.
        let mut call = ToolCall::new(&request.name, &input);
        call.client = caller(&context);
        let parts = context.extensions.get::<axum::http::request::Parts>();
        if parts.is_some() {
            call.origin = "anonymous";
        }
        // The trace context: in the request's `_meta` (where MCP places
        // it), else the HTTP request's header; when both, the header's is
        // linked to the call's span.
        let from_meta = crate::trace::from_meta(&context.meta.0.0);
        let traced = self.app.tracing().is_some();
        // The header is read when it is the parent, or, traced, a link.
        let from_http = (from_meta.is_none() || traced)
            .then(|| parts.and_then(|p| crate::trace::from_headers(&p.headers)))
            .flatten();
        if traced {
            let header = |name: &str| {
                parts
                    .and_then(|p| p.headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            call.front = Front::Mcp(McpFront {
                request_id: Some(match &context.id {
                    rmcp::model::NumberOrString::Number(n) => n.to_string(),
                    rmcp::model::NumberOrString::String(s) => s.to_string(),
                }),
                session: header("mcp-session-id"),
                protocol: header("mcp-protocol-version").or_else(|| {
                    context
                        .meta
                        .0
                        .0
                        .get("io.modelcontextprotocol/protocolVersion")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                }),
                http: parts.is_some(),
                link: match (&from_meta, &from_http) {
                    (Some(m), Some(h))
                        if (m.trace_id(), m.span_id()) != (h.trace_id(), h.span_id()) =>
                    {
                        Some(h.clone())
                    }
                    _ => None,
                },
            });
        }
        call.trace = from_meta.or(from_http);
        let mut watch = context.meta.get_progress_token().map(|token| {
            let (tx, rx) = toolplane_pool::progress::channel();
            call.progress = Some(tx);
            (token, rx)
        });
        let mut answer = std::pin::pin!(self.app.call(call));
        let result = loop {
            let report = async {
                match &mut watch {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut answer => break r,
                Some(p) = report => {
                    if let Some((token, _)) = &watch {
                        notify_progress(&context.peer, token, p).await;
                    }
                }
                () = context.ct.cancelled() => {
                    return Err(ErrorData::internal_error("the request was cancelled", None));
                }
            }
        };
        // Reports the tool made before its answer, not yet sent.
        if let Some((token, rx)) = &mut watch {
            while let Ok(p) = rx.try_recv() {
                notify_progress(&context.peer, token, p).await;
            }
        }

        match result {
            Ok(answer) => {
                let out = answer.output;
                if let Some(blocks) = answer.form.content_blocks(&out) {
                    return Ok(CallToolResult::success(blocks).into());
                }
                let text = String::from_utf8_lossy(&out).into_owned();
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_slice(&out) {
                    result.structured_content = Some(v);
                }
                Ok(result.into())
            }
            // A tool the client does not know, or may not see (not listed
            // to it, so refused as unknown, in the words that say why).
            Err(e) if e.mcp_error_code().is_some() => {
                Err(ErrorData::invalid_params(e.to_string(), None))
            }
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into()),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|peer| !peer.is_transport_closed());
        p.push(context.peer);
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                r = changes.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The client an HTTP request was authenticated as (`None` on stdio, or
/// when the server has no `[[clients]]`).
fn caller(context: &RequestContext<RoleServer>) -> Option<Arc<Client>> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .map(|c| Arc::clone(&c.0))
}

/// Sends one progress report of the call that `token` names.
async fn notify_progress(
    peer: &Peer<RoleServer>,
    token: &ProgressToken,
    p: toolplane_pool::progress::Progress,
) {
    let mut n = ProgressNotificationParam::new(token.clone(), p.progress);
    n.total = p.total;
    n.message = p.message;
    let _ = peer.notify_progress(n).await;
}
