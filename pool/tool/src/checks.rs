//! The checks every kind of tool shares: a call's input against the
//! manifest's `input_schema` before anything runs, and its output against
//! `output_schema` when the manifest declares one.

/// A schema in a manifest is not a valid JSON Schema.
#[derive(Debug, thiserror::Error)]
#[error("{key} is not a valid JSON Schema: {source}")]
pub struct SchemaError {
    /// `input_schema` or `output_schema`.
    pub key: &'static str,
    /// jsonschema's reason.
    #[source]
    pub source: Box<jsonschema::ValidationError<'static>>,
}

/// How a call's input is checked before any instance is created.
enum InputCheck {
    /// Any JSON object (the schema says only `type: object`).
    Object,
    /// A full JSON Schema.
    Schema(Box<jsonschema::Validator>),
}

/// A tool's input and output checks, built once at load.
pub struct Checks {
    input: InputCheck,
    /// The output schema's validator, when the manifest declares one.
    output: Option<Box<jsonschema::Validator>>,
    /// The output schema asks for a JSON object and nothing more (besides
    /// words for people): a passing output is found without building it
    /// as a value.
    output_object: bool,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks")
            .field("output", &self.output.is_some())
            .finish_non_exhaustive()
    }
}

impl Checks {
    /// The checks of a tool's schemas.
    ///
    /// # Errors
    ///
    /// A schema is not a valid JSON Schema.
    pub fn new(
        input_schema: &serde_json::Value,
        output_schema: Option<&serde_json::Value>,
    ) -> Result<Checks, SchemaError> {
        let input = input_check(input_schema)?;
        let output = match output_schema {
            Some(schema) => Some(Box::new(jsonschema::validator_for(schema).map_err(
                |e| SchemaError {
                    key: "output_schema",
                    source: Box::new(e),
                },
            )?)),
            None => None,
        };
        let output_object = output_schema.is_some_and(only_object);
        Ok(Checks {
            input,
            output,
            output_object,
        })
    }

    /// Whether the tool declares an `output_schema`.
    pub fn declares_output(&self) -> bool {
        self.output.is_some()
    }

    /// Checks a call's input against the tool's schema.
    ///
    /// # Errors
    ///
    /// The input is not JSON, or does not match the schema; the message
    /// names the tool and the offending field.
    pub fn input(&self, name: &str, input: &[u8]) -> Result<(), String> {
        // Before any parse: serde_json skips strings it is not asked to
        // keep without checking their UTF-8, and nests as deep as the
        // input does when it ignores a value.
        if let Err(e) = std::str::from_utf8(input) {
            return Err(format!(
                "tool {name}: input is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ));
        }
        // An input of at most MAX_DEPTH bytes cannot open more levels.
        if input.len() > MAX_DEPTH
            && let Some(at) = too_deep(input, MAX_DEPTH)
        {
            return Err(format!(
                "tool {name}: input nests deeper than {MAX_DEPTH} levels (at byte {at})"
            ));
        }
        match &self.input {
            InputCheck::Object => {
                // Every value read as the full check reads it (`Valid`), none
                // kept: serde's `IgnoredAny` would pass 1e400 and lone
                // surrogates, which a schema-checked tool is never given.
                let first = input.iter().find(|b| !b.is_ascii_whitespace());
                if let Err(e) = serde_json::from_slice::<Valid>(input) {
                    return Err(format!("tool {name}: input is not valid JSON: {e}"));
                }
                if first != Some(&b'{') {
                    return Err(format!("tool {name}: input must be a JSON object"));
                }
                Ok(())
            }
            InputCheck::Schema(v) => {
                let value: serde_json::Value = serde_json::from_slice(input)
                    .map_err(|e| format!("tool {name}: input is not valid JSON: {e}"))?;
                schema_errors(
                    v,
                    &value,
                    format!("tool {name}: input does not match its schema:"),
                )
            }
        }
    }

    /// Checks a call's output against the tool's `output_schema`, when it
    /// declares one.
    ///
    /// # Errors
    ///
    /// The output is not JSON or does not match; the message names the
    /// tool and the field.
    pub fn output(&self, name: &str, output: &[u8]) -> Result<(), String> {
        let Some(v) = &self.output else {
            return Ok(());
        };
        // The common case, an object schema with no constraint, without
        // building the value; a failure goes the full way for its message.
        if self.output_object && is_object(output) {
            return Ok(());
        }
        let value: serde_json::Value = serde_json::from_slice(output).map_err(|e| {
            format!("tool {name}: output is not JSON, and the tool declares an output_schema: {e}")
        })?;
        schema_errors(
            v,
            &value,
            format!("tool {name}: output does not match its output_schema:"),
        )
    }
}

/// Whether `schema` asks for a JSON object and nothing more: `type =
/// "object"` and only keywords that constrain nothing.
fn only_object(schema: &serde_json::Value) -> bool {
    schema.as_object().is_some_and(|o| {
        o.get("type").and_then(|t| t.as_str()) == Some("object")
            && o.keys().all(|k| {
                matches!(
                    k.as_str(),
                    "type" | "description" | "title" | "$comment" | "$schema"
                )
            })
    })
}

/// Whether `json` is one valid JSON object: every value visited as the
/// full check reads it (strings checked, numbers in range, nesting within
/// serde_json's limit), none kept.
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<Valid>(json).is_ok()
}

/// Any JSON value, read in full and not kept (serde's `IgnoredAny` skips
/// strings and numbers without checking them).
struct Valid;

impl<'de> serde::Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Valid, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> serde::de::Visitor<'de> for ValidVisitor {
    type Value = Valid;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// How deep a call's input may nest arrays and objects (serde_json's own
/// limit when it builds a value).
pub const MAX_DEPTH: usize = 128;

/// The offset at which `json` opens its `max + 1`-th level of nesting, if
/// it does. Brackets inside strings do not count.
fn too_deep(json: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The first three errors of `value` against `v`, each with its path.
fn schema_errors(
    v: &jsonschema::Validator,
    value: &serde_json::Value,
    mut msg: String,
) -> Result<(), String> {
    let mut errors = v.iter_errors(value).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    for (i, e) in errors.take(3).enumerate() {
        let at = e.instance_path().to_string();
        let at = if at.is_empty() {
            "(top level)".to_string()
        } else {
            at
        };
        msg.push_str(if i == 0 { " " } else { "; " });
        msg.push_str(&format!("at {at}: {e}"));
    }
    Err(msg)
}

fn input_check(schema: &serde_json::Value) -> Result<InputCheck, SchemaError> {
    if *schema == serde_json::json!({ "type": "object" }) {
        return Ok(InputCheck::Object);
    }
    jsonschema::validator_for(schema)
        .map(|v| InputCheck::Schema(Box::new(v)))
        .map_err(|e| SchemaError {
            key: "input_schema",
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_output_schema_takes_the_short_way_with_the_same_answers() {
        for schema in [
            json!({"type": "object"}),
            json!({"type": "object", "description": "d"}),
        ] {
            assert!(only_object(&schema));
            let c = Checks::new(&json!({"type": "object"}), Some(&schema)).unwrap();
            assert_eq!(c.output("t", br#" {"a": [1, {"b": 2}]}"#), Ok(()));
            let e = c.output("t", b"[1]").unwrap_err();
            assert!(
                e.contains("does not match its output_schema") && e.contains("object"),
                "{e}"
            );
            let e = c.output("t", b"{\"a\":").unwrap_err();
            assert!(e.contains("output is not JSON"), "{e}");
        }
        // What a value is refused for is refused on the short way too.
        let c = Checks::new(&json!({"type": "object"}), Some(&json!({"type": "object"}))).unwrap();
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        for bad in [
            &br#"{"a": 1e400}"#[..],
            br#"{"a": "\ud800"}"#,
            b"{\"a\": \"\xff\"}",
            deep.as_bytes(),
        ] {
            assert!(
                c.output("t", bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let strict = json!({"type": "object", "required": ["y"]});
        assert!(!only_object(&strict));
        let c = Checks::new(&json!({"type": "object"}), Some(&strict)).unwrap();
        assert!(c.output("t", br#"{"x":1}"#).unwrap_err().contains("\"y\""));
        assert_eq!(c.output("t", br#"{"y":1}"#), Ok(()));
    }
}

#[cfg(test)]
mod input_tests {
    use super::*;
    use serde_json::json;

    /// The short way for a `type: object` input schema refuses what the
    /// full check refuses: a number out of range, a lone surrogate.
    #[test]
    fn an_object_input_schema_takes_the_short_way_with_the_same_answers() {
        let short = Checks::new(&json!({"type": "object"}), None).unwrap();
        assert!(matches!(short.input, InputCheck::Object));
        let full = Checks::new(&json!({"type": "object", "properties": {"a": {}}}), None).unwrap();
        assert!(matches!(full.input, InputCheck::Schema(_)));
        for good in [&br#" {"a": [1, {"b": "\ud83d\ude00"}]}"#[..], b"{}"] {
            assert_eq!(short.input("t", good), Ok(()));
            assert_eq!(full.input("t", good), Ok(()));
        }
        for bad in [
            &br#"{"a": 1e400}"#[..],
            br#"{"a": "\ud800"}"#,
            br#"{"a": "\udc00x"}"#,
            b"[1]",
            b"{\"a\":",
        ] {
            let (s, f) = (short.input("t", bad), full.input("t", bad));
            assert!(
                s.is_err() && f.is_err(),
                "{:?}: short {s:?}, full {f:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
