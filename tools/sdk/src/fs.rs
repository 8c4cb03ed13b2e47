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
