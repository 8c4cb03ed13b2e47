//! `fs.write`: writes (or appends) content to a file in the data directory.
//!
//! A write replaces the file whole: the content goes to a temporary file
//! beside it, which is renamed over the target, so a reader (or a crash)
//! sees the old content or the new, never an empty or half-written file.
//! `durable` syncs the file (and the rename) before answering. An append
//! appends in place.

use std::io::Write;
use std::path::Path;

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
    #[serde(default)]
    durable: bool,
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
    // A FIFO or device at the path is refused before it is opened.
    if std::fs::symlink_metadata(&path).is_ok() {
        fs::require_regular(&path, &input.path)?;
    }
    fs::reserve_write(content.len() as u64)?;
    if input.append {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| fs::io_error("open for appending", &input.path, &e))?;
        file.write_all(&content)
            .map_err(|e| fs::io_error("append to", &input.path, &e))?;
        if input.durable {
            file.sync_all()
                .map_err(|e| fs::io_error("sync", &input.path, &e))?;
        }
    } else {
        replace(&path, &input.path, &content, input.durable)?;
    }
    json_output(&Output {
        bytes_written: content.len(),
    })
}

/// Writes `content` to a new temporary file in `path`'s directory and
/// renames it over `path`.
fn replace(path: &Path, shown: &str, content: &[u8], durable: bool) -> Result<(), ToolError> {
    let dir = path.parent().unwrap_or(Path::new(fs::DATA_DIR));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let (tmp, mut file) = temp_file(dir, name, shown)?;
    let written = file
        .write_all(content)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) });
    drop(file);
    let result = written
        .map_err(|e| fs::io_error("write", shown, &e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| fs::io_error("replace", shown, &e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if durable {
        // The rename itself, made durable: sync the directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A new file `.<name>.<random>.tmp` in `dir`, created exclusively.
fn temp_file(
    dir: &Path,
    name: &str,
    shown: &str,
) -> Result<(std::path::PathBuf, std::fs::File), ToolError> {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    for attempt in 0u64..16 {
        let tag = state.hash_one(attempt);
        let tmp = dir.join(format!(".{name}.{tag:016x}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fs::io_error("open for writing", shown, &e)),
        }
    }
    Err(ToolError::new(format!(
        "cannot create a temporary file beside {shown:?}: 16 names taken"
    )))
}

toolplane_sdk::export!(run);
