//! The layer in front of rmcp's streamable HTTP service at `/mcp`:
//! - every POSTed message is checked by [`super::jsonrpc::check`] and a
//!   malformed one is answered with its JSON-RPC error (HTTP 400 when the
//!   id could not be read, 200 with the error response when it could);
//! - MCP sessions are bounded (`server.max_sessions`: an `initialize`
//!   beyond it gets 503 and a JSON-RPC error naming the key) and expire
//!   after `server.session_idle` with no request;
//! - `DELETE` of a session answers 204 (rmcp answers 202, which the SDKs
//!   log as a failed termination);
//! - with `[[clients]]`, a session belongs to the client that opened it:
//!   another client's request naming it is answered 404, as for a session
//!   that does not exist.
//!
//! ## Metrics
//! - `toolplane_mcp_sessions` — MCP sessions open (gauge).
//! - `toolplane_mcp_sessions_refused_total` — `initialize`s refused at the cap.
//! - `toolplane_mcp_sessions_expired_total` — sessions closed for idleness.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::jsonrpc;
use crate::clients::Caller;

const SESSION_HEADER: &str = "mcp-session-id";

/// When a session was last used, and the client that opened it.
type Used = (Instant, Option<Arc<str>>);

/// The open MCP sessions: rmcp's in-memory manager plus when each was last
/// used.
#[derive(Debug)]
pub struct Sessions {
    manager: Arc<LocalSessionManager>,
    /// When each session was last used, and the client that opened it.
    last_used: Mutex<HashMap<Arc<str>, Used>>,
    max: usize,
    idle: Duration,
    open: AtomicUsize,
    refused: AtomicU64,
    expired: AtomicU64,
}

impl Sessions {
    /// At most `max` sessions, each closed by the sweep after `idle`
    /// unused. rmcp's own idle timer (on messages into the session) is set
    /// to twice that, a backstop should the sweeper stop.
    pub fn new(max: usize, idle: Duration) -> Arc<Sessions> {
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive = Some(idle.saturating_mul(2));
        Arc::new(Sessions {
            manager: Arc::new(manager),
            last_used: Mutex::default(),
            max,
            idle,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        })
    }

    /// rmcp's manager, for the service.
    pub fn manager(&self) -> Arc<LocalSessionManager> {
        Arc::clone(&self.manager)
    }

    /// Sessions open at the last sweep or change.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// `initialize`s refused at the cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Sessions closed for idleness.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// A request of session `id` by `client`: only sessions this server
    /// made are recorded, so made-up ids cannot grow the table. False when
    /// the session is another client's.
    fn touch(&self, id: &str, client: Option<&Arc<str>>) -> bool {
        let mut m = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(id) {
            Some((_, owner)) if owner.as_ref() != client => false,
            Some((t, _)) => {
                *t = Instant::now();
                true
            }
            None => true,
        }
    }

    /// Session `id` was just made by `client`.
    fn created(&self, id: &str, client: Option<Arc<str>>) {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Arc::from(id), (Instant::now(), client));
    }

    fn forget(&self, id: &str) {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn count(&self) -> usize {
        let n = self.manager.sessions.read().await.len();
        self.open.store(n, Ordering::Relaxed);
        n
    }

    /// Closes every session unused for `idle`; forgets the ones rmcp no
    /// longer has.
    pub async fn sweep(&self) {
        let listed = Instant::now();
        let ids: HashSet<Arc<str>> = self.manager.sessions.read().await.keys().cloned().collect();
        let stale: Vec<Arc<str>> = {
            let mut m = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
            // A session made since the list was taken is not in it, and
            // keeps its owner.
            m.retain(|id, (last, _)| ids.contains(id) || *last >= listed);
            let now = Instant::now();
            ids.iter()
                .filter(|id| {
                    let (last, _) = m.entry(Arc::clone(id)).or_insert((now, None));
                    now.duration_since(*last) >= self.idle
                })
                .cloned()
                .collect()
        };
        for id in stale {
            let _ = self.manager.close_session(&id).await;
            self.forget(&id);
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        self.count().await;
    }

    /// Sweeps every quarter of `idle` (at most every 30 s) until `stop`.
    pub fn spawn_sweeper(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let sessions = Arc::clone(self);
        let every = (sessions.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => sessions.sweep().await,
                }
            }
        });
    }
}

fn json_rpc_answer(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// For an OAuth client's `tools/call` (the client, the tool's name as
/// called): the `WWW-Authenticate` of a 403 when a wider scope would grant
/// the tool, so the client can ask for it (step-up authorization).
pub type StepUp = Arc<dyn Fn(&crate::clients::Client, &str) -> Option<String> + Send + Sync>;

/// The state of [`front`].
#[derive(Clone)]
pub struct Front {
    /// The sessions.
    pub sessions: Arc<Sessions>,
    /// The scope challenge, with `[oauth]`.
    pub step_up: Option<StepUp>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

/// The middleware: see the module docs.
pub async fn front(State(front): State<Front>, request: Request, next: Next) -> Response {
    let sessions = front.sessions;
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = request
        .extensions()
        .get::<Caller>()
        .map(|c| Arc::clone(c.0.owner()));
    if let Some(id) = &session
        && !sessions.touch(id, client.as_ref())
    {
        // rmcp's answer to a session it does not have.
        return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
    }
    match *request.method() {
        Method::POST => {}
        Method::DELETE => {
            let r = next.run(request).await;
            if r.status() == StatusCode::ACCEPTED {
                if let Some(id) = &session {
                    sessions.forget(id);
                    sessions.count().await;
                }
                return StatusCode::NO_CONTENT.into_response();
            }
            return r;
        }
        _ => return next.run(request).await,
    }
    // The edge has read the body whole already.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let message: ClientJsonRpcMessage = match jsonrpc::check(&bytes) {
        Ok(m) => m,
        Err(r) => {
            let status = if r.id.is_some() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            return json_rpc_answer(status, r.to_json());
        }
    };
    // An OAuth client calling a tool its token's scopes do not grant:
    // 403 with the scopes that would, as the authorization spec asks.
    if let (Some(step_up), Some(caller), JsonRpcMessage::Request(r)) =
        (&front.step_up, parts.extensions.get::<Caller>(), &message)
        && let ClientRequest::CallToolRequest(call) = &r.request
        && let Some(challenge) = step_up(&caller.0, &call.params.name)
        && let Ok(value) = HeaderValue::from_str(&challenge)
    {
        let body = jsonrpc::Rejection {
            id: serde_json::to_value(&r.id).ok(),
            code: -32003,
            message: format!(
                "tool {:?} needs a scope this access token does not have",
                call.params.name
            ),
            notification: false,
        };
        let mut resp = json_rpc_answer(StatusCode::FORBIDDEN, body.to_json());
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        return resp;
    }
    let initialize = matches!(&message, JsonRpcMessage::Request(r)
        if matches!(r.request, ClientRequest::InitializeRequest(_)));
    if initialize && session.is_none() && sessions.count().await >= sessions.max {
        sessions.refused.fetch_add(1, Ordering::Relaxed);
        let id = match &message {
            JsonRpcMessage::Request(r) => serde_json::to_value(&r.id).ok(),
            _ => None,
        };
        let r = jsonrpc::Rejection {
            id,
            code: -32000,
            message: format!(
                "too many MCP sessions open ({}, server.max_sessions); close one (DELETE /mcp) or retry later",
                sessions.max
            ),
            notification: false,
        };
        let mut resp = json_rpc_answer(StatusCode::SERVICE_UNAVAILABLE, r.to_json());
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if initialize
        && let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        sessions.created(id, client);
        sessions.open.fetch_add(1, Ordering::Relaxed);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_session_ids_are_not_recorded() {
        let s = Sessions::new(4, Duration::from_secs(60));
        for i in 0..1000 {
            s.touch(&format!("made-up-{i}"), None);
        }
        s.created("real", None);
        s.touch("real", None);
        let m = s.last_used.lock().unwrap();
        assert_eq!(m.keys().map(|k| &**k).collect::<Vec<_>>(), ["real"]);
    }

    #[test]
    fn a_session_is_its_clients_alone() {
        let s = Sessions::new(4, Duration::from_secs(60));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        s.created("s1", Some(Arc::clone(&a)));
        assert!(s.touch("s1", Some(&a)));
        assert!(!s.touch("s1", Some(&b)));
        assert!(!s.touch("s1", None));
    }
}
