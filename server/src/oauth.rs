//! An OAuth 2.1 resource server, as the MCP authorization specification
//! asks of an MCP server: JWT access tokens checked against the
//! authorization server's keys (a JWKS from a file or a URL, cached,
//! refreshed, re-read when a token names a key it does not have), their
//! issuer, their lifetime (with a bounded leeway) and their audience,
//! which must be this server's canonical resource URI (RFC 8707); the
//! client from a configured claim, its tools from the token's scopes; the
//! protected-resource metadata (RFC 9728) for clients to find the
//! authorization server.
//!
//! ```toml
//! [oauth]
//! resource = "https://tools.example.com/mcp"          # this server, as tokens name it (aud)
//! authorization_servers = ["https://auth.example.com"] # the issuers accepted (iss)
//! jwks = "https://auth.example.com/jwks.json"          # or a file: "jwks.json"
//! algorithms = ["RS256", "ES256", "EdDSA"]             # the default
//! leeway = "30s"                                       # on exp and nbf, at most 5m
//! client_claim = "client_id"                           # the claim naming the client
//! jwks_refresh = "10m"
//!
//! [oauth.scopes]                                       # a scope grants these tools
//! "tools.read" = ["echo", "hash.*"]
//! "tools.all" = ["*"]
//! ```
//!
//! A token is checked here and goes no further: nothing of a request's
//! headers reaches a tool (a tool gets its JSON arguments), so a client's
//! token is never passed on to an upstream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use toolplane_pool::names::Glob;

/// The longest leeway accepted on `exp` and `nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// A token naming an unknown key re-reads the JWKS at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// The largest JWKS document read.
pub const MAX_JWKS: usize = 1 << 20;
/// The longest token looked at.
pub const MAX_JWT: usize = 16 << 10;
/// How long a token that passed is taken again without a check (less when
/// it expires sooner): a key removed from the JWKS stops its tokens within
/// this.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// How long a token naming an unknown key waits for the JWKS read it
/// started (or found running).
pub const FETCH_WAIT: Duration = Duration::from_secs(10);
/// Tokens kept checked at most.
pub const CACHE_MAX: usize = 10_000;

/// Where the keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file (relative paths: to the configuration file).
    File(PathBuf),
    /// An `https://` (or, for loopback, `http://`) URL.
    Url(String),
}

/// `[oauth]`, checked.
#[derive(Debug, Clone)]
pub struct OauthSpec {
    /// This server's canonical resource URI: a token's `aud` must be it.
    pub resource: String,
    /// The issuers accepted, listed in the metadata.
    pub authorization_servers: Vec<String>,
    /// The keys.
    pub jwks: JwksSource,
    /// The signature algorithms accepted (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// On `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the client.
    pub client_claim: String,
    /// How often the JWKS is read again.
    pub jwks_refresh: Duration,
    /// Each scope and the tools it grants, in the file's order.
    pub scopes: Vec<(String, Vec<Glob>)>,
}

/// `[oauth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthFile {
    resource: Option<String>,
    authorization_servers: Option<Vec<String>>,
    jwks: Option<String>,
    algorithms: Option<Vec<String>>,
    leeway: Option<String>,
    client_claim: Option<String>,
    jwks_refresh: Option<String>,
    scopes: Option<HashMap<String, Vec<String>>>,
}

/// Checks `[oauth]`; `base` is the configuration file's directory.
///
/// # Errors
///
/// A message naming the key (`oauth.resource: ...`) and what is accepted.
pub fn parse(f: OauthFile, base: &std::path::Path) -> Result<OauthSpec, String> {
    let url = |key: &str, text: &str| -> Result<String, String> {
        let uri: axum::http::Uri = text
            .parse()
            .map_err(|_| format!("oauth.{key} = {text:?}: not a URL"))?;
        let loopback = uri.host().is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => {
                return Err(format!(
                    "oauth.{key} = {text:?}: accepted https:// (http:// only for loopback)"
                ));
            }
        }
        if text.contains('#') {
            return Err(format!("oauth.{key} = {text:?}: a URL without a fragment"));
        }
        Ok(text.to_string())
    };
    let resource = url(
        "resource",
        f.resource
            .as_deref()
            .ok_or("oauth.resource: missing: this server's canonical URI, as tokens name it in aud (e.g. \"https://tools.example.com/mcp\")")?,
    )?;
    // Its path becomes a route (the metadata's): no pattern characters.
    if let Some(c) = resource
        .split_once("://")
        .map_or("", |(_, r)| r)
        .chars()
        .find(|c| matches!(c, '{' | '}' | '*' | '?' | ' '))
    {
        return Err(format!(
            "oauth.resource = {resource:?}: {c:?} cannot be in this server's URI"
        ));
    }
    let authorization_servers = f
        .authorization_servers
        .filter(|v| !v.is_empty())
        .ok_or("oauth.authorization_servers: missing: the issuers whose tokens are accepted")?
        .iter()
        .map(|s| url("authorization_servers", s))
        .collect::<Result<Vec<_>, _>>()?;
    let jwks_text = f
        .jwks
        .ok_or("oauth.jwks: missing: the authorization server's keys, a URL or a file")?;
    let jwks = if jwks_text.starts_with("https://") || jwks_text.starts_with("http://") {
        JwksSource::Url(url("jwks", &jwks_text)?)
    } else {
        JwksSource::File(base.join(jwks_text))
    };
    let algorithms = match f.algorithms {
        None => vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        Some(list) if list.is_empty() => {
            return Err("oauth.algorithms = []: name at least one".into());
        }
        Some(list) => list
            .iter()
            .map(|a| match a.as_str() {
                "RS256" => Ok(Algorithm::RS256),
                "RS384" => Ok(Algorithm::RS384),
                "RS512" => Ok(Algorithm::RS512),
                "PS256" => Ok(Algorithm::PS256),
                "PS384" => Ok(Algorithm::PS384),
                "PS512" => Ok(Algorithm::PS512),
                "ES256" => Ok(Algorithm::ES256),
                "ES384" => Ok(Algorithm::ES384),
                "EdDSA" => Ok(Algorithm::EdDSA),
                other => Err(format!(
                    "oauth.algorithms: {other:?}: accepted RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (signatures with public keys; a shared secret is not)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let duration = |key: &str, text: &Option<String>, default: Duration, max: Duration| {
        text.as_deref().map_or(Ok(default), |t| {
            crate::token::parse_duration_in(t, Duration::ZERO, max)
                .map_err(|m| format!("oauth.{key}: {m}"))
        })
    };
    let leeway = duration("leeway", &f.leeway, Duration::from_secs(30), MAX_LEEWAY)?;
    let jwks_refresh = duration(
        "jwks_refresh",
        &f.jwks_refresh,
        Duration::from_secs(600),
        Duration::from_secs(86_400),
    )?
    .max(Duration::from_secs(10));
    let mut scopes: Vec<(String, Vec<Glob>)> = Vec::new();
    for (scope, tools) in f.scopes.unwrap_or_default() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(format!(
                "oauth.scopes: {scope:?}: a scope is one word (no spaces, quotes or backslashes)"
            ));
        }
        let globs = tools
            .iter()
            .map(|g| Glob::parse(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| format!("oauth.scopes.{scope:?}: {m}"))?;
        scopes.push((scope, globs));
    }
    if scopes.is_empty() {
        return Err("oauth.scopes: missing: which tools each scope grants (e.g. \"tools.read\" = [\"echo\"])".into());
    }
    scopes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(OauthSpec {
        resource,
        authorization_servers,
        jwks,
        algorithms,
        leeway,
        client_claim: f.client_claim.unwrap_or_else(|| "client_id".into()),
        jwks_refresh,
        scopes,
    })
}

/// Why a token was refused: what the log says (the answer says less).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT this server reads.
    #[error("not a JWT: {0}")]
    Malformed(String),
    /// Its `alg` is not one accepted.
    #[error("algorithm {0:?} is not accepted (oauth.algorithms)")]
    Algorithm(String),
    /// No key of the JWKS has its `kid`.
    #[error("no key {0:?} in the JWKS (read again at most every 30 s)")]
    UnknownKey(String),
    /// The JWKS could not be read.
    #[error("the JWKS cannot be read: {0}")]
    Jwks(String),
    /// The signature or a claim did not check.
    #[error("{0}")]
    Invalid(String),
    /// No client claim.
    #[error("no {0:?} claim naming the client (oauth.client_claim)")]
    NoClient(String),
}

/// What a checked token says.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The client.
    pub client: String,
    /// The user (`sub`), when the token names one.
    pub subject: Option<String>,
    /// Its scopes that this server knows.
    pub scopes: Vec<String>,
}

struct Keys {
    set: JwkSet,
    read: Instant,
}

/// The JWKS read a token naming an unknown key starts.
#[derive(Default)]
struct Fetch {
    /// When the last one started.
    last: Option<Instant>,
    /// Whether one runs now.
    running: bool,
}

/// Checks tokens against the spec and the keys it holds.
pub struct Verifier {
    spec: OauthSpec,
    keys: RwLock<Option<Keys>>,
    refetch: Mutex<Fetch>,
    /// Counts reads of the JWKS (and failed ones), for those waiting.
    refreshed: tokio::sync::watch::Sender<u64>,
    http: Option<reqwest::Client>,
    /// Tokens that passed, by their SHA-256, with how long they may be
    /// taken without a check.
    cache: Mutex<HashMap<crate::token::TokenDigest, (Grant, Instant)>>,
    /// The metadata document's URL (RFC 9728, path-aware).
    pub metadata_url: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("resource", &self.spec.resource)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `spec`; the keys are read by [`Verifier::refresh`].
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(spec: OauthSpec) -> Result<Verifier, JwtError> {
        let http = match &spec.jwks {
            JwksSource::Url(_) => {
                toolplane_pool::process::install_tls_provider();
                Some(
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .redirect(reqwest::redirect::Policy::none())
                        .user_agent(concat!("toolplane/", env!("CARGO_PKG_VERSION")))
                        .build()
                        .map_err(|e| JwtError::Jwks(e.to_string()))?,
                )
            }
            JwksSource::File(_) => None,
        };
        Ok(Verifier {
            metadata_url: metadata_url(&spec.resource),
            spec,
            keys: RwLock::new(None),
            refetch: Mutex::default(),
            refreshed: tokio::sync::watch::Sender::new(0),
            http,
            cache: Mutex::default(),
        })
    }

    /// The spec served.
    pub fn spec(&self) -> &OauthSpec {
        &self.spec
    }

    /// Reads the JWKS again; the keys held stay when it fails.
    ///
    /// # Errors
    ///
    /// [`JwtError::Jwks`] naming the file or URL.
    pub async fn refresh(&self) -> Result<usize, JwtError> {
        let text = match (&self.spec.jwks, &self.http) {
            (JwksSource::File(p), _) => {
                use tokio::io::AsyncReadExt;
                let f = tokio::fs::File::open(p)
                    .await
                    .map_err(|e| JwtError::Jwks(format!("{}: {e}", p.display())))?;
                let mut bytes = Vec::new();
                f.take(MAX_JWKS as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| JwtError::Jwks(format!("{}: {e}", p.display())))?;
                if bytes.len() > MAX_JWKS {
                    return Err(JwtError::Jwks(format!(
                        "{}: larger than {MAX_JWKS} bytes",
                        p.display()
                    )));
                }
                bytes
            }
            (JwksSource::Url(u), Some(http)) => {
                let mut r = http
                    .get(u)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| JwtError::Jwks(format!("{u}: {e}")))?;
                let too_large = || JwtError::Jwks(format!("{u}: larger than {MAX_JWKS} bytes"));
                if r.content_length().is_some_and(|n| n > MAX_JWKS as u64) {
                    return Err(too_large());
                }
                // Read by chunks, and no further than the limit.
                let mut bytes = Vec::new();
                while let Some(chunk) = r
                    .chunk()
                    .await
                    .map_err(|e| JwtError::Jwks(format!("{u}: {e}")))?
                {
                    if bytes.len() + chunk.len() > MAX_JWKS {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
            (JwksSource::Url(u), None) => return Err(JwtError::Jwks(format!("{u}: no client"))),
        };
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|e| JwtError::Jwks(format!("{}: {e}", self.source())))?;
        let n = set.keys.iter().filter(|k| k.is_supported()).count();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Keys {
            set,
            read: Instant::now(),
        });
        Ok(n)
    }

    fn source(&self) -> String {
        match &self.spec.jwks {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url(u) => u.clone(),
        }
    }

    /// Whether the keys are older than `jwks_refresh`.
    pub fn stale(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|k| k.read.elapsed() >= self.spec.jwks_refresh)
    }

    /// Reads the JWKS again every `jwks_refresh` until `stop`, logging
    /// failures (the keys held stay).
    pub fn spawn_refresher(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let v = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(v.spec.jwks_refresh) => {}
                }
                if let Err(e) = v.refresh().await {
                    tracing::warn!("oauth: {e}; keeping the keys read before");
                }
            }
        });
    }

    /// Checks `token`: its header, its key (re-reading the JWKS once, at
    /// most every [`REFETCH_EVERY`], when its `kid` is unknown), its
    /// signature, `iss`, `aud`, `exp`, `nbf`, and its client claim.
    ///
    /// # Errors
    ///
    /// [`JwtError`], saying why.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Grant, JwtError> {
        if token.len() > MAX_JWT {
            return Err(JwtError::Malformed(format!("longer than {MAX_JWT} bytes")));
        }
        // A token checked a moment ago is not checked again (a signature
        // check is tens of microseconds); only tokens that passed are kept,
        // so a flood of bad ones cannot fill the cache.
        let digest = crate::token::TokenDigest::of(token);
        if let Some(g) = self.cached(&digest) {
            return Ok(g);
        }
        let (grant, exp) = self.check(token).await?;
        self.remember(digest, &grant, exp);
        Ok(grant)
    }

    fn cached(&self, digest: &crate::token::TokenDigest) -> Option<Grant> {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(digest)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(g, _)| g.clone())
    }

    /// Keeps `grant` until its `exp` (unix seconds) or [`CACHE_FOR`],
    /// whichever comes first; at most [`CACHE_MAX`] tokens (the expired go
    /// first, then all).
    fn remember(&self, digest: crate::token::TokenDigest, grant: &Grant, exp: u64) {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(exp.saturating_sub(now_unix)).min(CACHE_FOR);
        if left.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CACHE_MAX {
            c.retain(|_, (_, until)| *until > now);
            if c.len() >= CACHE_MAX {
                c.clear();
            }
        }
        c.insert(digest, (grant.clone(), now + left));
    }

    /// The whole check, the cache neither read nor written: what a token
    /// not seen before costs (for benchmarks).
    ///
    /// # Errors
    ///
    /// As [`Verifier::verify`].
    pub async fn verify_uncached(self: &Arc<Self>, token: &str) -> Result<Grant, JwtError> {
        self.check(token).await.map(|(g, _)| g)
    }

    /// Tokens held checked (for `/metrics`).
    pub fn cached_tokens(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The whole check of a token not cached; its grant and its `exp`.
    async fn check(self: &Arc<Self>, token: &str) -> Result<(Grant, u64), JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if !self.spec.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        // An access token (RFC 9068: `at+jwt`), or a plain JWT; not an ID
        // token or another kind of JWT meant for someone else.
        if let Some(t) = &header.typ
            && !["jwt", "at+jwt", "application/at+jwt"].contains(&t.to_ascii_lowercase().as_str())
        {
            return Err(JwtError::Invalid(format!(
                "typ {t:?} is not an access token's"
            )));
        }
        let jwk = match self.find(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                // The JWKS is read again in a task of its own (a caller
                // that hangs up does not cancel it), at most every
                // REFETCH_EVERY; every token naming an unknown key while it
                // runs waits for it (bounded), not only the one that
                // started it.
                let mut done = self.refreshed.subscribe();
                let running = {
                    let mut f = self.refetch.lock().unwrap_or_else(|p| p.into_inner());
                    if !f.running && f.last.is_none_or(|t| t.elapsed() >= REFETCH_EVERY) {
                        f.last = Some(Instant::now());
                        f.running = true;
                        let me = Arc::clone(self);
                        tokio::spawn(async move {
                            if let Err(e) = me.refresh().await {
                                tracing::warn!("oauth: {e}; keeping the keys read before");
                            }
                            me.refetch.lock().unwrap_or_else(|p| p.into_inner()).running = false;
                            me.refreshed.send_modify(|g| *g += 1);
                        });
                    }
                    f.running
                };
                if running {
                    let _ = tokio::time::timeout(FETCH_WAIT, done.changed()).await;
                }
                self.find(header.kid.as_deref(), header.alg)
                    .ok_or_else(|| JwtError::UnknownKey(header.kid.clone().unwrap_or_default()))?
            }
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| JwtError::Invalid(format!("the key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.spec.leeway.as_secs();
        v.validate_nbf = true;
        v.set_audience(&[&self.spec.resource]);
        v.set_issuer(&self.spec.authorization_servers);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
                .map_err(|e| JwtError::Invalid(describe(e.kind())))?;
        let claims = data.claims;
        // One issuer, a string (the library takes any overlap of a list).
        if !claims.get("iss").is_some_and(serde_json::Value::is_string) {
            return Err(JwtError::Invalid("iss is not one string".into()));
        }
        let client = claims
            .get(&self.spec.client_claim)
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty() && c.len() <= 256)
            .ok_or_else(|| JwtError::NoClient(self.spec.client_claim.clone()))?;
        let granted: Vec<&str> = claims
            .get("scope")
            .and_then(|s| s.as_str())
            .map(|s| s.split_whitespace().collect())
            .unwrap_or_default();
        let scopes = self
            .spec
            .scopes
            .iter()
            .filter(|(s, _)| granted.contains(&s.as_str()))
            .map(|(s, _)| s.clone())
            .collect();
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        Ok((
            Grant {
                client: client.to_string(),
                subject: claims
                    .get("sub")
                    .and_then(|v| v.as_str())
                    .filter(|v| v.len() <= 256)
                    .map(str::to_owned),
                scopes,
            },
            exp,
        ))
    }

    /// The key for `kid` (or, without one, the only key of the family of
    /// `alg`).
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let set = &keys.as_ref()?.set;
        // A key for signatures, of the token's algorithm when it names
        // one (RFC 7517 §4.2, §4.4).
        let fits = |k: &Jwk| {
            !matches!(
                k.common.public_key_use,
                Some(
                    jsonwebtoken::jwk::PublicKeyUse::Encryption
                        | jsonwebtoken::jwk::PublicKeyUse::Other(_)
                )
            ) && k
                .common
                .key_algorithm
                .is_none_or(|a| a == jsonwebtoken::jwk::KeyAlgorithm::from(alg))
        };
        match kid {
            Some(kid) => set.find(kid).filter(|k| fits(k)).cloned(),
            None => {
                let family: Vec<&Jwk> = set
                    .keys
                    .iter()
                    .filter(|k| fits(k))
                    .filter(|k| DecodingKey::from_jwk(k).is_ok_and(|d| d.family() == alg.family()))
                    .collect();
                (family.len() == 1).then(|| family[0].clone())
            }
        }
    }

    /// The tools `scopes` grant.
    pub fn tools_of(&self, scopes: &[String]) -> Vec<Glob> {
        self.spec
            .scopes
            .iter()
            .filter(|(s, _)| scopes.contains(s))
            .flat_map(|(_, g)| g.iter().cloned())
            .collect()
    }

    /// The scopes that grant `tool`.
    pub fn scopes_for(&self, tool: &str) -> Vec<String> {
        self.spec
            .scopes
            .iter()
            .filter(|(_, g)| g.iter().any(|g| g.matches(tool)))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Every scope, space-separated (the challenge's `scope`).
    pub fn all_scopes(&self) -> String {
        self.spec
            .scopes
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The protected-resource metadata document (RFC 9728).
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "resource": self.spec.resource,
            "authorization_servers": self.spec.authorization_servers,
            "scopes_supported": self.spec.scopes.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": "toolplane",
        })
    }

    /// The `WWW-Authenticate` of a 401: where the metadata is, and the
    /// scopes; `invalid_token` when one was given.
    pub fn challenge(&self, given: bool) -> String {
        let error = if given {
            "error=\"invalid_token\", "
        } else {
            ""
        };
        format!(
            "Bearer {error}resource_metadata=\"{}\", scope=\"{}\"",
            self.metadata_url,
            self.all_scopes()
        )
    }

    /// The `WWW-Authenticate` of a 403 for a tool no scope of the token
    /// grants: the scopes that would.
    pub fn insufficient(&self, tool: &str) -> String {
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
            self.scopes_for(tool).join(" "),
            self.metadata_url
        )
    }
}

/// What a validation error means, in words for the log.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired (exp, past the leeway)".into(),
        K::ImmatureSignature => "not yet valid (nbf, past the leeway)".into(),
        K::InvalidAudience => "another audience (aud is not oauth.resource)".into(),
        K::InvalidIssuer => "another issuer (iss is not in oauth.authorization_servers)".into(),
        K::InvalidSignature => "the signature does not check".into(),
        K::InvalidAlgorithm => "the algorithm does not match the key".into(),
        K::MissingRequiredClaim(c) => format!("no {c} claim"),
        K::InvalidClaimFormat(c) => format!("the {c} claim is malformed"),
        other => format!("{other:?}"),
    }
}

/// RFC 9728 §3.1: the well-known path goes between the host and the
/// resource's path (`https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`).
pub fn metadata_url(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("https", resource));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split('?').next().unwrap_or("").trim_end_matches('/');
    format!("{scheme}://{authority}/.well-known/oauth-protected-resource{path}")
}

/// The path part of [`metadata_url`]: where this server answers it.
pub fn metadata_path(resource: &str) -> String {
    let url = metadata_url(resource);
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    rest.find('/')
        .map_or_else(|| "/".into(), |i| rest[i..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<OauthSpec, String> {
        #[derive(Deserialize)]
        struct F {
            oauth: OauthFile,
        }
        let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(f.oauth, std::path::Path::new("/etc/toolplane"))
    }

    const OK: &str = "[oauth]\nresource = \"https://t.example/mcp\"\nauthorization_servers = [\"https://a.example\"]\njwks = \"keys.json\"\n[oauth.scopes]\nread = [\"echo\"]\n";

    #[test]
    fn a_spec_reads_with_its_defaults_and_every_mistake_names_its_key() {
        let s = spec(OK).unwrap();
        assert_eq!(s.jwks, JwksSource::File("/etc/toolplane/keys.json".into()));
        assert_eq!(
            s.algorithms,
            [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        assert_eq!(
            (s.leeway.as_secs(), s.client_claim.as_str()),
            (30, "client_id")
        );
        for (change, want) in [
            (
                ("resource = \"https://t.example/mcp\"", ""),
                "oauth.resource: missing",
            ),
            (
                ("https://t.example/mcp", "http://t.example/mcp"),
                "oauth.resource = \"http://t.example/mcp\": accepted https://",
            ),
            (
                ("jwks = \"keys.json\"", "jwks = \"http://evil.example/k\""),
                "oauth.jwks = \"http://evil.example/k\": accepted https://",
            ),
            (
                (
                    "jwks = \"keys.json\"",
                    "jwks = \"keys.json\"\nalgorithms = [\"HS256\"]",
                ),
                "oauth.algorithms: \"HS256\": accepted RS256",
            ),
            (
                (
                    "jwks = \"keys.json\"",
                    "jwks = \"keys.json\"\nleeway = \"10m\"",
                ),
                "oauth.leeway: \"10m\" is out of range: accepted 0s ..= 5m",
            ),
            (
                ("read = [\"echo\"]", "\"a b\" = [\"echo\"]"),
                "oauth.scopes: \"a b\": a scope is one word",
            ),
            (("read = [\"echo\"]", ""), "oauth.scopes: missing"),
            (
                ("https://t.example/mcp", "https://t.example/a{b"),
                "oauth.resource = \"https://t.example/a{b\": '{' cannot be",
            ),
            (
                ("https://t.example/mcp", "https://t.example/{*x}/y"),
                "oauth.resource = \"https://t.example/{*x}/y\": '{' cannot be",
            ),
        ] {
            let e = spec(&OK.replace(change.0, change.1)).unwrap_err();
            assert!(
                e.starts_with(want),
                "{change:?}\n  gave: {e}\n  want: {want}"
            );
        }
        // Loopback may be plain http (a local authorization server).
        assert!(spec(&OK.replace("https://a.example", "http://127.0.0.1:9000")).is_ok());
    }

    #[test]
    fn the_metadata_url_is_path_aware() {
        assert_eq!(
            metadata_url("https://t.example.com/mcp"),
            "https://t.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://t.example.com"),
            "https://t.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_path("http://127.0.0.1:7070/mcp"),
            "/.well-known/oauth-protected-resource/mcp"
        );
    }
}
