//! `echo` for hyper-mcp: answers a `tools/call` with its arguments, as
//! JSON text, the way toolplane's built-in `echo` returns its input.

use extism_pdk::{FnResult, Json, plugin_fn};
use serde_json::{Value, json};

/// The tool list (hyper-mcp's plugin interface v1).
#[plugin_fn]
pub fn describe(_: ()) -> FnResult<Json<Value>> {
    Ok(Json(json!({
        "tools": [{
            "name": "echo",
            "description": "Returns its input unchanged.",
            "inputSchema": {"type": "object"}
        }]
    })))
}

/// One call: `{"params": CallToolRequestParams}` in, a `CallToolResult` out.
#[plugin_fn]
pub fn call(Json(request): Json<Value>) -> FnResult<Json<Value>> {
    let arguments = &request["params"]["arguments"];
    Ok(Json(json!({
        "content": [{"type": "text", "text": arguments.to_string()}]
    })))
}
