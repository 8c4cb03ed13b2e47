//! OpenTelemetry traces of calls, exported over OTLP.
//!
//! Configured by the standard environment variables only, and off (no
//! thread, no exporter, nothing per call but the caller's context read for
//! the audit log) unless one of `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set or `OTEL_TRACES_EXPORTER=otlp`;
//! `OTEL_TRACES_EXPORTER=none` and `OTEL_SDK_DISABLED=true` keep it off.
//!
//! - Export: OTLP over HTTP with protobuf (`OTEL_EXPORTER_OTLP_*`: endpoint,
//!   headers, timeout, compression none), through the SDK's batch span
//!   processor (`OTEL_BSP_*`), which runs on its own thread: a call's span
//!   is handed to a bounded queue when it ends (spans past it are dropped,
//!   never waited for), and the HTTP requests are that thread's, never a
//!   worker's or a front door's.
//! - Sampling: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, checked
//!   here (a wrong value stops the start with the variable named, where the
//!   SDK would fall back silently). Unset: a caller's sampled trace is
//!   followed, and one in `sample_every` (the engine's span sampling, 100
//!   by default) of the rest is sampled (`parentbased_traceidratio`).
//! - Spans: one SERVER span per call, named and attributed as the
//!   OpenTelemetry MCP conventions say (`tools/call {gen_ai.tool.name}`,
//!   `mcp.method.name`, `gen_ai.tool.name`, `gen_ai.operation.name`,
//!   `jsonrpc.request.id`, `mcp.session.id`, `network.transport`,
//!   `error.type`, `rpc.response.status_code`); a REST call is the GenAI
//!   `execute_tool {gen_ai.tool.name}` span with the HTTP server
//!   attributes. The engine's phases are its events: `queued` (admitted),
//!   `running` (a worker started it), `answered` (its outcome known).
//! - Resource: `service.name` `toolplane` unless `OTEL_SERVICE_NAME` or
//!   `OTEL_RESOURCE_ATTRIBUTES` name one; `service.version`,
//!   `service.instance.id` (the node's name).

use std::borrow::Cow;
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
    /// The OTLP exporter could not be built (a bad endpoint, …).
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The samplers `OTEL_TRACES_SAMPLER` may name.
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The tracer and its provider (whose batch processor owns the export
/// thread).
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
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
        let exporter = var("OTEL_TRACES_EXPORTER");
        match exporter.as_deref().map(str::trim) {
            Some("none") => return Ok(None),
            None | Some("otlp") => {}
            Some(v) => {
                return Err(OtelError::Env {
                    var: "OTEL_TRACES_EXPORTER",
                    value: v.to_string(),
                    accepted: "otlp or none",
                });
            }
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if !endpoint && exporter.is_none() {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(v) = var(name)
                && v.trim() != "http/protobuf"
            {
                return Err(OtelError::Env {
                    var: if name.contains("TRACES") {
                        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                    } else {
                        "OTEL_EXPORTER_OTLP_PROTOCOL"
                    },
                    value: v,
                    accepted: "http/protobuf (this build exports OTLP over HTTP only)",
                });
            }
        }
        let sampler = sampler_from(&var, sample_every)?;
        // An https endpoint needs the TLS provider reqwest is built for.
        toolplane_pool::process::install_tls_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let mut resource = Resource::builder();
        let named = Resource::builder()
            .build()
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|n| !n.as_str().starts_with("unknown_service"));
        if !named {
            resource = resource.with_service_name("toolplane");
        }
        let resource = resource
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", node.to_string()),
            ])
            .build();
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
        Ok(Some(Tracing { provider, tracer }))
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
            Some(t) => format!("{method} {t}").into(),
            None => method.into(),
        };
        let cx = match parent {
            Some(p) => Context::new().with_remote_span_context(p.clone()),
            None => Context::new(),
        };
        let mut builder = self.tracer.span_builder(name).with_kind(SpanKind::Server);
        if let Front::Mcp(McpFront { link: Some(l), .. }) = front {
            builder = builder.with_links(vec![Link::with_context(l.clone())]);
        }
        let mut span = self.tracer.build_with_context(builder, &cx);
        if span.is_recording() {
            let mut a = Vec::with_capacity(10);
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            if let Some(t) = tool {
                a.push(KeyValue::new("gen_ai.tool.name", t.to_string()));
            }
            match front {
                Front::Mcp(m) => {
                    a.push(KeyValue::new("mcp.method.name", "tools/call"));
                    if let Some(id) = &m.request_id {
                        a.push(KeyValue::new("jsonrpc.request.id", id.clone()));
                    }
                    if let Some(s) = &m.session {
                        a.push(KeyValue::new("mcp.session.id", s.clone()));
                    }
                    if let Some(v) = &m.protocol {
                        a.push(KeyValue::new("mcp.protocol.version", v.clone()));
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
            front: match front {
                Front::Local => 0,
                Front::Rest => 1,
                Front::Mcp(_) => 2,
            },
        }
    }

    /// Exports what is queued and stops the export thread (blocking, for
    /// at most the exporter's timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// Where spans go, for the start's log line: the endpoint variable's
/// URL without credentials or query, or the default.
pub fn endpoint_shown() -> String {
    let url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(e) => e,
        None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => format!("{}/v1/traces", e.trim_end_matches('/')),
            None => "http://localhost:4318/v1/traces".into(),
        },
    };
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

/// `OTEL_TRACES_SAMPLER` checked (the SDK reads it itself when set);
/// unset, the default this server picks. `var` reads the environment.
fn sampler_from(
    var: &dyn Fn(&str) -> Option<String>,
    sample_every: u64,
) -> Result<Option<Sampler>, OtelError> {
    let Some(name) = var("OTEL_TRACES_SAMPLER") else {
        let root = if sample_every == 0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(1.0 / sample_every as f64)
        };
        return Ok(Some(Sampler::ParentBased(Box::new(root))));
    };
    let name = name.trim().to_string();
    if !SAMPLERS.contains(&name.as_str()) {
        return Err(OtelError::Env {
            var: "OTEL_TRACES_SAMPLER",
            value: name,
            accepted: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
        });
    }
    if name.ends_with("traceidratio") {
        let arg = var("OTEL_TRACES_SAMPLER_ARG");
        let ok = arg
            .as_deref()
            .and_then(|a| a.trim().parse::<f64>().ok())
            .is_some_and(|r| (0.0..=1.0).contains(&r));
        if !ok {
            return Err(OtelError::Env {
                var: "OTEL_TRACES_SAMPLER_ARG",
                value: arg.unwrap_or_default(),
                accepted: "a ratio in 0..=1 (the traceidratio samplers need it)",
            });
        }
    }
    Ok(None)
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
    /// 0 local, 1 REST, 2 MCP.
    front: u8,
}

impl CallSpan {
    /// The span's context (valid, sampled or not).
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
        if let Some(p) = phases {
            self.span
                .add_event_with_timestamp("queued", p.queued, vec![]);
            self.span.add_event_with_timestamp(
                "running",
                p.running,
                vec![KeyValue::new("toolplane.worker", i64::from(p.worker))],
            );
            self.span.add_event_with_timestamp(
                "answered",
                p.answered,
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
                self.span.set_status(Status::error(e.to_string()));
            }
        }
        self.span.end();
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
        let by_engine = sampler_from(&env(&[]), 100).unwrap().unwrap();
        assert_eq!(
            format!("{by_engine:?}"),
            format!(
                "{:?}",
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.01)))
            )
        );
        let off = sampler_from(&env(&[]), 0).unwrap().unwrap();
        assert!(format!("{off:?}").contains("AlwaysOff"), "{off:?}");
        // Set and right: the SDK reads it.
        for ok in [
            &[("OTEL_TRACES_SAMPLER", "always_on")][..],
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ],
        ] {
            assert!(sampler_from(&env(ok), 100).unwrap().is_none(), "{ok:?}");
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
