//! Checking a client's JSON-RPC message before rmcp sees it, so that every
//! malformed message gets the JSON-RPC error the specification names,
//! over HTTP and stdio alike:
//!
//! | what | code |
//! |---|---|
//! | not JSON, not UTF-8, nested past serde_json's depth limit (128) | -32700 parse error |
//! | a batch (an array: MCP 2025-06-18 removed batching), not an object, `jsonrpc` not `"2.0"`, an `id` that is neither a string nor an integer, no `method` and no `result`/`error` | -32600 invalid request |
//! | `params` not an object; `tools/call` without a string `name`, or with `arguments` that is not an object; `initialize` without its fields; any known method whose params rmcp cannot read | -32602 invalid params, naming the field |
//!
//! Why here: rmcp 3.11 answers a body it cannot deserialize with a plain
//! text 415 over HTTP, drops such a line over stdio without a word, and
//! reads a `tools/call` whose params do not fit as a custom request, which
//! it then answers -32601 "method not found". Its message model falls back
//! to a custom request for any shape it does not know, so the check of a
//! known method's params has to be made before it.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::{Map, Value};

/// JSON-RPC's parse error.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC's invalid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC's invalid params.
pub const INVALID_PARAMS: i32 = -32602;

/// The methods a client may send that rmcp's model reads into typed
/// requests; one that arrives as a custom request had params that did
/// not fit.
const KNOWN: [&str; 22] = [
    "initialize",
    "ping",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "resources/directory/read",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
    "notifications/cancelled",
];

/// Why a message was refused: the JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The request's id, when it could be read.
    pub id: Option<Value>,
    /// The JSON-RPC error code.
    pub code: i32,
    /// What is wrong, naming the member.
    pub message: String,
    /// The message was a notification (a `method` and no `id`): JSON-RPC
    /// sends no reply to those over a stream (HTTP still answers the POST).
    pub notification: bool,
}

impl Rejection {
    fn new(code: i32, message: impl Into<String>) -> Rejection {
        Rejection {
            id: None,
            code,
            message: message.into(),
            notification: false,
        }
    }

    /// The JSON-RPC error response. The id is left out when it could not
    /// be read (MCP 2026-07-28, "Error Responses").
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("jsonrpc".into(), "2.0".into());
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone());
        }
        m.insert(
            "error".into(),
            serde_json::json!({ "code": self.code, "message": self.message }),
        );
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }
}

/// Checks one message and reads it into rmcp's model.
///
/// # Errors
///
/// The [`Rejection`] to answer with.
pub fn check(body: &[u8]) -> Result<ClientJsonRpcMessage, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(PARSE_ERROR, format!("Parse error: {e}")))?;
    let obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(Rejection::new(
                INVALID_REQUEST,
                "Invalid request: batches (a JSON array) are not supported; send one message per request",
            ));
        }
        _ => {
            return Err(Rejection::new(
                INVALID_REQUEST,
                "Invalid request: a JSON-RPC message is a JSON object",
            ));
        }
    };
    let mut rejection = Rejection::new(INVALID_REQUEST, "");
    match obj.get("id") {
        None => {}
        Some(id @ Value::String(_)) => rejection.id = Some(id.clone()),
        Some(id @ Value::Number(n)) if n.is_i64() => rejection.id = Some(id.clone()),
        Some(_) => {
            rejection.message = "Invalid request: id must be a string or an integer".into();
            return Err(rejection);
        }
    }
    let fail = |mut r: Rejection, code: i32, message: String| {
        r.code = code;
        r.message = message;
        Err(r)
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return fail(
            rejection,
            INVALID_REQUEST,
            "Invalid request: jsonrpc must be \"2.0\"".into(),
        );
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => Some(m.as_str()),
        Some(_) => {
            return fail(
                rejection,
                INVALID_REQUEST,
                "Invalid request: method must be a string".into(),
            );
        }
        None => None,
    };
    match method {
        None => {
            let response = obj.contains_key("result") || obj.contains_key("error");
            if !response || rejection.id.is_none() && obj.contains_key("result") {
                return fail(
                    rejection,
                    INVALID_REQUEST,
                    "Invalid request: a message needs a method (a request or notification) or an id with result or error (a response)".into(),
                );
            }
        }
        Some(method) => {
            rejection.notification = rejection.id.is_none();
            if let Err(m) = check_params(method, obj.get("params")) {
                return fail(rejection, INVALID_PARAMS, m);
            }
        }
    }
    let method = method.map(str::to_owned);
    match serde_json::from_value::<ClientJsonRpcMessage>(Value::Object(obj)) {
        Ok(JsonRpcMessage::Request(r)) if matches!(&r.request, ClientRequest::CustomRequest(c) if KNOWN.contains(&c.method.as_str())) =>
        {
            let m = method.unwrap_or_default();
            fail(
                rejection,
                INVALID_PARAMS,
                format!(
                    "Invalid params: the params of {m} do not have the shape the specification gives"
                ),
            )
        }
        Ok(message) => Ok(message),
        Err(e) => {
            let code = if method.is_some() {
                INVALID_PARAMS
            } else {
                INVALID_REQUEST
            };
            fail(rejection, code, format!("Invalid message: {e}"))
        }
    }
}

/// Checks the params of the methods whose fields a caller most often gets
/// wrong, naming the field.
fn check_params(method: &str, params: Option<&Value>) -> Result<(), String> {
    let params = match params {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err("Invalid params: params must be an object".into()),
    };
    if let Some(meta) = params.and_then(|p| p.get("_meta"))
        && !meta.is_object()
    {
        return Err("Invalid params: params._meta must be an object".into());
    }
    match method {
        "tools/call" => {
            let p = params.ok_or("Invalid params: tools/call needs params with a name")?;
            match p.get("name") {
                Some(Value::String(n)) if !n.is_empty() => {}
                Some(Value::String(_)) => {
                    return Err("Invalid params: params.name must not be empty".into());
                }
                Some(_) => return Err("Invalid params: params.name must be a string".into()),
                None => return Err("Invalid params: params.name is missing".into()),
            }
            match p.get("arguments") {
                None | Some(Value::Null | Value::Object(_)) => Ok(()),
                Some(_) => Err("Invalid params: params.arguments must be an object".into()),
            }
        }
        "initialize" => {
            let p = params.ok_or("Invalid params: initialize needs params")?;
            if !p.get("protocolVersion").is_some_and(Value::is_string) {
                return Err("Invalid params: params.protocolVersion must be a string".into());
            }
            if !p.get("capabilities").is_some_and(Value::is_object) {
                return Err("Invalid params: params.capabilities must be an object".into());
            }
            let info = p
                .get("clientInfo")
                .and_then(Value::as_object)
                .ok_or("Invalid params: params.clientInfo must be an object")?;
            for field in ["name", "version"] {
                if !info.get(field).is_some_and(Value::is_string) {
                    return Err(format!(
                        "Invalid params: params.clientInfo.{field} must be a string"
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> (i32, Option<Value>, String) {
        let r = check(body.as_bytes()).unwrap_err();
        (r.code, r.id, r.message)
    }

    #[test]
    fn well_formed_messages_pass() {
        for ok in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
        ] {
            assert!(
                check(ok.as_bytes()).is_ok(),
                "{ok}: {:?}",
                check(ok.as_bytes())
            );
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        for bad in ["", "{", "{\"jsonrpc\":", "\u{0}", "nul"] {
            assert_eq!(code(bad).0, PARSE_ERROR, "{bad:?}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(code(&deep).0, PARSE_ERROR);
        assert_eq!(check(b"{\"a\":\"\xff\"}").unwrap_err().code, PARSE_ERROR);
    }

    #[test]
    fn a_wrong_envelope_is_an_invalid_request() {
        for (bad, id) in [
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, None),
            (r#""ping""#, None),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                Some(serde_json::json!(1)),
            ),
            (r#"{"id":1,"method":"ping"}"#, Some(serde_json::json!(1))),
            (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                Some(serde_json::json!(1)),
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, Some(serde_json::json!(1))),
            (r#"{}"#, None),
        ] {
            let (c, got_id, m) = code(bad);
            assert_eq!((c, got_id), (INVALID_REQUEST, id), "{bad}: {m}");
        }
    }

    #[test]
    fn bad_tool_call_params_name_the_field() {
        for (bad, field) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
                "params.arguments",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                "params.name",
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, "name"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
                "params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":1}}"#,
                "params._meta",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}"#,
                "params.protocolVersion",
            ),
        ] {
            let (c, id, m) = code(bad);
            assert_eq!(
                (c, id),
                (INVALID_PARAMS, Some(serde_json::json!(1))),
                "{bad}"
            );
            assert!(m.contains(field), "{bad}: {m} does not name {field}");
        }
    }

    #[test]
    fn a_known_method_with_params_rmcp_cannot_read_is_invalid_params() {
        let (c, _, m) =
            code(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":5}}"#);
        assert_eq!(c, INVALID_PARAMS, "{m}");
        assert!(m.contains("resources/read"), "{m}");
    }

    #[test]
    fn an_error_leaves_out_an_id_it_could_not_read() {
        let r = check(b"{").unwrap_err();
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        assert!(v.get("id").is_none());
        let r = check(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call"}"#).unwrap_err();
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["id"], "a");
    }
}
