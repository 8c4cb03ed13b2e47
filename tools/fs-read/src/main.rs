//! `fs.read`: reads a file (or a byte range of it) from the data directory.

use std::io::{Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};
use toolplane_sdk::{Encoding, ToolError, fs, json_input, json_output};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    path: String,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
    /// `utf8` (the default) returns text when the bytes are valid UTF-8 and
    /// base64 otherwise; `base64` always returns base64.
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Serialize)]
struct Output {
    content: String,
    encoding: Encoding,
    bytes: usize,
    eof: bool,
}

fn run(input: &[u8]) -> Result<Vec<u8>, ToolError> {
    let input: Input = json_input(input)?;
    let path = fs::resolve(&input.path)?;
    fs::require_regular(&path, &input.path)?;
    let mut file = std::fs::File::open(&path).map_err(|e| fs::io_error("open", &input.path, &e))?;
    let size = file
        .metadata()
        .map_err(|e| fs::io_error("stat", &input.path, &e))?
        .len();
    if input.offset > 0 {
        file.seek(SeekFrom::Start(input.offset))
            .map_err(|e| fs::io_error("seek in", &input.path, &e))?;
    }
    let rest = size.saturating_sub(input.offset);
    let want = input.length.map_or(rest, |l| l.min(rest));
    let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want)
        .read_to_end(&mut bytes)
        .map_err(|e| fs::io_error("read", &input.path, &e))?;
    let n = bytes.len();
    let eof = input.offset.saturating_add(n as u64) >= size;
    let (content, encoding) = Encoding::encode(bytes, input.encoding);
    json_output(&Output {
        content,
        encoding,
        bytes: n,
        eof,
    })
}

toolplane_sdk::export!(run);
