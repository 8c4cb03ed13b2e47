//! `runtime = "remote"`: an MCP server elsewhere, reached over streamable
//! HTTP with rmcp's client, pooled and supervised as a process upstream is.
//!
//! A *session* plays a process's part: the pool opens one (`initialize`)
//! when a call needs it or `pool.min` asks, carries up to
//! `pool.max_inflight_per_process` calls on it, and closes it when idle
//! (its `DELETE` ends it on the server). The MCP side, listing,
//! `list_changed`, progress, cancellation and results, is `mcp.rs`'s, the
//! same for both. What differs is the wire and how a session ends: a
//! session whose transport fails a call (the server went away, a proxy
//! cut the stream) or does not answer a ping after a cancel is closed, and
//! the next call opens a new one; a server that cannot be reached fails
//! the starts, which back off and put the tool down (`health.rs`) until a
//! session opens again.
//!
//! Headers are resolved when the tool loads (secrets by reference,
//! `toolplane_tool::secret`) and sent as sensitive values; redirects are
//! not followed (a header would go where the manifest did not say).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::error::ProcessLoadError;
use crate::spec::{ProcessLimits, RemoteManifest};

/// How often, and how soon, a broken response stream is resumed
/// (`Last-Event-ID`) before its call fails: twice, 250 ms apart. A server
/// that went away is not waited for beyond that; the call's deadline
/// bounds the rest. (rmcp's default backs off without end.)
#[derive(Debug)]
struct Resume;

impl SseRetryPolicy for Resume {
    fn retry(&self, attempt: usize) -> Option<Duration> {
        (attempt < 2).then_some(Duration::from_millis(250))
    }
}

/// Installs ring as the process's TLS provider, unless one is already:
/// every `reqwest::Client` built in this process needs one (this crate
/// builds reqwest with `rustls-no-provider`, and cargo unifies features,
/// so a client built elsewhere in the program, a test's, panics without
/// it). ring, not aws-lc-rs (rustls' default, a C library that adds
/// minutes to every fresh build on two cores); ring has no post-quantum
/// key exchange, hence rustls' deprecation: X25519 and the classic suites
/// remain.
pub fn install_tls_provider() {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a remote tool's sessions go, and what they send.
pub(crate) struct Remote {
    /// The endpoint, as checked.
    url: Arc<str>,
    /// The endpoint as shown: without its query (`spec::shown_url`).
    pub(crate) shown: Arc<str>,
    headers: HashMap<HeaderName, HeaderValue>,
    client: reqwest::Client,
}

impl Remote {
    /// Resolves the manifest's headers (references read now) and builds
    /// the HTTP client: connects within `limits.startup_timeout`, no
    /// redirects.
    pub(crate) fn resolve(
        spec: &RemoteManifest,
        base: Option<&Path>,
    ) -> Result<Remote, ProcessLoadError> {
        let mut headers = HashMap::with_capacity(spec.headers.len());
        for (key, value) in &spec.headers {
            let secret = value
                .resolve(base)
                .map_err(|source| ProcessLoadError::HeaderSecret {
                    key: key.clone(),
                    source,
                })?;
            let name =
                HeaderName::from_bytes(key.as_bytes()).map_err(|_| ProcessLoadError::Header {
                    key: key.clone(),
                    why: "not an HTTP header name",
                })?;
            let mut v = HeaderValue::from_str(secret.expose().trim_end_matches(['\r', '\n']))
                .map_err(|_| ProcessLoadError::Header {
                    key: key.clone(),
                    why: "its value has characters a header may not carry (control characters, a line break)",
                })?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(spec.limits.startup_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toolplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ProcessLoadError::HttpClient)?;
        Ok(Remote {
            url: spec.url.as_str().into(),
            shown: crate::spec::shown_url(&spec.url).into(),
            headers,
            client,
        })
    }

    /// A new session's transport: `inflight` POSTs at once, answers up to
    /// `limits.max_output` (a larger one fails its call).
    pub(crate) fn transport(
        &self,
        limits: &ProcessLimits,
        inflight: usize,
    ) -> StreamableHttpClientTransport<reqwest::Client> {
        let max = usize::try_from(limits.max_output).unwrap_or(usize::MAX);
        let mut config = StreamableHttpClientTransportConfig::with_uri(Arc::clone(&self.url))
            .custom_headers(self.headers.clone())
            .max_concurrent_requests(inflight)
            .max_json_response_size(max)
            .max_sse_event_size(max)
            .control_request_timeout(limits.startup_timeout)
            .session_recovery_timeout(limits.startup_timeout)
            // A server that restarted answers the old session 404: rmcp
            // opens a new one and sends the request again (the server never
            // ran it), rather than failing the next call.
            .reinit_on_expired_session(true);
        config.retry_config = Arc::new(Resume);
        StreamableHttpClientTransport::with_client(self.client.clone(), config)
    }
}
