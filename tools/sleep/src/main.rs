//! `sleep`: waits `ms` milliseconds on the WASI monotonic clock (a
//! `poll_oneoff` clock subscription), standing in for I/O wait in soak
//! profiles. The host parks the call; its worker runs others meanwhile.

use serde::{Deserialize, Serialize};
use toolplane_sdk::{ToolError, json_input, json_output};

/// Longest sleep a call may ask for.
const MAX_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    ms: u64,
}

#[derive(Serialize)]
struct Output {
    slept_ms: u64,
}

fn run(input: &[u8]) -> Result<Vec<u8>, ToolError> {
    let input: Input = json_input(input)?;
    if input.ms > MAX_MS {
        return Err(ToolError::new(format!(
            "ms = {} is out of range: 0..={MAX_MS}",
            input.ms
        )));
    }
    std::thread::sleep(std::time::Duration::from_millis(input.ms));
    json_output(&Output { slept_ms: input.ms })
}

toolplane_sdk::export!(run);
