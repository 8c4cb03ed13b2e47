//! Paths inside a tool's data directory.
//!
//! The host preopens the data directory at [`DATA_DIR`]. Tools take paths
//! relative to it; [`resolve`] refuses absolute paths and `..` before any
//! file is touched, and the host's WASI layer refuses symlinks that lead
//! outside the preopen.

use std::path::{Component, Path, PathBuf};

use crate::ToolError;

/// Where the host mounts a tool's data directory.
pub const DATA_DIR: &str = "/data";

/// Resolves `path` (relative to the data directory) to a guest path.
pub fn resolve(path: &str) -> Result<PathBuf, ToolError> {
    if path.is_empty() {
        return Err(ToolError::new("path is empty"));
    }
    if path.contains('\0') {
        return Err(ToolError::new(format!("path {path:?} contains a NUL byte")));
    }
    let p = Path::new(path);
    let mut out = PathBuf::from(DATA_DIR);
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ToolError::new(format!(
                    "path {path:?} is refused: `..` is not allowed, paths stay inside the data directory"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ToolError::new(format!(
                    "path {path:?} is refused: absolute paths are not allowed, give a path relative to the data directory"
                )));
            }
        }
    }
    if out.as_os_str() == DATA_DIR {
        return Err(ToolError::new(format!(
            "path {path:?} names the data directory itself"
        )));
    }
    Ok(out)
}

/// Describes an I/O error on `path` for the caller.
pub fn io_error(op: &str, path: &str, e: &std::io::Error) -> ToolError {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::NotFound => "no such file or directory".to_string(),
        ErrorKind::PermissionDenied => {
            "permission denied (a read-only grant, or a path or symlink leading outside the data directory)"
                .to_string()
        }
        ErrorKind::AlreadyExists => "already exists".to_string(),
        _ => e.to_string(),
    };
    ToolError::new(format!("cannot {op} {path:?}: {why}"))
}

/// Refuses what is not a regular file (a FIFO, a device, a socket, a
/// directory) before it is opened: opening a FIFO blocks until a writer
/// comes. The host runs file operations off its workers and ends the call
/// at its deadline either way; this makes the answer immediate and clear.
pub fn require_regular(guest: &Path, path: &str) -> Result<std::fs::Metadata, ToolError> {
    let meta = std::fs::metadata(guest).map_err(|e| io_error("open", path, &e))?;
    if meta.is_file() {
        Ok(meta)
    } else if meta.is_dir() {
        Err(ToolError::new(format!(
            "{path:?} is a directory, not a file"
        )))
    } else {
        Err(ToolError::new(format!(
            "{path:?} is not a regular file (a FIFO, device or socket), refused"
        )))
    }
}

#[cfg(target_family = "wasm")]
#[link(wasm_import_module = "toolplane")]
unsafe extern "C" {
    /// The host's write reservation: 0 granted, anything else refused (the
    /// host then reports the limit in the call's error).
    #[link_name = "reserve_write"]
    fn host_reserve_write(bytes: i64) -> i32;
}

/// Asks the host for `bytes` more of this call's write quota
/// (`limits.max_write`) and of the data directory's size limit, before
/// writing them. A refusal is an error; the host replaces its message with
/// one naming the limit.
pub fn reserve_write(bytes: u64) -> Result<(), ToolError> {
    #[cfg(target_family = "wasm")]
    {
        let n = i64::try_from(bytes).unwrap_or(i64::MAX);
        // SAFETY: a host function taking and returning plain integers.
        if unsafe { host_reserve_write(n) } != 0 {
            return Err(ToolError::new(format!(
                "the host refused a write of {bytes} bytes (a write quota or the data directory's size limit)"
            )));
        }
    }
    #[cfg(not(target_family = "wasm"))]
    let _ = bytes;
    Ok(())
}
