//! `echo`: returns its input unchanged.

use toolplane_sdk::ToolError;

fn run(input: &[u8]) -> Result<Vec<u8>, ToolError> {
    Ok(input.to_vec())
}

toolplane_sdk::export!(run);
