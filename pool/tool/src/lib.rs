//! What every kind of tool is built from, below the runtimes that run
//! them and the registry that unites them:
//!
//! - [`checks`]: a call's input against the tool's `input_schema` before
//!   anything runs, its output against `output_schema`;
//! - [`files`]: reading files a tools directory names as untrusted input
//!   (only a regular file, within a size limit and a deadline);
//! - [`quota`]: the data directory's size limit and a call's write quota;
//! - [`progress`]: a call's progress reports, from the tool to its caller;
//! - [`meta`]: what travels with a call besides its input (progress, trace);
//! - [`Annotations`]: what a client may assume of a tool.

#![deny(unsafe_code)]

pub mod checks;
pub mod files;
pub mod meta;
pub mod names;
pub mod progress;
pub mod quota;
pub mod secret;

pub use checks::{Checks, SchemaError};
pub use meta::{CallMeta, TraceContext};

use serde::Deserialize;

/// Hints for clients about a tool's behaviour (MCP's tool annotations):
/// `[annotations]` in a manifest. Unset hints are not served, and a client
/// then assumes the specification's defaults (not read-only, destructive,
/// not idempotent, open world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    /// The tool does not change its environment.
    pub read_only: Option<bool>,
    /// It may destroy or overwrite (meaningful when not read-only).
    pub destructive: Option<bool>,
    /// Calling it again with the same input has no further effect.
    pub idempotent: Option<bool>,
    /// It reaches beyond a closed world (the network, other systems).
    pub open_world: Option<bool>,
}

/// How a kind of tool describes a manifest's runtime keys, for people
/// (`toolplane tools list`, `loadgen list`) and as JSON (`tools list
/// --json`): each kind writes its own, and no caller matches on the kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The kind in a few words (`wasi, fresh`, `process, mcp`).
    pub kind: String,
    /// One line: how it runs, its limits, what it may reach.
    pub text: String,
    /// The same as JSON fields (`runtime`, `mode`, `limits`, …).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// How every tool of this kind runs, in one sentence for clients (the
    /// MCP `instructions` carry one per kind served).
    pub runs: &'static str,
}

/// Where tools load: what the registry hands every kind of tool when it
/// loads one, the places and budgets the kinds share, set once for the
/// registry (not any one runtime's settings).
#[derive(Debug, Clone)]
pub struct Site {
    /// The directory `{data}` in manifests refers to.
    pub data_dir: Option<std::path::PathBuf>,
    /// The data directory's size limit, spent by the tools that write
    /// there; `None` for no limit (or no data directory).
    pub quota: Option<std::sync::Arc<quota::DataQuota>>,
    /// Directories a process tool's processes may not see (the
    /// compiled-module cache: one that could write there could change code
    /// the server runs). WASI tools see only what their grants name.
    pub hidden: Vec<std::path::PathBuf>,
    /// Calls one tool may hold at once, running and waiting for a turn
    /// together (a process tool's `pool.queue` is cut to fit).
    pub backlog: usize,
}

/// The placeholder a grant's `host` may use for the registry's data
/// directory.
pub const DATA_PLACEHOLDER: &str = "{data}";

/// The keys every manifest has, as written: each kind of tool reads them
/// with its own keys (a manifest's unknown keys are errors), and the
/// registry checks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `input_schema`.
    pub input_schema: Option<serde_json::Value>,
    /// `title`.
    pub title: Option<String>,
    /// `output_schema`.
    pub output_schema: Option<serde_json::Value>,
    /// `[annotations]`.
    pub annotations: Annotations,
}

/// Longest tool name accepted.
pub const MAX_NAME: usize = 64;

/// Whether `name` is a valid tool name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with('.')
}

/// The keys every kind of tool has, checked.
#[derive(Debug)]
pub struct Common {
    /// `name`, valid.
    pub name: String,
    /// `input_schema`, `{"type": "object"}` when unset.
    pub input_schema: serde_json::Value,
    /// `output_schema`, an object schema.
    pub output_schema: Option<serde_json::Value>,
}

impl Common {
    /// Checks the keys every manifest has; the message names the key.
    ///
    /// # Errors
    ///
    /// A name that is not valid, a schema that is not, an empty title.
    pub fn check(
        name: String,
        input_schema: Option<serde_json::Value>,
        output_schema: Option<serde_json::Value>,
        title: Option<&str>,
    ) -> Result<Common, String> {
        if !valid_name(&name) {
            return Err(format!(
                "name = {name:?} is not a valid tool name: use 1..={MAX_NAME} of A-Z a-z 0-9 _ . -, not starting with a dot"
            ));
        }
        let input_schema = input_schema.unwrap_or_else(|| serde_json::json!({ "type": "object" }));
        if let Err(e) = jsonschema::validator_for(&input_schema) {
            return Err(format!("input_schema is not a valid JSON Schema: {e}"));
        }
        if let Some(schema) = &output_schema {
            // MCP: an output schema describes structured content, a JSON
            // object.
            if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
                return Err(
                    "output_schema must be an object schema (type = \"object\"): MCP serves structured output as a JSON object".into(),
                );
            }
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(format!("output_schema is not a valid JSON Schema: {e}"));
            }
        }
        if title.is_some_and(str::is_empty) {
            return Err("title is empty: leave it out or give one".into());
        }
        Ok(Common {
            name,
            input_schema,
            output_schema,
        })
    }
}
