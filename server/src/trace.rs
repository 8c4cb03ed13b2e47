//! W3C Trace Context from a caller: `traceparent` and `tracestate` from an
//! HTTP request's headers or an MCP request's `_meta` (where the MCP
//! specification places them), read by the OpenTelemetry SDK's
//! propagator. A call's span joins the caller's trace through it, its
//! audit record names the trace, and an upstream MCP server gets it on.
//! An invalid `traceparent` is ignored, as the specification asks.
//! <https://www.w3.org/TR/trace-context/>

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceState};
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

/// The caller's context from a `traceparent` and its `tracestate` (as a
/// node of the cluster passes them on in a call's headers).
pub fn from_pair(traceparent: &str, tracestate: Option<&str>) -> Option<Parent> {
    struct Pair<'a>(&'a str, Option<&'a str>);
    impl Extractor for Pair<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    extract(&Pair(traceparent, tracestate))
}

fn extract(carrier: &dyn Extractor) -> Option<Parent> {
    if !well_formed(carrier.get("traceparent")?) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(carrier);
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    // A `tracestate` is passed on to upstreams and exported: one that is
    // not the specification's (printable ASCII, 512 bytes at most here) is
    // dropped, the `traceparent` kept.
    let state = sc.trace_state().header();
    if state.len() > MAX_TRACESTATE || !state.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Some(SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            true,
            TraceState::default(),
        ));
    }
    Some(sc)
}

/// The longest `tracestate` passed on (the specification asks that 512
/// bytes be kept, and lets longer lists be cut).
const MAX_TRACESTATE: usize = 512;

/// `VERSION-TRACEID-PARENTID-FLAGS` in exactly 2, 32, 16 and 2 lower-case
/// hex digits (a later version may add fields after a `-`): the SDK's
/// propagator reads shorter fields as numbers and would take `00-1-1-1`.
fn well_formed(v: &str) -> bool {
    let b = v.trim().as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    b.len() >= 55
        && (b.len() == 55 || b[55] == b'-')
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(0..2)
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && !(b[..2] == *b"00" && b.len() != 55)
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
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-1-1-1",
            "0-+4bf92f3577b34da6a3ce929d0e0e4736-+1-1",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
        ] {
            assert_eq!(meta(bad, None), None, "{bad:?}");
        }
        // A tracestate that is not one is dropped, the traceparent kept.
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let long: Vec<String> = (0..5)
            .map(|i| format!("k{i}={}", "x".repeat(200)))
            .collect();
        for bad in ["a=b\r\nx-evil: 1", &long.join(","), "a=\u{e9}"] {
            let t = meta(parent, Some(bad)).unwrap();
            assert_eq!(context_of(&t).tracestate, None, "{bad:?}");
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
