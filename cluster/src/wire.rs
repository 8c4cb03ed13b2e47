//! A call's outcome as it travels and is stored: one JSON line (call,
//! node, result, message), then the output's bytes as the tool wrote them.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// One call's outcome, from the node that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The call's id.
    pub call: String,
    /// The node that ran it (or answered for it).
    pub node: String,
    /// The result, as the server counts it: `ok`, `error`, `timeout`, ...
    pub result: String,
    /// Why it failed, in words (empty when `ok`).
    pub message: String,
    /// The tool's output (empty unless `ok`).
    pub output: Bytes,
}

#[derive(Serialize, Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    call: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    result: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "str::is_empty")]
    message: Cow<'a, str>,
}

impl Outcome {
    /// A failed call's outcome.
    pub fn failed(call: &str, node: &str, result: &str, message: impl Into<String>) -> Outcome {
        Outcome {
            call: call.into(),
            node: node.into(),
            result: result.into(),
            message: message.into(),
            output: Bytes::new(),
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> Bytes {
        let head = serde_json::to_vec(&Head {
            call: Cow::Borrowed(&self.call),
            node: Cow::Borrowed(&self.node),
            result: Cow::Borrowed(&self.result),
            message: Cow::Borrowed(&self.message),
        })
        .unwrap_or_default();
        let mut b = BytesMut::with_capacity(head.len() + 1 + self.output.len());
        b.extend_from_slice(&head);
        b.extend_from_slice(b"\n");
        b.extend_from_slice(&self.output);
        b.freeze()
    }

    /// Read back.
    ///
    /// # Errors
    ///
    /// What is wrong with the bytes.
    pub fn decode(bytes: &Bytes) -> Result<Outcome, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let head: Head<'_> =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("header: {e}"))?;
        Ok(Outcome {
            call: head.call.into_owned(),
            node: head.node.into_owned(),
            result: head.result.into_owned(),
            message: head.message.into_owned(),
            output: bytes.slice(nl + 1..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_reads_back_as_written() {
        let o = Outcome {
            call: "00ff".into(),
            node: "n1".into(),
            result: "ok".into(),
            message: String::new(),
            output: Bytes::from_static(b"{\"a\":\"x\ny\"}\n"),
        };
        assert_eq!(Outcome::decode(&o.encode()).unwrap(), o);
        let f = Outcome::failed("1", "n2", "error", "tool x: \"quoted\"\nline");
        assert_eq!(Outcome::decode(&f.encode()).unwrap(), f);
        assert!(Outcome::decode(&Bytes::from_static(b"{}")).is_err());
        assert!(Outcome::decode(&Bytes::from_static(b"{\"call\":1}\n")).is_err());
    }
}
