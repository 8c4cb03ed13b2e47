//! `hash.sha256`: the SHA-256 of its data, optionally chained over several
//! rounds to make a call as CPU-bound as a profile wants.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toolplane_sdk::{Encoding, ToolError, json_input, json_output};

/// Rounds a single call may ask for.
const MAX_ROUNDS: u32 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    data: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default = "one")]
    rounds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct Output {
    sha256: String,
    bytes: usize,
    rounds: u32,
}

fn run(input: &[u8]) -> Result<Vec<u8>, ToolError> {
    let input: Input = json_input(input)?;
    if input.rounds == 0 || input.rounds > MAX_ROUNDS {
        return Err(ToolError::new(format!(
            "rounds = {} is out of range: 1..={MAX_ROUNDS}",
            input.rounds
        )));
    }
    let data = input.encoding.decode(&input.data)?;
    // Round 1 hashes the data; each further round hashes the previous
    // digest followed by the data again.
    let mut digest = Sha256::digest(&data);
    for _ in 1..input.rounds {
        let mut h = Sha256::new();
        h.update(digest);
        h.update(&data);
        digest = h.finalize();
    }
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    json_output(&Output {
        sha256: hex,
        bytes: data.len(),
        rounds: input.rounds,
    })
}

toolplane_sdk::export!(run);
