//! The HTTP surface: `POST /v1/tools/{name}/call`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` and MCP's streamable HTTP at `/mcp`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use toolplane_core::Priority;

pub use self::edge::{HttpError, Policy};
use crate::app::{App, CallError, Readiness, ToolCall};
use crate::clients::Caller;
use crate::error::Refusal;
use crate::mcp::Mcp;

pub mod edge;

/// Header naming the ordering key of a REST call (an unsigned integer).
pub const KEY_HEADER: &str = "x-toolplane-key";
/// Header naming the priority of a REST call (`low` or `normal`).
pub const PRIORITY_HEADER: &str = "x-toolplane-priority";

/// The router for `app` behind `policy`; `shutdown` ends MCP's streams.
pub fn router(app: Arc<App>, mcp: Mcp, policy: Policy, shutdown: CancellationToken) -> Router {
    let s = &app.settings().server;
    // Host, Origin and the token are the edge's (one policy for every
    // route), so rmcp's own checks are off.
    let mcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(s.max_body)
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        // Plain JSON answers for stateless (2026-07-28) calls; a call that
        // emits notifications falls back to an event stream.
        .with_json_response(true);
    let mcp_service: StreamableHttpService<Mcp, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(mcp.clone()),
        app.sessions().manager(),
        mcp_config,
    );
    let mcp_service = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            crate::mcp::front::Front {
                sessions: Arc::clone(app.sessions()),
                step_up: step_up(&app),
            },
            crate::mcp::front::front,
        ))
        .service(mcp_service);

    let edge = edge::Edge {
        policy: Arc::new(policy),
        app: Arc::clone(&app),
    };
    let mut router = Router::new();
    if let Some(v) = app.oauth() {
        // The root document, and the path-aware one of the resource (RFC
        // 9728 §3.1: `/.well-known/oauth-protected-resource/mcp`).
        let path = crate::oauth::metadata_path(&v.spec().resource);
        router = router.route(edge::METADATA_PREFIX, get(protected_resource));
        if path != edge::METADATA_PREFIX {
            router = router.route(&path, get(protected_resource));
        }
    }
    router
        .route("/healthz", get(healthz))
        .route("/v1/tools", get(tools))
        .route("/v1/tools/{name}/call", post(call))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_service("/mcp", mcp_service)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The edge reads bodies within server.max_body.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(edge, edge::edge))
        .with_state(app)
}

async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// With `[oauth]`: a tool's challenge when an OAuth client's scopes (not
/// its `[[clients]]` tools) are what refuse it, and a scope would grant it.
fn step_up(app: &Arc<App>) -> Option<crate::mcp::front::StepUp> {
    app.oauth()?;
    let app = Arc::clone(app);
    Some(Arc::new(
        move |client: &crate::clients::Client, name: &str| {
            let v = app.oauth()?;
            if !client.is_oauth() {
                return None;
            }
            let snap = app.registry().snapshot();
            let entry = snap
                .iter()
                .find(|e| !e.is_set() && (e.manifest.name == name || snap.mcp_name(e) == name))?;
            let tool = &entry.manifest.name;
            (client.scope_refuses(tool) && !v.scopes_for(tool).is_empty())
                .then(|| v.insufficient(tool))
        },
    ))
}

/// The protected-resource metadata (RFC 9728): this resource, its
/// authorization servers and scopes.
async fn protected_resource(State(app): State<Arc<App>>) -> Response {
    match app.oauth() {
        Some(v) => axum::Json(v.metadata()).into_response(),
        None => not_found().await.into_response(),
    }
}

/// Liveness: constant, never touches the engine.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>, caller: Option<Extension<Caller>>) -> Response {
    // What is wrong with single tools names tools and their errors: for
    // those who may read every client's numbers, not for every client.
    let detail = caller.is_none_or(|c| c.0.0.reads_metrics());
    match app.readiness() {
        Readiness::Ready(note) if note.is_empty() || !detail => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Readiness::Ready(note) => (StatusCode::OK, format!("ready; {note}\n")).into_response(),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Every tool (a client's: those it may call): name, description, input
/// schema and load state.
async fn tools(State(app): State<Arc<App>>, caller: Option<Extension<Caller>>) -> Response {
    let snap = app.registry().snapshot();
    let list: Vec<serde_json::Value> = snap
        .iter()
        // A set is listed by its members.
        .filter(|e| !e.is_set())
        .filter(|e| {
            caller
                .as_ref()
                .is_none_or(|c| c.0.0.may_call(&e.manifest.name))
        })
        .map(|e| {
            let mut row = serde_json::json!({
                "name": e.manifest.name,
                "mcp_name": snap.mcp_name(e),
                "description": e.manifest.description,
                "title": e.manifest.title,
                "input_schema": e.manifest.input_schema,
                "output_schema": e.manifest.output_schema,
                "annotations": crate::app::annotations_json(&e.manifest.annotations),
                "state": crate::app::state_text(&e.state()),
            });
            // What a process tool's processes can reach, as `tools list`
            // says it.
            if let Some(c) = e.loaded().and_then(|t| t.as_ref().ok()?.containment()) {
                row["files"] = c.files.into();
                row["contained"] = c.contained.into();
                row["process_limits"] = c.process_limits.into();
            }
            row
        })
        .collect();
    axum::Json(list).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = tokio::task::spawn_blocking(move || crate::prom::render(&app))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)], body).into_response()
}

async fn call(
    State(app): State<Arc<App>>,
    caller: Option<Extension<Caller>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let Path(name) = name.map_err(|e| HttpError::new(e.status(), "bad_path", e.body_text()))?;
    // A cross-site form or `text/plain` POST needs no CORS preflight; a
    // JSON one does.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a call's body is JSON: send Content-Type: application/json",
        ));
    }
    let key = match headers
        .get(KEY_HEADER)
        .map(|v| v.to_str().map(str::parse::<u64>))
    {
        None => None,
        Some(Ok(Ok(k))) => Some(k),
        Some(_) => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("header {KEY_HEADER}: accepted an unsigned 64-bit integer"),
            ));
        }
    };
    let priority = match headers.get(PRIORITY_HEADER).map(HeaderValue::to_str) {
        None => Priority::Normal,
        Some(Ok(p)) if p.eq_ignore_ascii_case("normal") => Priority::Normal,
        Some(Ok(p)) if p.eq_ignore_ascii_case("low") => Priority::Low,
        Some(_) => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("header {PRIORITY_HEADER}: accepted low, normal"),
            ));
        }
    };
    let client = caller.map(|Extension(c)| c.0);
    let who = client.clone();
    let call = ToolCall {
        tool: &name,
        input: &body,
        key,
        priority,
        progress: None,
        client,
        id: crate::app::CallId::next(),
        origin: "anonymous",
        trace: crate::trace::from_headers(&headers),
        front: crate::otel::Front::Rest,
    };
    let id = call.id;
    let mut answer = match app.call(call).await {
        Ok(answer) => {
            let out = answer.output;
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok();
            let ct = if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, ct)], out.into_vec()).into_response()
        }
        Err(e) => {
            // An access token without a scope for the tool: the scopes
            // that would grant it (step-up authorization).
            // Only when a scope is what is missing, and one would grant it.
            let challenge = match (&e, app.oauth(), &who) {
                (CallError::Client(Refusal::OutOfScope { tool, .. }), Some(v), Some(c))
                    if c.scope_refuses(tool) && !v.scopes_for(tool).is_empty() =>
                {
                    Some(v.insufficient(tool))
                }
                _ => None,
            };
            let mut h = HttpError::from(e);
            h.challenge = challenge;
            h.into_response()
        }
    };
    // The call's id, as its audit record names it.
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        answer.headers_mut().insert(CALL_ID_HEADER, v);
    }
    Ok(answer)
}

/// The header naming a call's id in its answer.
pub const CALL_ID_HEADER: &str = "x-toolplane-call-id";

/// A failed call's answer: its status, its result label as the kind.
impl From<CallError> for HttpError {
    fn from(e: CallError) -> HttpError {
        let mut h = HttpError::new(e.status(), e.label(), e.to_string());
        h.retry_after = e.retry_after();
        h
    }
}

impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}
