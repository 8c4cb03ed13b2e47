//! The HTTP surface: `POST /v1/tools/{name}/call`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` and MCP's streamable HTTP at `/mcp`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use toolplane_core::Priority;

use crate::app::{App, Call, CallError, Readiness};
use crate::mcp::Mcp;

/// Header naming the ordering key of a REST call (an unsigned integer).
pub const KEY_HEADER: &str = "x-toolplane-key";
/// Header naming the priority of a REST call (`low` or `normal`).
pub const PRIORITY_HEADER: &str = "x-toolplane-priority";

/// Seconds a client should wait after a 429.
const RETRY_AFTER: &str = "1";

/// The router for `app`; `shutdown` ends MCP's streams.
pub fn router(app: Arc<App>, mcp: Mcp, shutdown: CancellationToken) -> Router {
    let s = &app.settings().server;
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(s.max_body)
        .with_allowed_hosts(s.allowed_hosts.iter().cloned())
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        // Plain JSON answers for stateless (2026-07-28) calls; a call that
        // emits notifications falls back to an event stream.
        .with_json_response(true);
    mcp_config = if s.allowed_origins.is_empty() {
        // No browser origin is trusted unless listed.
        mcp_config.enforce_origin_validation()
    } else {
        mcp_config.with_allowed_origins(s.allowed_origins.iter().cloned())
    };
    let mcp_service: StreamableHttpService<Mcp, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(mcp.clone()), Default::default(), mcp_config);

    let guarded = Router::new()
        .route("/v1/tools", get(tools))
        .route("/v1/tools/{name}/call", post(call))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest_service("/mcp", mcp_service)
        .layer(DefaultBodyLimit::max(s.max_body))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .with_state(app)
}

/// Liveness: constant, never touches the engine.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Every tool: name, description, input schema and load state.
async fn tools(State(app): State<Arc<App>>) -> Response {
    let list: Vec<serde_json::Value> = app
        .registry()
        .snapshot()
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.manifest.name,
                "description": e.manifest.description,
                "input_schema": e.manifest.input_schema,
                "state": crate::app::state_text(&e.state()),
            })
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
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match headers
        .get(KEY_HEADER)
        .map(|v| v.to_str().map(str::parse::<u64>))
    {
        None => None,
        Some(Ok(Ok(k))) => Some(k),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("header {KEY_HEADER}: accepted an unsigned 64-bit integer"),
            );
        }
    };
    let priority = match headers.get(PRIORITY_HEADER).map(HeaderValue::to_str) {
        None => Priority::Normal,
        Some(Ok(p)) if p.eq_ignore_ascii_case("normal") => Priority::Normal,
        Some(Ok(p)) if p.eq_ignore_ascii_case("low") => Priority::Low,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("header {PRIORITY_HEADER}: accepted low, normal"),
            );
        }
    };
    let call = Call {
        tool: &name,
        input: &body,
        key,
        priority,
    };
    match app.call(call).await {
        Ok(out) => {
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok();
            let ct = if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, ct)], out.into_vec()).into_response()
        }
        Err(e) => {
            let status = status_of(&e);
            let mut r = error(status, e.label(), e.to_string());
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            }
            r
        }
    }
}

/// The HTTP status of a failed call.
pub fn status_of(e: &CallError) -> StatusCode {
    match e {
        CallError::UnknownTool(_) => StatusCode::NOT_FOUND,
        CallError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        CallError::Rejected(_) => StatusCode::TOO_MANY_REQUESTS,
        CallError::ShuttingDown | CallError::Cancelled | CallError::Unavailable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        CallError::Tool(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        CallError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "kind": kind, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// Requires `Authorization: Bearer TOKEN` when a token is set.
async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(token) = app.settings().server.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server requires Authorization: Bearer <token>".into(),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_error_has_the_status_the_api_promises() {
        use toolplane_core::RejectReason;
        let cases = [
            (CallError::UnknownTool("x".into()), 404),
            (CallError::InvalidInput("at /n".into()), 400),
            (CallError::Rejected(RejectReason::Full), 429),
            (CallError::Rejected(RejectReason::Shed), 429),
            (CallError::Rejected(RejectReason::InflightLimit), 429),
            (CallError::ShuttingDown, 503),
            (CallError::Cancelled, 503),
            (CallError::Tool("bad".into()), 422),
            (CallError::Timeout("t".into()), 504),
            (CallError::Internal("lost".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
