//! Write a toolplane tool as one function and get both of its entry points.
//!
//! ```ignore
//! fn run(input: &[u8]) -> Result<Vec<u8>, toolplane_sdk::ToolError> {
//!     Ok(input.to_vec())
//! }
//! toolplane_sdk::export!(run);
//! ```
//!
//! [`export!`] generates:
//!
//! - `main`, so the module is a WASI command: JSON on stdin, the result on
//!   stdout, exit code 0; on error the message on stderr and exit code 1.
//!   It runs unchanged under `wasmtime run`.
//! - `toolplane_alloc(len: i32) -> i32` and `toolplane_call(ptr: i32, len: i32) -> i64`,
//!   the fast entry the host calls in memory without stdin or stdout. See
//!   `tools/README.md` for the ABI.

use std::cell::RefCell;
use std::fmt;
use std::io::{Read, Write};

pub mod fs;

/// A tool's failure: its message reaches the caller as the call's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    message: String,
}

impl ToolError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ToolError {
        ToolError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

/// Parses the input as JSON into `T`, with an error that says what is wrong.
pub fn json_input<T: serde::de::DeserializeOwned>(input: &[u8]) -> Result<T, ToolError> {
    serde_json::from_slice(input).map_err(|e| ToolError::new(format!("invalid input: {e}")))
}

/// Serializes `value` as the tool's JSON output.
pub fn json_output<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ToolError> {
    serde_json::to_vec(value).map_err(|e| ToolError::new(format!("cannot encode output: {e}")))
}

/// Content encodings tools accept and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Utf8,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    /// Decodes `content` written in this encoding.
    pub fn decode(self, content: &str) -> Result<Vec<u8>, ToolError> {
        use base64::Engine as _;
        match self {
            Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|e| ToolError::new(format!("content is not valid base64: {e}"))),
        }
    }

    /// Encodes `bytes` as text: UTF-8 when they are valid UTF-8 and
    /// `prefer` allows it, base64 otherwise.
    pub fn encode(bytes: Vec<u8>, prefer: Encoding) -> (String, Encoding) {
        use base64::Engine as _;
        if prefer == Encoding::Utf8 {
            match String::from_utf8(bytes) {
                Ok(text) => return (text, Encoding::Utf8),
                Err(e) => {
                    let bytes = e.into_bytes();
                    return (
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                        Encoding::Base64,
                    );
                }
            }
        }
        (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        )
    }
}

/// The tool function's type.
pub type Run = fn(&[u8]) -> Result<Vec<u8>, ToolError>;

#[doc(hidden)]
pub fn __command_main(run: Run) -> ! {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        fail(&format!("cannot read stdin: {e}"));
    }
    match run(&input) {
        Ok(output) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(&output).and_then(|()| out.flush()) {
                fail(&format!("cannot write stdout: {e}"));
            }
            std::process::exit(0)
        }
        Err(e) => fail(e.message()),
    }
}

fn fail(message: &str) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(message.as_bytes());
    let _ = err.flush();
    std::process::exit(1)
}

thread_local! {
    // The input buffer the host writes into, and the last call's output.
    // A module instance is single-threaded: these are its only state
    // between calls.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Set in a `toolplane_call` result when the output is an error message.
pub const ERROR_BIT: u64 = 1 << 63;

#[doc(hidden)]
pub fn __alloc(len: u32) -> u32 {
    INPUT.with_borrow_mut(|input| {
        input.clear();
        input.resize(len as usize, 0);
        input.as_mut_ptr() as usize as u32
    })
}

#[doc(hidden)]
pub fn __call(run: Run, ptr: u32, len: u32) -> u64 {
    let result = INPUT.with_borrow(|input| {
        if ptr != input.as_ptr() as usize as u32 || len as usize != input.len() {
            return Err(ToolError::new(
                "toolplane_call: input was not written to the buffer toolplane_alloc returned",
            ));
        }
        run(input)
    });
    OUTPUT.with_borrow_mut(|out| {
        let error = match result {
            Ok(bytes) => {
                *out = bytes;
                0
            }
            Err(e) => {
                out.clear();
                out.extend_from_slice(e.message().as_bytes());
                ERROR_BIT
            }
        };
        // Output is capped below 2 GiB by the host; a larger one cannot be
        // described and is reported as an error instead.
        if out.len() >= 1 << 31 {
            out.clear();
            out.extend_from_slice(b"output larger than 2 GiB");
            return ERROR_BIT | (out.len() as u64) << 32 | out.as_ptr() as usize as u64;
        }
        error | (out.len() as u64) << 32 | out.as_ptr() as usize as u64
    })
}

/// Exports `run` as a toolplane tool: the WASI command's `main` and the
/// fast entry (`toolplane_alloc`, `toolplane_call`).
#[macro_export]
macro_rules! export {
    ($run:path) => {
        fn main() {
            $crate::__command_main($run)
        }

        /// Fast entry: returns a buffer of `len` bytes for the input.
        #[unsafe(no_mangle)]
        pub extern "C" fn toolplane_alloc(len: u32) -> u32 {
            $crate::__alloc(len)
        }

        /// Fast entry: runs the tool on the input written at `ptr`.
        #[unsafe(no_mangle)]
        pub extern "C" fn toolplane_call(ptr: u32, len: u32) -> u64 {
            $crate::__call($run, ptr, len)
        }
    };
}
