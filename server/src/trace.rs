//! W3C Trace Context from a caller: `traceparent` and `tracestate` from an
//! HTTP request's headers or an MCP request's `_meta` (where the MCP
//! specification places them), read by the OpenTelemetry SDK's
//! propagator. A call's span joins the caller's trace through it, its
//! audit record names the trace, and an upstream MCP server gets it on.
//! An invalid `traceparent` is ignored, as the specification asks.
//! <https://www.w3.org/TR/trace-context/>

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The caller's span: the remote parent of the call's span.
pub type Parent = SpanContext;

/// The caller's context from HTTP headers, if it sent a valid one.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<Parent> {
    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    extract(&Headers(headers))
}

/// The caller's context from an MCP request's `_meta`, if it sent a valid
/// one.
pub fn from_meta(meta: &serde_json::Map<String, serde_json::Value>) -> Option<Parent> {
    struct Meta<'a>(&'a serde_json::Map<String, serde_json::Value>);
    impl Extractor for Meta<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
    extract(&Meta(meta))
}

fn extract(carrier: &dyn Extractor) -> Option<Parent> {
    carrier.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// `traceparent` and `tracestate` naming `span` (the caller's, or the
/// call's own span), to pass on.
pub fn context_of(span: &SpanContext) -> toolplane_pool::TraceContext {
    let state = span.trace_state().header();
    toolplane_pool::TraceContext {
        traceparent: format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8() & 1
        ),
        tracestate: (!state.is_empty()).then_some(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(traceparent: &str, tracestate: Option<&str>) -> Option<Parent> {
        let mut m = serde_json::Map::new();
        m.insert("traceparent".into(), traceparent.into());
        if let Some(s) = tracestate {
            m.insert("tracestate".into(), s.into());
        }
        from_meta(&m)
    }

    #[test]
    fn a_traceparent_is_read_and_an_invalid_one_ignored() {
        let t = meta(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        )
        .unwrap();
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id().to_string(), "00f067aa0ba902b7");
        assert!(t.is_sampled() && t.is_remote());
        // Passed on as it came.
        let on = context_of(&t);
        assert_eq!(
            on.traceparent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            on.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        // A later version may carry more fields.
        assert!(
            meta(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                None
            )
            .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
        ] {
            assert_eq!(meta(bad, None), None, "{bad:?}");
        }
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let t = from_headers(&h).unwrap();
        assert!(!t.is_sampled());
    }
}
