//! Why a process tool could not be loaded, why one of its processes could
//! not be started, what an upstream MCP server did wrong, and why a process
//! ended: each a type a caller can match on, with the underlying error as
//! its source.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use crate::spec::{MAX_PAGES, MAX_SCHEMA, MAX_TOOLS};

/// Why a process tool could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProcessLoadError {
    /// `{data}` is used and no data directory is configured.
    #[error("{key} uses {{data}}, and no data directory is configured")]
    NoDataDir {
        /// The key.
        key: &'static str,
    },
    /// A value of `env` given by reference could not be resolved (the
    /// message names the variable or the file, never a value).
    #[error("env.{key}: {source}")]
    Secret {
        /// The variable of the program's environment.
        key: String,
        /// Why.
        #[source]
        source: toolplane_tool::secret::SecretError,
    },
    /// A header given by reference could not be resolved (the message
    /// names the variable or the file, never a value).
    #[error("headers.{key}: {source}")]
    HeaderSecret {
        /// The header.
        key: String,
        /// Why.
        #[source]
        source: toolplane_tool::secret::SecretError,
    },
    /// A header's resolved value cannot be sent.
    #[error("headers.{key}: {why}")]
    Header {
        /// The header.
        key: String,
        /// Why, never the value.
        why: &'static str,
    },
    /// The HTTP client for a remote server could not be built.
    #[error("the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The program is not found on `PATH` or is not executable.
    #[error("command[0] = {program:?}: not an executable file (looked in {looked})")]
    NoProgram {
        /// As written.
        program: String,
        /// Where it was looked for.
        looked: String,
    },
    /// The program may not be run as named.
    #[error("command[0] = {program:?}: {why}")]
    Program {
        /// As written.
        program: String,
        /// Why not.
        why: String,
    },
    /// The working directory does not exist.
    #[error("cwd {}: not a directory", .0.display())]
    NoCwd(PathBuf),
    /// A `[permissions]` directory does not exist.
    #[error("permissions.{key}: {}: not a directory", path.display())]
    NoGrant {
        /// `read` or `write`.
        key: &'static str,
        /// As resolved.
        path: PathBuf,
    },
    /// A directory the process needs is not covered by `[permissions]`.
    #[error(
        "{what} = {}: [permissions] does not cover it, and nothing is granted implicitly: add it (or a directory above it) to permissions.read or permissions.write",
        .path.display()
    )]
    Uncovered {
        /// The key that names it.
        what: &'static str,
        /// As resolved.
        path: PathBuf,
    },
    /// A write grant covers the tools directory: the tool could write a
    /// manifest the registry would load.
    #[error(
        "permissions.write: {} holds the tools directory {}: the tool could write a tool the server then runs",
        .path.display(), .tools.display()
    )]
    WritesTools {
        /// The grant, as resolved.
        path: PathBuf,
        /// The tools directory.
        tools: PathBuf,
    },
    /// What a `preset` needs could not be prepared.
    #[error("preset = {preset:?}: {why}")]
    Preset {
        /// The preset.
        preset: &'static str,
        /// What failed, naming the path.
        why: String,
    },
    /// The kernel supports Landlock, and the ruleset could not be made.
    #[error("permissions: the Landlock ruleset: {0}")]
    Landlock(#[source] landlock::RulesetError),
    /// An upstream MCP server could not be started or listed.
    #[error(transparent)]
    Upstream(#[from] ListError),
    /// The process host did not answer while the tool's members were
    /// listed.
    #[error("no list of its tools within {0:?} (the process host did not answer)")]
    HostSilent(Duration),
    /// The process host's thread could not be started.
    #[error("cannot start the process host thread: {0}")]
    Host(#[source] std::io::Error),
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its program could not be run (fork, exec, its cgroup, its pipes).
    #[error("cannot start {}: {source}", .program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not started within `limits.startup_timeout`.
    #[error("cannot start {}: not started within limits.startup_timeout = {timeout:?}", .program.display())]
    SpawnTimeout {
        /// The program.
        program: PathBuf,
        /// `limits.startup_timeout`.
        timeout: Duration,
    },
    /// Its stdio could not be taken over.
    #[error("process {pid} ({}): {source}", .program.display())]
    Pipes {
        /// Its process id.
        pid: u32,
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The MCP `initialize` handshake failed.
    #[error("process {pid} ({}): MCP initialize failed: {source}{stderr}", .program.display())]
    Handshake {
        /// Its process id.
        pid: u32,
        /// The program.
        program: PathBuf,
        /// What went wrong.
        #[source]
        source: UpstreamError,
        /// The tail of its stderr (empty, or starting with `; `).
        stderr: String,
    },
    /// The MCP handshake did not finish within `limits.startup_timeout`.
    #[error("process {pid} ({}) did not finish starting (the MCP handshake) within limits.startup_timeout = {timeout:?}{stderr}", .program.display())]
    HandshakeTimeout {
        /// Its process id.
        pid: u32,
        /// The program.
        program: PathBuf,
        /// `limits.startup_timeout`.
        timeout: Duration,
        /// The tail of its stderr (empty, or starting with `; `).
        stderr: String,
    },
    /// A remote server's session did not open: it could not be reached,
    /// or its `initialize` failed.
    #[error("cannot open a session with {url}: {source}")]
    Connect {
        /// The server's endpoint.
        url: String,
        /// What went wrong.
        #[source]
        source: UpstreamError,
    },
    /// A remote server's session did not open within
    /// `limits.startup_timeout`.
    #[error(
        "cannot open a session with {url}: no answer to initialize within limits.startup_timeout = {timeout:?}"
    )]
    ConnectTimeout {
        /// The server's endpoint.
        url: String,
        /// `limits.startup_timeout`.
        timeout: Duration,
    },
}

impl StartError {
    /// A remote server's session could not be opened.
    pub(crate) fn connect(url: &str, source: UpstreamError) -> StartError {
        StartError::Connect {
            url: url.into(),
            source,
        }
    }

    /// The program is not there, or may not be run: every start fails the
    /// same way until someone installs it (not a crash loop). The start
    /// failed for want of a file or a permission *and* the program is now
    /// no executable file: a cgroup, a working directory or a containment
    /// step failing the same way is not the program's absence.
    pub fn program_missing(&self) -> bool {
        let StartError::Spawn { program, source } = self else {
            return false;
        };
        matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ) && !toolplane_tool::files::executable(program)
    }
}

/// What an upstream MCP server did wrong: its handshake or its tools/list.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The process's stdio is not piped.
    #[error("its stdio is not piped")]
    NotPiped,
    /// rmcp's handshake failed.
    #[error("{}", initialize_words(.0))]
    Initialize(#[source] Box<rmcp::service::ClientInitializeError>),
    /// Its `tools/list` failed.
    #[error("tools/list: {}", service_words(.0))]
    List(#[source] rmcp::ServiceError),
    /// `nextCursor` never ended.
    #[error("its tools/list went on past {MAX_PAGES} pages (nextCursor never ended)")]
    Endless,
    /// More tools than a set may have.
    #[error("it lists more than {MAX_TOOLS} tools, the most one set may have")]
    TooMany,
    /// A tool listed twice.
    #[error("it lists the tool {0:?} twice")]
    Twice(String),
    /// A schema over [`MAX_SCHEMA`].
    #[error(
        "the {key} of its tool {tool:?} is {size} bytes, over the {MAX_SCHEMA} a schema may have"
    )]
    SchemaTooLarge {
        /// `inputSchema` or `outputSchema`.
        key: &'static str,
        /// The tool.
        tool: String,
        /// Its size in bytes.
        size: usize,
    },
}

/// Why a set's members could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No process to ask.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Its answer was wrong.
    #[error("listing its tools: {0}")]
    Upstream(#[from] UpstreamError),
    /// No answer within `limits.startup_timeout`.
    #[error("listing its tools: no answer to tools/list within limits.startup_timeout = {0:?}")]
    Timeout(Duration),
    /// Only an MCP server lists its tools.
    #[error("a jsonl worker does not list tools")]
    NotMcp,
}

/// Why a pooled tool has no process for a call. Cheap to clone: one
/// failure answers every call waiting.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// The tool was unloaded (replaced, removed, the server stopping).
    #[error("the tool was unloaded")]
    Unloaded,
    /// Its processes keep failing: the tool is down.
    #[error("{0}")]
    Down(Arc<str>),
    /// A process could not be started.
    #[error("{0}")]
    Start(Arc<StartError>),
    /// The process host's thread is gone (the server is stopping).
    #[error("the process host stopped")]
    HostStopped,
}

/// Why a long-lived process ended.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    /// It exited by itself.
    #[error("exited ({0})")]
    Exited(ExitStatus),
    /// Asked to stop (stdin closed), it exited.
    #[error("was stopped ({0})")]
    Stopped(ExitStatus),
    /// Asked to stop, it did not exit within the grace, and was killed.
    #[error("was stopped (killed: no exit {0:?} after its stdin closed)")]
    StopKilled(Duration),
    /// It closed its stdout and did not exit.
    #[error("closed its stdout")]
    ClosedStdout,
    /// It wrote what the protocol does not allow, named.
    #[error("{0}")]
    Broke(String),
    /// It did not answer a cancelled call within the grace.
    #[error("did not answer call {id} within {grace:?} of its cancel")]
    Overdue {
        /// The call.
        id: u64,
        /// The grace.
        grace: Duration,
    },
    /// It did not answer a ping after a cancelled call.
    #[error("was hung: no answer to a ping after a cancelled call")]
    Hung,
    /// A remote session whose transport failed (the server went away, or
    /// a call's request could not be carried), closed.
    #[error("was closed: {0}")]
    Broken(String),
    /// A remote session the pool closed (idle, retired, unloaded).
    #[error("was closed")]
    Closed,
    /// A remote session's transport ended by itself.
    #[error("ended: its transport closed")]
    SessionEnded,
    /// Its stdout could not be read, or it could not be waited for.
    #[error("could not be {what}: {source}")]
    Io {
        /// `read` or `waited for`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Exit {
    /// Whether its status is in the reason already (else the kill's status
    /// is added).
    pub fn has_status(&self) -> bool {
        matches!(
            self,
            Exit::Exited(_) | Exit::Stopped(_) | Exit::StopKilled(_)
        )
    }
}

/// An error and its sources, each said once: `a: b: c` (with rmcp's one
/// Rust type name in words).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        next = s.source();
    }
    out.replace("ServerJsonRpcMessage", "a JSON-RPC message")
}

/// A failed `initialize` in words: what was sent and why it failed, down to
/// the socket's error (not the transport's Rust type, which rmcp's message
/// names).
pub(crate) fn initialize_words(e: &rmcp::service::ClientInitializeError) -> String {
    use rmcp::service::ClientInitializeError as E;
    match e {
        E::TransportError { error, context } => {
            format!("{context}: {}", transport_chain(&*error.error))
        }
        // rmcp's messages print what came as Rust values.
        E::ExpectedInitResponse(_) => "its answer to initialize is not a JSON-RPC response".into(),
        E::ExpectedInitResult(_) => "its answer to initialize is not an initialize result".into(),
        other => chain(other),
    }
}

/// A failed request in words, as [`initialize_words`].
pub(crate) fn service_words(e: &rmcp::ServiceError) -> String {
    match e {
        rmcp::ServiceError::TransportSend(t) => transport_chain(&*t.error),
        other => chain(other),
    }
}

/// A transport's error as [`chain`] says it; the HTTP client's own error
/// (which rmcp's wrapper does not give as a source) down to the socket's.
fn transport_chain(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    match e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(inner)) => chain(inner),
        _ => chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialize_answer_of_the_wrong_kind_is_said_in_words() {
        use rmcp::service::ClientInitializeError as E;
        for e in [E::ExpectedInitResult(None), E::ExpectedInitResponse(None)] {
            let said = UpstreamError::Initialize(Box::new(e)).to_string();
            assert!(
                said.contains("initialize") && !said.contains("None"),
                "{said}"
            );
        }
    }
}
