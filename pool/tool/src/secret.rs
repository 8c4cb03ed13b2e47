//! Values a manifest may keep out of its file: a process tool's `env`
//! (and what else carries credentials) is a string, or a reference to
//! where the value lives:
//!
//! ```toml
//! [env]
//! LOG_LEVEL = "info"                            # in place
//! GITHUB_TOKEN = { env = "GITHUB_TOKEN" }       # the server's own environment, named
//! API_KEY = { file = "secrets/api-key" }        # a file only its owner can read
//! ```
//!
//! A reference is resolved when the tool loads: a variable that is not set,
//! or a file that is not a regular file owned by the server's user and
//! unreadable to others (mode `0600` or narrower), is a load error naming
//! the key and the variable or the file, never the value. A resolved value
//! is a [`Secret`]: its `Debug` and `Display` print `[redacted]`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Words in a variable's name that say it holds a credential.
const SECRET_WORDS: [&str; 8] = [
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "AUTH",
    "CREDENTIAL",
    "COOKIE",
];

/// Whether the variable `name` says it holds a credential (`GITHUB_TOKEN`,
/// `API_KEY`, `DB_PASSWORD`, …).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// The directory beside the manifests for secret files (`toolplane
/// import` writes them there): hidden from every process tool, which runs
/// as the server's user and would otherwise read the others' secrets.
pub const SECRETS_DIR: &str = "secrets";

/// The largest secret file read.
pub const MAX_FILE: u64 = 64 << 10;

/// A value in place, or where to find it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub enum Value {
    /// Written in the manifest.
    Plain(String),
    /// The server's environment variable of this name.
    Env(String),
    /// This file (relative to the manifest's directory), owner-only.
    File(PathBuf),
}

/// What the file says, before it is checked.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Plain(String),
    Table(BTreeMap<String, serde_json::Value>),
}

impl TryFrom<Raw> for Value {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Value, String> {
        const EXPECTED: &str = "expected a string, { env = \"VARIABLE\" } or { file = \"path\" }";
        match raw {
            Raw::Plain(s) => Ok(Value::Plain(s)),
            Raw::Table(t) => {
                let mut it = t.into_iter();
                match (it.next(), it.next()) {
                    (Some((k, serde_json::Value::String(v))), None) if k == "env" => {
                        if v.is_empty() || v.contains('=') || v.contains('\0') {
                            Err(format!("{{ env = {v:?} }} is not a variable name"))
                        } else {
                            Ok(Value::Env(v))
                        }
                    }
                    (Some((k, serde_json::Value::String(v))), None) if k == "file" => {
                        if v.is_empty() {
                            Err("{ file = \"\" } names no file".into())
                        } else {
                            Ok(Value::File(v.into()))
                        }
                    }
                    _ => Err(EXPECTED.into()),
                }
            }
        }
    }
}

/// A resolved value that must not be shown: `Debug` and `Display` print
/// `[redacted]`; [`Secret::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it (a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a reference could not be resolved: never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set (or not Unicode).
    #[error("the server's environment has no {0} (set it, or name another variable)")]
    NoVariable(String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is readable by others than its owner, is not owned by the
    /// server's user, or is not a regular file.
    #[error(
        "{path}: {why}; a secret file must be a regular file of the server's user that only it can read (chmod 600)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The file is larger than [`MAX_FILE`] or not UTF-8.
    #[error("{path}: {why}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl Value {
    /// Whether the value is written in the manifest itself.
    pub fn is_plain(&self) -> bool {
        matches!(self, Value::Plain(_))
    }

    /// The value: in place, from the environment, or read from its file
    /// (relative to `base`, the manifest's directory). A file's one
    /// trailing newline is not part of it.
    ///
    /// # Errors
    ///
    /// See [`SecretError`].
    pub fn resolve(&self, base: Option<&Path>) -> Result<Secret, SecretError> {
        match self {
            Value::Plain(s) => Ok(Secret(s.clone())),
            Value::Env(var) => std::env::var(var)
                .map(Secret)
                .map_err(|_| SecretError::NoVariable(var.clone())),
            Value::File(p) => {
                let path = match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p.clone(),
                };
                read_owner_only(&path)
            }
        }
    }
}

fn read_owner_only(path: &Path) -> Result<Secret, SecretError> {
    let read = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let exposed = |why: String| SecretError::Exposed {
        path: path.to_owned(),
        why,
    };
    // The checks are of the file opened (not followed by name twice);
    // opened without blocking, so that a FIFO (or a device) put there
    // fails the checks below instead of holding the loader for ever.
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(exposed("not a regular file".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(exposed(format!(
            "owned by uid {}, not the server's ({me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(exposed(format!("mode {mode:04o} lets others read it")));
    }
    if meta.len() > MAX_FILE {
        return Err(SecretError::Unreadable {
            path: path.to_owned(),
            why: format!("{} bytes, more than {MAX_FILE}", meta.len()),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(SecretError::Unreadable {
            path: path.to_owned(),
            why: format!("more than {MAX_FILE} bytes"),
        });
    }
    let mut text = String::from_utf8(bytes).map_err(|_| SecretError::Unreadable {
        path: path.to_owned(),
        why: "not UTF-8".into(),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret(text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, Value>, String> {
        #[derive(Deserialize)]
        struct M {
            env: BTreeMap<String, Value>,
        }
        toml::from_str::<M>(text)
            .map(|m| m.env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_plain_or_references() {
        let env =
            parse("[env]\nA = \"x\"\nB = { env = \"HOME\" }\nC = { file = \"k\" }\n").unwrap();
        assert_eq!(env["A"], Value::Plain("x".into()));
        assert_eq!(env["B"], Value::Env("HOME".into()));
        assert_eq!(env["C"], Value::File("k".into()));
        for bad in [
            "{ env = \"A\", file = \"b\" }",
            "{ vault = \"x\" }",
            "{ env = 3 }",
            "{ env = \"\" }",
            "3",
        ] {
            let e = parse(&format!("[env]\nKEY = {bad}\n")).unwrap_err();
            assert!(e.contains("KEY"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_owner_only_file_is_read_and_others_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = Value::File("key".into());
        let s = v.resolve(Some(dir.path())).unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = v.resolve(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("0640") && !e.contains("s3cret"),
            "{e}"
        );
        let e = Value::File("missing".into())
            .resolve(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        // A FIFO fails the checks at once rather than blocking the load.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only reads it.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let e = Value::File("fifo".into())
            .resolve(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = Value::File(".".into())
            .resolve(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_variable_is_read_from_the_servers_environment() {
        let home = std::env::var("PATH").unwrap();
        assert_eq!(
            Value::Env("PATH".into()).resolve(None).unwrap().expose(),
            home
        );
        let e = Value::Env("TOOLPLANE_TEST_NO_SUCH_VARIABLE".into())
            .resolve(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TOOLPLANE_TEST_NO_SUCH_VARIABLE"), "{e}");
    }
}
