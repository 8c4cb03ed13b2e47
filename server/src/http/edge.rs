//! The one policy every HTTP request meets before any handler, MCP's
//! included: the connection's standing (a connection over the cap may only
//! ask for health, readiness and metrics), `Host` and `Origin` (DNS
//! rebinding and cross-site requests), the bearer token, and the body (read
//! whole, within `server.max_body` and `server.body_timeout`). `/healthz`
//! is exempt from `Host`, `Origin` and the token: a load balancer probes it
//! by address. While the server drains, every answer carries
//! `Connection: close`, so no client sends another request on a connection
//! that is about to close.
//!
//! Why one layer and not rmcp's own checks on `/mcp` plus none elsewhere:
//! a browser page can reach every route, and `POST /v1/tools/{name}/call`
//! with `Content-Type: text/plain` is a CORS "simple request" that no
//! preflight guards. rmcp's checks are switched off so that there is one
//! policy, and one answer shape (`{"error":{"kind","message"}}`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::clients::{Caller, Directory, Unauthorized};
use crate::config::{ServerSettings, TokenDigest};

/// Paths a connection over the cap may still ask for.
const RESERVED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// An error answer: `{"error":{"kind","message"}}` with its status.
#[derive(Debug)]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// A short machine-readable kind (`forbidden_host`, `unauthorized`...).
    pub kind: &'static str,
    /// What was wrong, naming the header, the limit or the key.
    pub message: String,
    /// `Retry-After` of a 429 or 503 (default: 1 s).
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` (a 401's default: `Bearer`).
    pub challenge: Option<String>,
}

impl HttpError {
    /// An error answer.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "kind": self.kind, "message": self.message } });
        let mut r = (self.status, axum::Json(body)).into_response();
        let challenge = match (self.challenge, self.status) {
            (Some(c), _) => HeaderValue::from_str(&c).ok(),
            (None, StatusCode::UNAUTHORIZED) => Some(HeaderValue::from_static("Bearer")),
            (None, _) => None,
        };
        if let Some(c) = challenge {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                // Whole seconds, rounded up: a client that waits that long
                // finds the next cell.
                let d = self.retry_after.unwrap_or(Duration::from_secs(1));
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        r
    }
}

/// Set on every request of a connection accepted above
/// `server.max_connections` (in its reserve).
#[derive(Debug, Clone, Copy)]
pub struct Reserve;

/// The `Host`/`Origin` policy, built once from the settings and the
/// address the server listens on.
#[derive(Debug, Clone)]
pub struct Policy {
    hosts: Vec<(String, Option<u16>)>,
    origins: Vec<AllowedOrigin>,
    token: Option<TokenDigest>,
    max_body: usize,
    body_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedOrigin {
    scheme: String,
    host: String,
    /// `None`: any port (`:*`).
    port: Option<u16>,
}

impl Policy {
    /// The policy of `settings` for a server listening on `local`.
    pub fn new(settings: &ServerSettings, local: SocketAddr) -> Policy {
        let mut hosts: Vec<(String, Option<u16>)> = settings
            .allowed_hosts
            .iter()
            .filter_map(|h| parse_allowed_host(h))
            .collect();
        // The address the server listens on, as a literal, cannot be a
        // rebinding target (a rebinding page's Host is its own name).
        if !local.ip().is_unspecified() {
            hosts.push((normalize_host(&local.ip().to_string()), None));
        }
        let mut origins: Vec<AllowedOrigin> = settings
            .allowed_origins
            .iter()
            .filter_map(|o| parse_allowed_origin(o))
            .collect();
        // The server's own loopback origins: a page it served (or a
        // browser-based client pointed at it) may call it.
        let mut own = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if !local.ip().is_unspecified() {
            own.push(normalize_host(&local.ip().to_string()));
        }
        for host in own {
            origins.push(AllowedOrigin {
                scheme: "http".into(),
                host,
                port: Some(local.port()),
            });
        }
        Policy {
            hosts,
            origins,
            token: settings.token,
            max_body: settings.max_body,
            body_timeout: settings.body_timeout,
        }
    }

    /// Checks `Host` and `Origin`.
    ///
    /// # Errors
    ///
    /// 400 for a missing or malformed `Host`, 403 naming the header that
    /// is not allowed.
    pub fn check_site(&self, headers: &axum::http::HeaderMap) -> Result<(), HttpError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(parse_authority)
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_host",
                    "the Host header is missing or malformed",
                )
            })?;
        let host_ok = self
            .hosts
            .iter()
            .any(|(h, p)| *h == host.0 && p.is_none_or(|p| Some(p) == host.1));
        if !host_ok {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "Host {:?} is not allowed (server.allowed_hosts; this guards against DNS rebinding)",
                    host.0
                ),
            ));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let allowed =
            origin
                .to_str()
                .ok()
                .and_then(parse_origin)
                .is_some_and(|(scheme, host, port)| {
                    self.origins.iter().any(|a| {
                        a.scheme == scheme
                            && a.host == host
                            && a.port
                                .is_none_or(|p| Some(p) == port.or_else(|| default_port(&scheme)))
                    })
                });
        if allowed {
            Ok(())
        } else {
            Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "Origin {:?} is not allowed (server.allowed_origins; the server's own loopback origins are)",
                    origin.to_str().unwrap_or("(not text)")
                ),
            ))
        }
    }

    /// Checks the bearer token, when one is required.
    ///
    /// # Errors
    ///
    /// 401 when it is missing or wrong.
    pub fn check_token(&self, headers: &axum::http::HeaderMap) -> Result<(), HttpError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        if given.is_some_and(|g| token.matches(g)) {
            return Ok(());
        }
        Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires Authorization: Bearer <token>",
        ))
    }
}

/// The client whose bearer token `headers` carry: an OAuth access token
/// (a JWT, with `[oauth]`) checked against the authorization server's
/// keys, or a `[[clients]]` token looked up by its digest. A token is taken
/// from the `Authorization` header only, never from the query string
/// (where logs and `Referer` would keep it).
///
/// # Errors
///
/// 401 naming what was wrong (the log says more of an access token): no
/// token, or one that is no client's.
pub async fn authenticate(
    clients: &Directory,
    oauth: Option<&Arc<crate::oauth::Verifier>>,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, HttpError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let refuse = |message: &str, given: bool| {
        let mut e = HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = Some(match (oauth, given) {
            (Some(v), g) => v.challenge(g),
            (None, false) => "Bearer".into(),
            (None, true) => "Bearer error=\"invalid_token\"".into(),
        });
        e
    };
    // A JWT has three dot-separated parts; a `[[clients]]` token need not
    // look like one, and is looked up first either way.
    if let (Some(v), Some(t)) = (oauth, given)
        && t.split('.').count() == 3
        && clients.find(t).is_none()
    {
        return match v.verify(t).await {
            Ok(grant) => {
                let tools = v.tools_of(&grant.scopes);
                Ok(Caller(clients.oauth_client(
                    &grant.client,
                    grant.subject.as_deref(),
                    tools,
                )))
            }
            Err(why) => {
                clients.refused();
                log_refusal(&why);
                Err(refuse("the access token is not accepted", true))
            }
        };
    }
    match clients.authenticate(given) {
        Ok(c) => Ok(Caller(c)),
        Err(Unauthorized::Missing) => {
            tracing::debug!("request refused: no bearer token");
            Err(refuse(
                "this server requires Authorization: Bearer <token>, a client's token",
                false,
            ))
        }
        Err(Unauthorized::Unknown) => {
            tracing::debug!("request refused: a bearer token that is no client's");
            Err(refuse(
                "the bearer token is no client's (or no longer is)",
                true,
            ))
        }
    }
}

/// Logs why an access token was refused, at most 10 lines a second (a
/// flood of bad tokens is counted in `/metrics`, not written out).
fn log_refusal(why: &crate::oauth::JwtError) {
    use std::sync::OnceLock;
    static LOG: OnceLock<crate::budget::LogBudget> = OnceLock::new();
    let Some(n) = LOG.get_or_init(|| crate::budget::LogBudget::new(10)).take() else {
        return;
    };
    // The reason may quote the token's header: no control character of it
    // reaches the log (a newline would forge a line).
    let text: String = why
        .to_string()
        .chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect();
    if n > 0 {
        tracing::info!("access token refused: {text} ({n} more refused since the last line)");
    } else {
        tracing::info!("access token refused: {text}");
    }
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is
/// matched without regard to case (RFC 7235 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `host[:port]` as (normalized host, port).
fn parse_authority(text: &str) -> Option<(String, Option<u16>)> {
    let a = axum::http::uri::Authority::try_from(text.trim()).ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    Some((normalize_host(a.host()), a.port_u16()))
}

/// An `allowed_hosts` entry: `host[:port]`, or a bare IPv6 address
/// (`::1`, which is not an authority without brackets).
fn parse_allowed_host(text: &str) -> Option<(String, Option<u16>)> {
    match text.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => Some((ip.to_string(), None)),
        Err(_) => parse_authority(text),
    }
}

/// `scheme://host[:port]` as (scheme, normalized host, port).
fn parse_origin(text: &str) -> Option<(String, String, Option<u16>)> {
    let uri = axum::http::Uri::try_from(text.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let a = uri.authority()?;
    Some((scheme, normalize_host(a.host()), a.port_u16()))
}

fn parse_allowed_origin(text: &str) -> Option<AllowedOrigin> {
    if let Some(base) = text.trim().strip_suffix(":*") {
        let (scheme, host, port) = parse_origin(base)?;
        return port.is_none().then_some(AllowedOrigin {
            scheme,
            host,
            port: None,
        });
    }
    let (scheme, host, port) = parse_origin(text)?;
    let port = port.or_else(|| default_port(&scheme));
    Some(AllowedOrigin { scheme, host, port })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The state of [`edge`].
#[derive(Debug, Clone)]
pub struct Edge {
    /// The policy.
    pub policy: Arc<Policy>,
    /// The served app (for the drain flag).
    pub app: Arc<App>,
}

/// The middleware: see the module docs.
pub async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let draining = edge.app.is_draining();
    let mut response = match admit(&edge.policy, &edge.app, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    if draining || edge.app.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Where the protected-resource metadata is answered: a client reads it
/// before it has a token.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

async fn admit(policy: &Policy, app: &App, mut request: Request) -> Result<Request, HttpError> {
    let path = request.uri().path();
    if request.extensions().get::<Reserve>().is_some() && !RESERVED_PATHS.contains(&path) {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection_limit",
            "the server is at its connection limit (server.max_connections); this connection may only ask for /healthz, /readyz and /metrics",
        ));
    }
    if path == "/healthz" {
        return Ok(request);
    }
    policy.check_site(request.headers())?;
    if app.oauth().is_some() && request.uri().path().starts_with(METADATA_PREFIX) {
        return Ok(request);
    }
    match app.clients() {
        Some(clients) => {
            let caller = authenticate(clients, app.oauth(), request.headers()).await?;
            // Every client's numbers are on /metrics: only a client let
            // read them may.
            if request.uri().path() == "/metrics" && !caller.0.reads_metrics() {
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "client {:?} may not read /metrics (clients.metrics)",
                        caller.0.name()
                    ),
                ));
            }
            request.extensions_mut().insert(caller);
        }
        None => policy.check_token(request.headers())?,
    }
    if request.method() == Method::GET
        || request.method() == Method::HEAD
        || request.method() == Method::DELETE
    {
        return Ok(request);
    }
    read_body(policy, request).await
}

/// Reads the body whole within the size limit and the body deadline, so
/// that no handler (rmcp's included) waits on a client that dribbles.
async fn read_body(policy: &Policy, request: Request) -> Result<Request, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than {} bytes (server.max_body)",
                policy.max_body
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > policy.max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, policy.max_body);
    let bytes: Bytes = match tokio::time::timeout(policy.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if limit {
                too_large()
            } else {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the body: {e}"),
                )
            });
        }
        Err(_) => {
            return Err(HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} (server.body_timeout)",
                    humantime::format_duration(policy.body_timeout)
                ),
            ));
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn policy(hosts: &[&str], origins: &[&str], local: &str) -> Policy {
        let s = ServerSettings {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allowed_origins: origins.iter().map(|h| h.to_string()).collect(),
            ..ServerSettings::default()
        };
        Policy::new(&s, local.parse().unwrap())
    }

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_names_pass_and_foreign_hosts_are_refused() {
        let p = policy(&["localhost", "127.0.0.1", "::1"], &[], "127.0.0.1:7070");
        for ok in [
            "localhost:7070",
            "127.0.0.1:7070",
            "[::1]:7070",
            "LOCALHOST",
            "localhost.",
        ] {
            assert!(p.check_site(&headers(Some(ok), None)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:7070",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
        ] {
            let e = p.check_site(&headers(Some(bad), None)).unwrap_err();
            assert_eq!(
                (e.status, e.kind),
                (StatusCode::FORBIDDEN, "forbidden_host"),
                "{bad}"
            );
        }
        let e = p.check_site(&headers(None, None)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_servers_own_origin_passes_and_others_are_refused() {
        let p = policy(
            &["localhost", "127.0.0.1"],
            &["https://app.example.com"],
            "127.0.0.1:7070",
        );
        let h = |o| headers(Some("127.0.0.1:7070"), Some(o));
        for ok in [
            "http://127.0.0.1:7070",
            "http://localhost:7070",
            "http://[::1]:7070",
            "https://app.example.com",
            "https://app.example.com:443",
        ] {
            assert!(p.check_site(&h(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example:7070",
            "http://127.0.0.1:8080",
            "https://127.0.0.1:7070",
            "http://localhost",
            "null",
            "https://app.example.com:8443",
            "garbage",
        ] {
            let e = p.check_site(&h(bad)).unwrap_err();
            assert_eq!(
                (e.status, e.kind),
                (StatusCode::FORBIDDEN, "forbidden_origin"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_wildcard_port_origin_matches_every_port() {
        let p = policy(&["localhost"], &["http://localhost:*"], "127.0.0.1:7070");
        let h = headers(Some("localhost:1"), Some("http://localhost:5173"));
        assert!(p.check_site(&h).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn a_token_is_checked_by_its_digest() {
        let s = ServerSettings {
            token: Some(TokenDigest::of("s3cret")),
            ..ServerSettings::default()
        };
        let p = Policy::new(&s, "127.0.0.1:1".parse().unwrap());
        let auth = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(p.check_token(&auth("bearer s3cret")).is_ok());
        assert!(p.check_token(&auth("Bearer s3cre")).is_err());
        assert!(p.check_token(&auth("Bearer s3cret2")).is_err());
        assert!(p.check_token(&HeaderMap::new()).is_err());
    }
}
