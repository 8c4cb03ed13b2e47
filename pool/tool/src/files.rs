//! Reading the files a tools directory names (manifests and modules) as
//! untrusted input: only a regular file, never more than a size limit, and
//! never blocking forever.
//!
//! A path may name a FIFO (whose `open` blocks until a writer comes), a
//! device (`/dev/zero` never ends), or a file far larger than any module.
//! The file is opened with `O_NONBLOCK` (which makes `open` of a FIFO
//! return at once and does nothing to a regular file), its type and size
//! are checked on the open descriptor (no race with a swap of the path),
//! and it is read in chunks with a deadline checked between them and at
//! most `limit + 1` bytes taken (a file that grows while read is caught).
//! Errors name the path and the reason, never the file's content.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toolplane_units::fmt_size;

/// Bytes read between two deadline checks.
const CHUNK: usize = 1 << 20;

/// Why a file could not be read. Displayed as `<path>: <reason>`; an error
/// that names the path already shows [`ReadError::reason`] alone.
#[derive(Debug)]
pub enum ReadError {
    /// The file cannot be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path names something other than a regular file.
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a FIFO", "a character device", ...).
        kind: &'static str,
    },
    /// The file is larger than allowed.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least).
        size: u64,
        /// The limit.
        limit: u64,
        /// The setting that sets the limit.
        key: &'static str,
    },
    /// Someone other than this user (or root) could change the file: what
    /// it makes the server run would be theirs.
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Who else can write it.
        why: String,
    },
    /// Reading took longer than allowed.
    Timeout {
        /// The file.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
        /// Bytes read by then.
        read: u64,
    },
}

impl ReadError {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Unsafe { path, .. }
            | ReadError::Timeout { path, .. } => path,
        }
    }

    /// What went wrong, without the path.
    pub fn reason(&self) -> Reason<'_> {
        Reason(self)
    }
}

/// [`ReadError::reason`].
#[derive(Debug)]
pub struct Reason<'e>(&'e ReadError);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ReadError::Io { source, .. } => write!(f, "cannot read: {source}"),
            ReadError::NotRegular { kind, .. } => write!(f, "is {kind}, not a regular file"),
            ReadError::TooLarge {
                size, limit, key, ..
            } => write!(
                f,
                "is {} or more, above the limit {key} = {}",
                fmt_size(*size),
                fmt_size(*limit)
            ),
            ReadError::Unsafe { why, .. } => write!(
                f,
                "{why}: it says what the server runs, so it must be writable by this user (or root) alone (chmod go-w)"
            ),
            ReadError::Timeout { timeout, read, .. } => write!(
                f,
                "took longer than {timeout:?} to read ({} read by then)",
                fmt_size(*read)
            ),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path().display(), self.reason())
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Bytes at most.
    pub max: u64,
    /// The setting `max` comes from, for messages.
    pub key: &'static str,
    /// Wall-clock time at most.
    pub timeout: Duration,
}

/// Reads the regular file at `path` within `limits`.
///
/// # Errors
///
/// See [`ReadError`].
pub fn read_checked(path: &Path, limits: ReadLimits) -> Result<Vec<u8>, ReadError> {
    let started = Instant::now();
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(ReadError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    let too_large = |size| ReadError::TooLarge {
        path: path.to_owned(),
        size,
        limit: limits.max,
        key: limits.key,
    };
    if let Some(why) = others_can_write(&meta) {
        return Err(ReadError::Unsafe {
            path: path.to_owned(),
            why,
        });
    }
    if meta.len() > limits.max {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    loop {
        if started.elapsed() > limits.timeout {
            return Err(ReadError::Timeout {
                path: path.to_owned(),
                timeout: limits.timeout,
                read: out.len() as u64,
            });
        }
        let want = (limits.max + 1 - out.len() as u64).min(CHUNK as u64);
        let n = (&mut file).take(want).read_to_end(&mut out).map_err(io)?;
        if out.len() as u64 > limits.max {
            return Err(too_large(out.len() as u64));
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Whether `path` is an executable file now (a regular file with an
/// execute bit).
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who besides this user and root can write what `meta` describes (a
/// file, or the directory it lives in), if anyone: its group or everyone
/// by its mode, or another owner. The module cache is held to the same
/// rule (`toolplane_wasi::cache`).
pub fn others_can_write(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "it is owned by uid {}, not by this user (uid {me}) or root",
            meta.uid()
        ));
    }
    // A sticky directory (/tmp) lets others add entries, not replace ours.
    let sticky = meta.is_dir() && meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return Some(format!(
            "its mode is {:04o}: its group or others can write to it",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Whether `dir` is `grant` or lies beneath it, both resolved (links,
/// `..`); a path that does not resolve is compared as written.
pub fn covers(grant: &Path, dir: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    canon(dir).starts_with(canon(grant))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits {
        max: 1024,
        key: "test.max",
        timeout: Duration::from_secs(5),
    };

    #[test]
    fn reads_a_regular_file_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, vec![7u8; 1024]).unwrap();
        assert_eq!(read_checked(&p, LIMITS).unwrap().len(), 1024);
        std::fs::write(&p, vec![7u8; 1025]).unwrap();
        let e = read_checked(&p, LIMITS).unwrap_err().to_string();
        assert!(e.contains("test.max = 1 KiB"), "{e}");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let e = read_checked(&fifo, LIMITS).unwrap_err().to_string();
        assert!(e.ends_with("is a FIFO, not a regular file"), "{e}");
        let e = read_checked(Path::new("/dev/zero"), LIMITS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a character device"), "{e}");
        let e = read_checked(dir.path(), LIMITS).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn refuses_a_file_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "x").unwrap();
        for mode in [0o666, 0o664, 0o646] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_checked(&p, LIMITS).unwrap_err().to_string();
            assert!(e.contains("its group or others can write"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_checked(&p, LIMITS).is_ok());
    }
}
