//! `fs.write`: writes (or appends) content to a file in the data directory.

use std::io::Write;

use serde::{Deserialize, Serialize};
use toolplane_sdk::{Encoding, ToolError, fs, json_input, json_output};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    path: String,
    content: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    append: bool,
    #[serde(default)]
    create_dirs: bool,
}

#[derive(Serialize)]
struct Output {
    bytes_written: usize,
}

fn run(input: &[u8]) -> Result<Vec<u8>, ToolError> {
    let input: Input = json_input(input)?;
    let path = fs::resolve(&input.path)?;
    let content = input.encoding.decode(&input.content)?;
    if input.create_dirs {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| fs::io_error("create the directories of", &input.path, &e))?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if input.append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| fs::io_error("open for writing", &input.path, &e))?;
    file.write_all(&content)
        .and_then(|()| file.flush())
        .map_err(|e| fs::io_error("write", &input.path, &e))?;
    json_output(&Output {
        bytes_written: content.len(),
    })
}

toolplane_sdk::export!(run);
