//! OpenTelemetry traces of calls, exported over OTLP.
//!
//! Configured by the standard environment variables only, and off (no
//! thread, no exporter, no span) unless one of
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set or `OTEL_TRACES_EXPORTER` lists `otlp`; `OTEL_TRACES_EXPORTER=none`
//! and `OTEL_SDK_DISABLED=true` keep it off. Off, a caller's trace context
//! is still read (the audit log names its trace) and passed on to an MCP
//! upstream as it came, as an intermediary that does not trace should.
//!
//! - Export: OTLP over HTTP with protobuf (`OTEL_EXPORTER_OTLP_*`: endpoint,
//!   headers, timeout; no compression), through the SDK's batch span
//!   processor (`OTEL_BSP_*`), which runs on its own thread: a call's span
//!   is handed to a bounded queue when it ends (spans past it are dropped,
//!   never waited for), and the HTTP requests are that thread's, never a
//!   worker's or a front door's. Spans exported and spans whose export
//!   failed are counted (`/metrics`), and a failure is logged (at most one
//!   line a second).
//! - Sampling: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, read and
//!   checked here (a wrong value stops the start with the variable named,
//!   where the SDK would fall back silently to sampling everything). Unset:
//!   a caller's sampled trace is followed, and one in `sample_every` (the
//!   engine's span sampling, 100 by default) of the rest is sampled
//!   (`parentbased_traceidratio`).
//! - What a caller sends is bounded in a span: a request id, protocol
//!   version or tool name over 128 bytes is cut; the MCP session id is
//!   exported as a digest (the id itself lets one post into the session);
//!   a failed call's status says what failed, never the input it quoted or
//!   the tool's own error text (the audit log keeps arguments out unless
//!   asked; spans go to a third party).
//! - Spans: one SERVER span per call, named and attributed as the
//!   OpenTelemetry MCP conventions say (`tools/call {gen_ai.tool.name}`,
//!   `mcp.method.name`, `gen_ai.tool.name`, `gen_ai.operation.name`,
//!   `jsonrpc.request.id`, `mcp.session.id`, `network.transport`,
//!   `error.type`, `rpc.response.status_code`); a REST call is the GenAI
//!   `execute_tool {gen_ai.tool.name}` span with the HTTP server
//!   attributes. The engine's phases are its events: `queued` (admitted),
//!   `running` (a worker started it), `answered` (its outcome known).
//! - Resource: what `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//!   say, and where they are silent `service.name` `toolplane`,
//!   `service.version`, `service.instance.id` (the node's name).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::error::{CallError, CallResult};

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// An environment variable holds a value this server does not take.
    #[error("environment variable {var}={value:?}: {accepted}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it takes.
        accepted: &'static str,
    },
    /// The OTLP exporter could not be built (a bad endpoint, …); the
    /// message shows the endpoint without its credentials.
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// The tracer and its provider (whose batch processor owns the export
/// thread).
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stats: Arc<ExportStats>,
}

/// Spans exported, and spans whose export failed.
#[derive(Debug)]
pub struct ExportStats {
    /// Spans the collector took.
    pub exported: AtomicU64,
    /// Spans in batches the collector did not take (or never answered).
    pub failed: AtomicU64,
    log: crate::budget::LogBudget,
}

/// The exporter, counting what it exports and logging what fails.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<ExportStats>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        match &r {
            Ok(()) => self.stats.exported.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                if let Some(left_out) = self.stats.log.take() {
                    let not_logged = (left_out > 0).then_some(left_out);
                    tracing::warn!(spans = n, error = %e, not_logged, "traces: an export failed");
                }
                self.stats.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The longest text a caller's value keeps in a span.
const MAX_VALUE: usize = 128;

/// `v` cut to [`MAX_VALUE`] bytes (at a character boundary).
fn bounded(v: &str) -> String {
    if v.len() <= MAX_VALUE {
        return v.to_string();
    }
    let mut end = MAX_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// The first 16 hex digits of `v`'s SHA-256.
fn digest(v: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(v.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a call came in, as its span describes it.
#[derive(Debug, Clone, Default)]
pub enum Front {
    /// The command line or an embedding program.
    #[default]
    Local,
    /// `POST /v1/tools/{name}/call`.
    Rest,
    /// An MCP `tools/call`.
    Mcp(McpFront),
}

/// What an MCP `tools/call` span records of its request.
#[derive(Debug, Clone, Default)]
pub struct McpFront {
    /// The JSON-RPC request's id, as text.
    pub request_id: Option<String>,
    /// The streamable-HTTP session, if any.
    pub session: Option<String>,
    /// The MCP protocol version the client speaks, when it says.
    pub protocol: Option<String>,
    /// Over streamable HTTP (`tcp`), else stdio (`pipe`).
    pub http: bool,
    /// The HTTP request's own trace context, when `_meta` named another:
    /// linked, as the conventions ask.
    pub link: Option<SpanContext>,
}

/// What one environment variable holds, if set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Tracing {
    /// Starts tracing as the environment says; `None` when it says
    /// nothing (or turns it off). `sample_every` is the engine's span
    /// sampling, the default ratio; `node` names this server.
    ///
    /// # Errors
    ///
    /// A variable with a value this server does not take, or an exporter
    /// that cannot be built.
    pub fn from_env(sample_every: u64, node: &str) -> Result<Option<Tracing>, OtelError> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let listed = var("OTEL_TRACES_EXPORTER");
        let exporters: Vec<String> = listed
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let otlp = exporters.iter().any(|e| e == "otlp");
        if !exporters.is_empty() && !otlp {
            if exporters.iter().any(|e| e != "none") {
                tracing::warn!(
                    "traces: OTEL_TRACES_EXPORTER={:?} names no exporter this build has (otlp): no traces",
                    listed.unwrap_or_default()
                );
            }
            return Ok(None);
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if endpoint.is_none() && !otlp {
            return Ok(None);
        }
        // The exporter reads the traces' own variable first.
        let checks: [(&'static str, &'static str, &'static str, &'static str); 2] = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/protobuf",
                "http/protobuf (this build exports OTLP over HTTP only)",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "none",
                "none (this build does not compress)",
            ),
        ];
        for (own, general, want, accepted) in checks {
            let set = var(own)
                .map(|v| (own, v))
                .or_else(|| var(general).map(|v| (general, v)));
            if let Some((n, v)) = set
                && !v.trim().eq_ignore_ascii_case(want)
            {
                return Err(OtelError::Env {
                    var: n,
                    value: v,
                    accepted,
                });
            }
        }
        let sampler = sampler_from(&var, sample_every)?;
        // An https endpoint needs the TLS provider reqwest is built for.
        toolplane_pool::process::install_tls_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| {
                // Its message may quote the endpoint, credentials and all.
                let mut m = e.to_string();
                if let Some(raw) = &endpoint {
                    m = m.replace(raw.as_str(), &shown(raw));
                }
                OtelError::Exporter(m)
            })?;
        Ok(Some(Tracing::with_exporter(exporter, Some(sampler), node)))
    }

    /// Traces into `exporter` through the SDK's batch processor, sampled
    /// by `sampler` (`None`: as the SDK's defaults say); `node` names this
    /// server.
    pub fn with_exporter(
        exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
        sampler: Option<Sampler>,
        node: &str,
    ) -> Tracing {
        // What the environment says (OTEL_SERVICE_NAME,
        // OTEL_RESOURCE_ATTRIBUTES) wins; ours fill in what it leaves out.
        let from_env = Resource::builder().build();
        let says = |key: &'static str| {
            from_env
                .get(&opentelemetry::Key::from_static_str(key))
                .is_some_and(|v| !v.as_str().starts_with("unknown_service"))
        };
        let mut resource = Resource::builder();
        if !says("service.name") {
            resource = resource.with_service_name("toolplane");
        }
        if !says("service.version") {
            resource = resource
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        }
        if !says("service.instance.id") {
            resource =
                resource.with_attribute(KeyValue::new("service.instance.id", node.to_string()));
        }
        let resource = resource.build();
        let stats = Arc::new(ExportStats {
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            log: crate::budget::LogBudget::new(1),
        });
        let exporter = Counted {
            inner: exporter,
            stats: Arc::clone(&stats),
        };
        let mut provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource);
        if let Some(s) = sampler {
            provider = provider.with_sampler(s);
        }
        let provider = provider.build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("toolplane")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Tracing {
            provider,
            tracer,
            stats,
        }
    }

    /// Spans exported and failed so far.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Starts a call's span: a child of `parent` (the caller's), named for
    /// `tool` (`None`: a tool that does not exist, which leaves the name
    /// out: span names stay few).
    pub fn start(
        &self,
        front: &Front,
        tool: Option<&str>,
        parent: Option<&SpanContext>,
    ) -> CallSpan {
        let method = match front {
            Front::Mcp(_) => "tools/call",
            Front::Rest | Front::Local => "execute_tool",
        };
        let name: Cow<'static, str> = match tool {
            Some(t) => format!("{method} {}", bounded(t)).into(),
            None => method.into(),
        };
        let cx = match parent {
            Some(p) => Context::new().with_remote_span_context(p.clone()),
            None => Context::new(),
        };
        let started = SystemTime::now();
        let mut builder = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(started);
        if let Front::Mcp(McpFront { link: Some(l), .. }) = front {
            builder = builder.with_links(vec![Link::with_context(l.clone())]);
        }
        let mut span = self.tracer.build_with_context(builder, &cx);
        if span.is_recording() {
            let mut a = Vec::with_capacity(10);
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            if let Some(t) = tool {
                a.push(KeyValue::new("gen_ai.tool.name", bounded(t)));
            }
            match front {
                Front::Mcp(m) => {
                    a.push(KeyValue::new("mcp.method.name", "tools/call"));
                    if let Some(id) = &m.request_id {
                        a.push(KeyValue::new("jsonrpc.request.id", bounded(id)));
                    }
                    if let Some(s) = &m.session {
                        a.push(KeyValue::new("mcp.session.id", digest(s)));
                    }
                    if let Some(v) = &m.protocol {
                        a.push(KeyValue::new("mcp.protocol.version", bounded(v)));
                    }
                    a.push(KeyValue::new(
                        "network.transport",
                        if m.http { "tcp" } else { "pipe" },
                    ));
                    if m.http {
                        a.push(KeyValue::new("network.protocol.name", "http"));
                    }
                }
                Front::Rest => {
                    a.push(KeyValue::new("http.request.method", "POST"));
                    a.push(KeyValue::new("http.route", "/v1/tools/{name}/call"));
                    a.push(KeyValue::new("network.transport", "tcp"));
                }
                Front::Local => {}
            }
            span.set_attributes(a);
        }
        CallSpan {
            span,
            started,
            front: match front {
                Front::Local => 0,
                Front::Rest => 1,
                Front::Mcp(_) => 2,
            },
        }
    }

    /// Exports what is queued and stops the export thread (blocking, for
    /// at most 5 s: the last batch to a collector that does not answer is
    /// lost, and said so).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// Where spans go, for the start's log line: the endpoint variable's
/// URL without credentials or query, or the default.
pub fn endpoint_shown() -> String {
    match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(e) => shown(&e),
        None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => {
                let base = shown(&e);
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            None => "http://localhost:4318/v1/traces".into(),
        },
    }
}

/// `url` without its credentials and query.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` / `_ARG` name, checked and built here
/// (the SDK would read them again, untrimmed, and fall back to sampling
/// everything on a value it does not take); unset, the default this
/// server picks. `var` reads the environment.
fn sampler_from(
    var: &dyn Fn(&str) -> Option<String>,
    sample_every: u64,
) -> Result<Sampler, OtelError> {
    let Some(name) = var("OTEL_TRACES_SAMPLER") else {
        let root = if sample_every == 0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(1.0 / sample_every as f64)
        };
        return Ok(Sampler::ParentBased(Box::new(root)));
    };
    let name = name.trim().to_ascii_lowercase();
    let ratio = || {
        let arg = var("OTEL_TRACES_SAMPLER_ARG");
        arg.as_deref()
            .and_then(|a| a.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| OtelError::Env {
                var: "OTEL_TRACES_SAMPLER_ARG",
                value: arg.clone().unwrap_or_default(),
                accepted: "a ratio in 0..=1 (the traceidratio samplers need it)",
            })
    };
    let parent = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match name.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent(Sampler::AlwaysOn),
        "parentbased_always_off" => parent(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent(Sampler::TraceIdRatioBased(ratio()?)),
        _ => {
            return Err(OtelError::Env {
                var: "OTEL_TRACES_SAMPLER",
                value: name,
                accepted: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
            });
        }
    })
}

/// When a call's phases happened, from the engine's timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Admitted into the engine.
    pub queued: SystemTime,
    /// A worker started it.
    pub running: SystemTime,
    /// Its outcome was known.
    pub answered: SystemTime,
    /// The worker.
    pub worker: u16,
}

impl Phases {
    /// From a completion's timestamps, read now with the engine's clock.
    pub fn of(times: &toolplane_core::Timestamps, worker: u16, clock: &quanta::Clock) -> Phases {
        let now = SystemTime::now();
        let since = clock.delta(times.finished, clock.raw());
        let answered = now.checked_sub(since).unwrap_or(now);
        let running = answered
            .checked_sub(clock.delta(times.started, times.finished))
            .unwrap_or(answered);
        let queued = running
            .checked_sub(clock.delta(times.submitted, times.started))
            .unwrap_or(running);
        Phases {
            queued,
            running,
            answered,
            worker,
        }
    }
}

/// One call's span, until the call ends.
#[derive(Debug)]
pub struct CallSpan {
    span: opentelemetry_sdk::trace::Span,
    /// When it started (the wall clock the phases are kept within).
    started: SystemTime,
    /// 0 local, 1 REST, 2 MCP.
    front: u8,
}

impl CallSpan {
    /// The span's context (valid, sampled or not, while tracing runs).
    pub fn context(&self) -> &SpanContext {
        self.span.span_context()
    }

    /// Whether it is recorded (and exported).
    pub fn is_sampled(&self) -> bool {
        self.span.is_recording()
    }

    /// Ends the span: the engine's phases as events, the result as
    /// attributes and status.
    pub fn end(
        mut self,
        result: Result<(), &CallError>,
        counted: CallResult,
        phases: Option<Phases>,
    ) {
        if !self.span.is_recording() {
            return;
        }
        let now = SystemTime::now();
        if let Some(p) = phases {
            // The engine's clock and the wall clock drift apart: the
            // events are kept within the span.
            let within = |t: SystemTime| t.clamp(self.started, now);
            self.span
                .add_event_with_timestamp("queued", within(p.queued), vec![]);
            self.span.add_event_with_timestamp(
                "running",
                within(p.running),
                vec![KeyValue::new("toolplane.worker", i64::from(p.worker))],
            );
            self.span.add_event_with_timestamp(
                "answered",
                within(p.answered),
                vec![KeyValue::new("toolplane.result", counted.as_str())],
            );
        }
        self.span
            .set_attribute(KeyValue::new("toolplane.result", counted.as_str()));
        match result {
            Ok(()) => {
                if self.front == 1 {
                    self.span
                        .set_attribute(KeyValue::new("http.response.status_code", 200));
                }
            }
            Err(e) => {
                let error_type: String = match self.front {
                    1 => {
                        let code = e.status().as_u16();
                        self.span.set_attribute(KeyValue::new(
                            "http.response.status_code",
                            i64::from(code),
                        ));
                        code.to_string()
                    }
                    2 => match e.mcp_error_code() {
                        Some(code) => {
                            self.span.set_attribute(KeyValue::new(
                                "rpc.response.status_code",
                                code.to_string(),
                            ));
                            code.to_string()
                        }
                        None => "tool_error".into(),
                    },
                    _ => counted.as_str().into(),
                };
                self.span
                    .set_attribute(KeyValue::new("error.type", error_type));
                self.span.set_status(Status::error(e.described()));
            }
        }
        self.span.end_with_timestamp(now);
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // Dropped unended: its caller went away.
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "toolplane.result",
                CallResult::Abandoned.as_str(),
            ));
            self.span
                .set_attribute(KeyValue::new("error.type", CallResult::Abandoned.as_str()));
            self.span.set_status(Status::error("the caller went away"));
            self.span.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_default_sampler_follows_the_engine_and_bad_values_are_named() {
        let by_engine = sampler_from(&env(&[]), 100).unwrap();
        assert_eq!(
            format!("{by_engine:?}"),
            format!(
                "{:?}",
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.01)))
            )
        );
        let off = sampler_from(&env(&[]), 0).unwrap();
        assert!(format!("{off:?}").contains("AlwaysOff"), "{off:?}");
        // Set: built here, spaces and a trailing newline (a ConfigMap's
        // block scalar) taken as the SDK would not.
        for (ok, built) in [
            (&[("OTEL_TRACES_SAMPLER", "always_on\n")][..], "AlwaysOn"),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", " 0.25\n"),
                ],
                "TraceIdRatioBased(0.25)",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1"),
                ],
                "ParentBased",
            ),
        ] {
            let s = format!("{:?}", sampler_from(&env(ok), 100).unwrap());
            assert!(s.contains(built), "{ok:?}: {s}");
        }
        for (bad, named) in [
            (
                &[("OTEL_TRACES_SAMPLER", "sometimes")][..],
                "OTEL_TRACES_SAMPLER=\"sometimes\"",
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "traceidratio")],
                "OTEL_TRACES_SAMPLER_ARG=\"\"",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG=\"1.5\"",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "half"),
                ],
                "OTEL_TRACES_SAMPLER_ARG=\"half\"",
            ),
        ] {
            let e = sampler_from(&env(bad), 100).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
    }
}
