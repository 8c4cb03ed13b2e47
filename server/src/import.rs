//! `toolplane import FILE`: the MCP servers of a desktop agent's or an
//! IDE's configuration, as process tool manifests.
//!
//! Four formats, told apart by the file's name and then its content:
//!
//! - **Claude Desktop** (`claude_desktop_config.json`): `mcpServers`, each
//!   `command`, `args`, `env`.
//! - **Cursor** (`.cursor/mcp.json`): the same, plus remote servers
//!   (`url`, `headers`), `type` and `envFile`.
//! - **VS Code** (`.vscode/mcp.json`, JSON with comments): `servers`, each
//!   with a `type` (`stdio`, `http`, `sse`), `command`, `args`, `env`,
//!   `envFile`, `cwd`; `inputs` the editor prompts for, used as
//!   `${input:ID}`, and `${env:NAME}`, `${workspaceFolder}` in values.
//! - **Windsurf** (`mcp_config.json`): `mcpServers`, remote ones by
//!   `serverUrl`, `${env:NAME}` in values, `disabled`, `disabledTools`.
//!
//! Each server with a command becomes `<name>.toml` (`runtime = "process"`,
//! `protocol = "mcp"`), its command, arguments, environment and working
//! directory carried over; each remote one (`url`, `serverUrl`, `type =
//! "http"`) a `runtime = "remote"` manifest with its URL and headers. A
//! literal value under a key that names a credential (`…TOKEN`, `…KEY`,
//! `Authorization`, …) is moved to an owner-only file beside the manifest
//! (`secrets/<tool>.<KEY>`, mode 0600) and referenced (`{ file = … }`);
//! `${env:NAME}` becomes `{ env = "NAME" }`, and an editor's prompted
//! input a variable the server must be given. What cannot be carried is
//! said, per server: the old HTTP+SSE transport, credentials in a URL,
//! `envFile`, partly interpolated values, keys the manifest has no place
//! for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toolplane_pool::secret::{SECRETS_DIR, looks_secret};

/// Where an import stops.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON (nor JSON with comments).
    #[error("{path}: not JSON: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        message: String,
    },
    /// The file has no server table this command knows.
    #[error("{path}: {why}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is missing.
        why: String,
    },
    /// Manifests would replace files there, and `--force` was not given.
    #[error("{} exist already: nothing written (--force replaces them)", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Exists(Vec<PathBuf>),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Claude Desktop's `claude_desktop_config.json`.
    Claude,
    /// Cursor's `mcp.json`.
    Cursor,
    /// VS Code's `.vscode/mcp.json`.
    Vscode,
    /// Windsurf's `mcp_config.json`.
    Windsurf,
}

impl Format {
    /// The application's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Claude => "Claude Desktop",
            Format::Cursor => "Cursor",
            Format::Vscode => "VS Code",
            Format::Windsurf => "Windsurf",
        }
    }
}

/// A file to write with the manifests: a secret moved out of the
/// configuration. Its value is never shown.
pub struct SecretFile {
    /// Relative to the tools directory.
    pub path: PathBuf,
    value: String,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One server of the file.
#[derive(Debug)]
pub struct Server {
    /// Its name in the file.
    pub name: String,
    /// The tool it becomes (the manifest's `name`, its file's stem).
    pub tool: String,
    /// The manifest, or why the server is not imported.
    pub manifest: Result<String, String>,
    /// Secret files the manifest references.
    pub secrets: Vec<SecretFile>,
    /// What changed on the way, and what could not be carried.
    pub notes: Vec<String>,
}

/// What a file holds.
#[derive(Debug)]
pub struct Imported {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its servers, by name.
    pub servers: Vec<Server>,
}

/// Reads `path`, in `format` or the one its name and content say.
///
/// # Errors
///
/// The file cannot be read, is not JSON, or has no server table.
pub fn read(path: &Path, format: Option<Format>) -> Result<Imported, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    // VS Code's files are JSON with comments and trailing commas: JSON5
    // reads them, and plain JSON too.
    let doc: serde_json::Value = json5::from_str(&text).map_err(|e| ImportError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let shape = |why: &str| ImportError::Shape {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let format = format.unwrap_or_else(|| detect(path, &doc));
    let key = if format == Format::Vscode {
        "servers"
    } else {
        "mcpServers"
    };
    let servers = doc
        .get(key)
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| {
            shape(&format!(
                "no \"{key}\" object: not a {} MCP configuration",
                format.name()
            ))
        })?;
    let inputs: BTreeMap<String, String> = doc
        .get("inputs")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let id = i.get("id")?.as_str()?.to_owned();
                    let what = i
                        .get("description")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    Some((id, what))
                })
                .collect()
        })
        .unwrap_or_default();
    // `${workspaceFolder}`: the folder that holds `.vscode/`.
    let workspace = path.canonicalize().ok().and_then(|p| {
        let dir = p.parent()?;
        (dir.file_name()? == ".vscode").then(|| dir.parent().map(Path::to_path_buf))?
    });
    let cx = Context {
        file: path,
        format,
        inputs: &inputs,
        workspace: workspace.as_deref(),
    };
    let mut taken: Vec<String> = Vec::new();
    let servers = servers
        .iter()
        .map(|(name, spec)| {
            let mut tool = tool_name(name);
            let stem = tool.clone();
            let mut n = 2;
            while taken.contains(&tool) {
                tool = format!("{stem}-{n}");
                n += 1;
            }
            taken.push(tool.clone());
            server(&cx, name, tool, spec)
        })
        .collect();
    Ok(Imported {
        path: path.to_owned(),
        format,
        servers,
    })
}

/// The format a file's name, then its content, says.
fn detect(path: &Path, doc: &serde_json::Value) -> Format {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let entries = || {
        doc.get("mcpServers")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flat_map(|o| o.values())
    };
    if name == "claude_desktop_config.json" {
        Format::Claude
    } else if dir == ".vscode" || doc.get("servers").is_some_and(serde_json::Value::is_object) {
        Format::Vscode
    } else if dir == ".cursor" {
        Format::Cursor
    } else if dir == "windsurf"
        || name == "mcp_config.json"
        || entries().any(|e| e.get("serverUrl").is_some())
    {
        Format::Windsurf
    } else if entries()
        .any(|e| e.get("url").is_some() || e.get("type").is_some() || e.get("envFile").is_some())
    {
        Format::Cursor
    } else {
        // Claude Desktop's format; Cursor writes the same for servers
        // started by a command.
        Format::Claude
    }
}

/// A tool name from a server's: `[A-Za-z0-9_-]`, others as `-`.
fn tool_name(server: &str) -> String {
    let mut out: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_owned();
    out.truncate(48);
    if out.is_empty() {
        "server".to_owned()
    } else {
        out
    }
}

struct Context<'a> {
    file: &'a Path,
    format: Format,
    inputs: &'a BTreeMap<String, String>,
    workspace: Option<&'a Path>,
}

/// A value with the editor's variables: whole `${env:NAME}`, whole
/// `${input:ID}`, or text in which `${workspaceFolder}` (and
/// `${userHome}`) are known.
enum Resolved {
    Text(String),
    Env(String),
    Input(String),
    Unknown(String),
}

fn resolve(cx: &Context<'_>, value: &str) -> Resolved {
    if let Some(var) = value
        .strip_prefix("${env:")
        .and_then(|v| v.strip_suffix('}'))
        && !var.contains("${")
    {
        return Resolved::Env(var.to_owned());
    }
    if let Some(id) = value
        .strip_prefix("${input:")
        .and_then(|v| v.strip_suffix('}'))
        && !id.contains("${")
    {
        return Resolved::Input(id.to_owned());
    }
    let mut text = value.to_owned();
    if let Some(ws) = cx.workspace {
        text = text.replace("${workspaceFolder}", &ws.display().to_string());
    }
    if let Some(home) = std::env::var_os("HOME") {
        text = text.replace("${userHome}", &home.to_string_lossy());
    }
    if text.contains("${") {
        Resolved::Unknown(value.to_owned())
    } else {
        Resolved::Text(text)
    }
}

/// The keys a server entry may have that the manifest carries or says
/// why not.
const KNOWN: [&str; 7] = [
    "command",
    "args",
    "env",
    "cwd",
    "type",
    "disabled",
    "description",
];

fn server(cx: &Context<'_>, name: &str, tool: String, spec: &serde_json::Value) -> Server {
    let mut out = Server {
        name: name.to_owned(),
        tool,
        manifest: Err(String::new()),
        secrets: Vec::new(),
        notes: Vec::new(),
    };
    let Some(obj) = spec.as_object() else {
        out.manifest = Err("not an object".into());
        return out;
    };
    let str_of = |k: &str| obj.get(k).and_then(serde_json::Value::as_str);
    if obj.get("disabled").and_then(serde_json::Value::as_bool) == Some(true) {
        out.manifest = Err(format!("disabled in {}", cx.format.name()));
        return out;
    }
    let remote = str_of("url").or_else(|| str_of("serverUrl"));
    let kind = str_of("type").unwrap_or("stdio");
    if remote.is_some() || matches!(kind, "http" | "sse" | "streamable-http" | "streamableHttp") {
        remote_server(cx, name, remote, kind, obj, &mut out);
        return out;
    }
    let Some(command) = str_of("command") else {
        out.manifest = Err("no \"command\" to run".into());
        return out;
    };
    let mut argv = vec![command.to_owned()];
    for (i, a) in obj
        .get("args")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(a) = a.as_str() else {
            out.manifest = Err(format!("args[{i}] is not a string"));
            return out;
        };
        match resolve(cx, a) {
            Resolved::Text(t) => {
                if url_with_credentials(&t) || flag_with_credential(&t) {
                    out.notes.push(format!(
                        "args[{i}] holds what looks like a credential, carried as written: the manifest is written readable by you alone, but the tools see it; pass it in [env] as {{ file = … }} if the server reads one"
                    ));
                }
                argv.push(t);
            }
            _ => {
                out.manifest = Err(format!(
                    "args[{i}] = {a:?} takes a value from the editor at start: not carried (write the value in, then import again)"
                ));
                return out;
            }
        }
    }
    if cx.workspace.is_some()
        && obj
            .values()
            .any(|v| v.to_string().contains("${workspaceFolder}"))
    {
        out.notes.push(format!(
            "${{workspaceFolder}} is {}",
            cx.workspace
                .map(|w| w.display().to_string())
                .unwrap_or_default()
        ));
    }

    let mut table = toml::Table::new();
    table.insert("name".into(), out.tool.clone().into());
    let description = str_of("description").map_or_else(
        || format!("The MCP server {name:?} of {}", cx.format.name()),
        str::to_owned,
    );
    table.insert("description".into(), description.into());
    table.insert("runtime".into(), "process".into());
    table.insert("protocol".into(), "mcp".into());
    table.insert(
        "command".into(),
        toml::Value::Array(argv.iter().map(|a| a.clone().into()).collect()),
    );
    let program = Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(command);
    let preset = match program {
        "npx" => Some("npx"),
        "node" => Some("node"),
        p if p == "python" || p.starts_with("python3") => Some("python"),
        _ => None,
    };
    if let Some(p) = preset {
        table.insert("preset".into(), p.into());
    }
    table.insert("network".into(), "host".into());
    out.notes.push(format!(
        "network = \"host\": it reaches the network as it did in {}; \"none\" cuts it off",
        cx.format.name()
    ));
    if let Some(cwd) = str_of("cwd") {
        match resolve(cx, cwd) {
            Resolved::Text(t) => {
                table.insert("cwd".into(), t.into());
            }
            _ => out.notes.push(format!("cwd = {cwd:?}: not carried")),
        }
    }

    let mut env = toml::Table::new();
    for (k, v) in obj
        .get("env")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
    {
        // A variable's name: what the secret file is named after too, so
        // nothing that could leave `secrets/` (`KEY/../../x`).
        let portable = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !portable {
            out.notes.push(format!(
                "env.{k:?}: not a variable name (A-Z a-z 0-9 _, not first a digit), not carried"
            ));
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                out.notes
                    .push(format!("env.{k}: not a string, not carried"));
                continue;
            }
        };
        match resolve(cx, &text) {
            Resolved::Env(var) => {
                env.insert(k.clone(), reference("env", &var));
                out.notes.push(format!(
                    "env.{k}: from the server's own variable {var}, as {} took it",
                    cx.format.name()
                ));
            }
            Resolved::Input(id) => {
                env.insert(k.clone(), reference("env", k));
                let what = cx.inputs.get(&id).map(String::as_str).unwrap_or("");
                out.notes.push(format!(
                    "env.{k}: {} prompted for it (input {id:?}{}); give toolplane's server the variable {k} (or write it to a file only you can read and use {{ file = … }})",
                    cx.format.name(),
                    if what.is_empty() { String::new() } else { format!(": {what}") }
                ));
            }
            Resolved::Unknown(raw) => out.notes.push(format!(
                "env.{k} = {raw:?} takes part of its value from the editor: not carried"
            )),
            Resolved::Text(t) if looks_secret(k) && !t.is_empty() => {
                env.insert(k.clone(), to_secret_file(cx, &mut out, "env", k, t));
            }
            Resolved::Text(t) => {
                env.insert(k.clone(), t.into());
            }
        }
    }
    if !env.is_empty() {
        table.insert("env".into(), toml::Value::Table(env));
    }
    for k in obj.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        out.notes.push(match k.as_str() {
            "envFile" => {
                "envFile: not carried; put its variables under [env] (secrets as { file = … })"
                    .into()
            }
            "disabledTools" => disabled_tools(&out.tool),
            other => format!("{other}: not carried (no such setting here)"),
        });
    }
    let header = format!(
        "# The MCP server {name:?}, imported by `toolplane import` from\n# {} ({}).\n",
        cx.file.display(),
        cx.format.name()
    );
    out.manifest = toml::to_string(&table)
        .map(|body| format!("{header}{body}"))
        .map_err(|e| e.to_string());
    out
}

/// The keys a remote server's entry may have that the manifest carries or
/// says why not.
const KNOWN_REMOTE: [&str; 6] = [
    "url",
    "serverUrl",
    "type",
    "headers",
    "disabled",
    "description",
];

/// A remote server (`url`, `serverUrl`, `type = "http"`): a
/// `runtime = "remote"` manifest, its headers carried as [env] values are
/// (credentials moved to secret files, the editor's variables to
/// references).
fn remote_server(
    cx: &Context<'_>,
    name: &str,
    url: Option<&str>,
    kind: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
    out: &mut Server,
) {
    let Some(url) = url else {
        out.manifest = Err(format!("type = {kind:?} and no \"url\" to reach it at"));
        return;
    };
    let shown = toolplane_pool::process::spec::shown_url(url);
    if kind == "sse" {
        out.manifest = Err(format!(
            "a remote MCP server ({shown}) over HTTP+SSE (type \"sse\", the 2024-11-05 transport): not carried, toolplane speaks streamable HTTP; if the server serves that too (often at /mcp), import it with that URL"
        ));
        return;
    }
    let url = match resolve(cx, url) {
        Resolved::Text(t) => t,
        _ => {
            out.manifest = Err(format!(
                "a remote MCP server ({shown}) whose url takes a value from the editor at start: not carried (write the value in, then import again)"
            ));
            return;
        }
    };
    if url_with_credentials(&url) {
        out.manifest = Err(format!(
            "a remote MCP server ({shown}) with credentials in its url: not carried; send them as a header instead, and import again"
        ));
        return;
    }
    if let Err(why) = toolplane_pool::process::spec::check_url(&url) {
        out.manifest = Err(format!("a remote MCP server: not carried: {why}"));
        return;
    }
    if url.contains('?') {
        out.notes.push(
            "url: its query is carried as written, in the manifest (readable by you alone; the dry run above shows it): toolplane shows the url without it elsewhere; a key there is better sent as a header".into(),
        );
    }
    if shown.ends_with("/sse") {
        out.notes.push(
            "url ends in /sse: a server that speaks only the old HTTP+SSE transport fails to load; streamable HTTP is often at /mcp".into(),
        );
    }
    let mut table = toml::Table::new();
    table.insert("name".into(), out.tool.clone().into());
    let description = obj
        .get("description")
        .and_then(serde_json::Value::as_str)
        .map_or_else(
            || format!("The MCP server {name:?} of {}", cx.format.name()),
            str::to_owned,
        );
    table.insert("description".into(), description.into());
    table.insert("runtime".into(), "remote".into());
    table.insert("url".into(), url.into());
    let mut headers = toml::Table::new();
    for (k, v) in obj
        .get("headers")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
    {
        // A header's name: what its secret file is named after too.
        let token = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let reserved = toolplane_pool::process::spec::RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(k))
            || k.to_ascii_lowercase().starts_with("mcp-");
        if !token || reserved {
            out.notes.push(format!(
                "headers.{k:?}: not a header toolplane sends (the transport sets it, or not a header name), not carried"
            ));
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                out.manifest = Err(format!(
                    "a remote MCP server ({shown}): headers.{k} is not a string: not carried (a server without its headers would refuse the calls)"
                ));
                return;
            }
        };
        if headers.keys().any(|h: &String| h.eq_ignore_ascii_case(k)) {
            out.manifest = Err(format!(
                "a remote MCP server ({shown}): headers.{k} is given twice (names ignore case): not carried; keep one, and import again"
            ));
            return;
        }
        match resolve(cx, &text) {
            Resolved::Env(var) => {
                headers.insert(k.clone(), reference("env", &var));
                out.notes.push(format!(
                    "headers.{k}: from the server's own variable {var}, as {} took it",
                    cx.format.name()
                ));
            }
            Resolved::Input(id) => {
                let var = k.to_ascii_uppercase().replace('-', "_");
                headers.insert(k.clone(), reference("env", &var));
                let what = cx.inputs.get(&id).map(String::as_str).unwrap_or("");
                out.notes.push(format!(
                    "headers.{k}: {} prompted for it (input {id:?}{}); give toolplane's server the variable {var} (or write it to a file only you can read and use {{ file = … }})",
                    cx.format.name(),
                    if what.is_empty() { String::new() } else { format!(": {what}") }
                ));
            }
            Resolved::Unknown(_) => {
                // Not its value: the written part may be a key's.
                out.manifest = Err(format!(
                    "a remote MCP server ({shown}): headers.{k} takes part of its value from the editor (e.g. \"Bearer ${{env:TOKEN}}\"): not carried; write the whole value to a file only you can read and set headers.{k} = {{ file = \"…\" }} in the manifest, or write the value in and import again"
                ));
                return;
            }
            Resolved::Text(t)
                if !t.is_empty()
                    && (looks_secret(k) || k.eq_ignore_ascii_case("authorization")) =>
            {
                headers.insert(k.clone(), to_secret_file(cx, out, "headers", k, t));
            }
            Resolved::Text(t) => {
                headers.insert(k.clone(), t.into());
            }
        }
    }
    if !headers.is_empty() {
        table.insert("headers".into(), toml::Value::Table(headers));
    }
    for k in obj.keys().filter(|k| !KNOWN_REMOTE.contains(&k.as_str())) {
        out.notes.push(match k.as_str() {
            "disabledTools" => disabled_tools(&out.tool),
            other => format!("{other}: not carried (no such setting for a remote server here)"),
        });
    }
    let header = format!(
        "# The remote MCP server {name:?}, imported by `toolplane import` from\n# {} ({}).\n",
        cx.file.display(),
        cx.format.name()
    );
    out.manifest = toml::to_string(&table)
        .map(|body| format!("{header}{body}"))
        .map_err(|e| e.to_string());
}

/// `scheme://user:password@host…`.
fn url_with_credentials(arg: &str) -> bool {
    // Up to the query, not the first `/`: a password may hold one.
    arg.split_once("://")
        .is_some_and(|(_, rest)| rest.split(['?', '#']).next().unwrap_or("").contains('@'))
}

/// `--api-key=…`, `--token=…`.
fn flag_with_credential(arg: &str) -> bool {
    arg.starts_with('-')
        && arg
            .split_once('=')
            .is_some_and(|(flag, value)| !value.is_empty() && looks_secret(&flag.replace('-', "_")))
}

/// A credential `value` written in the file (under `table.k`), moved to
/// `secrets/<tool>.<k>` (mode 0600 when written) and said so: the
/// reference that replaces it.
fn to_secret_file(
    cx: &Context<'_>,
    out: &mut Server,
    table: &str,
    k: &str,
    value: String,
) -> toml::Value {
    let rel = PathBuf::from(SECRETS_DIR).join(format!("{}.{k}", out.tool));
    out.notes.push(format!(
        "{table}.{k}: a credential in plain text in {}: moved to {} (mode 0600) and referenced",
        cx.file.display(),
        rel.display()
    ));
    let r = reference("file", &rel.display().to_string());
    out.secrets.push(SecretFile { path: rel, value });
    r
}

/// What is said of `disabledTools`.
fn disabled_tools(tool: &str) -> String {
    format!(
        "disabledTools: not carried; [tools] expose in toolplane.toml chooses what is served (e.g. \"{tool}.*\")"
    )
}

fn reference(kind: &str, value: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(kind.into(), value.into());
    toml::Value::Table(t)
}

/// What [`write`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Manifests.
    pub manifests: Vec<PathBuf>,
    /// Secret files (mode 0600).
    pub secrets: Vec<PathBuf>,
}

/// Writes the imported servers' manifests and secret files into `dir`
/// (created if missing); a file there already is replaced only with
/// `force`, and then nothing is written unless every file may be.
///
/// # Errors
///
/// [`ImportError::Exists`] without `force`; a file that cannot be written.
pub fn write(imported: &Imported, dir: &Path, force: bool) -> Result<Written, ImportError> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ImportError::Write { path, source }
    };
    let servers: Vec<&Server> = imported
        .servers
        .iter()
        .filter(|s| s.manifest.is_ok())
        .collect();
    let targets: Vec<PathBuf> = servers
        .iter()
        .flat_map(|s| {
            std::iter::once(dir.join(format!("{}.toml", s.tool)))
                .chain(s.secrets.iter().map(|f| dir.join(&f.path)))
        })
        .collect();
    // A symlink there counts, dangling or not.
    let existing: Vec<PathBuf> = targets
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .cloned()
        .collect();
    if !force && !existing.is_empty() {
        return Err(ImportError::Exists(existing));
    }
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let mut written = Written::default();
    for s in servers {
        for f in &s.secrets {
            let path = dir.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(werr(parent))?;
                set_mode(parent, 0o700).map_err(werr(parent))?;
            }
            write_private(&path, &f.value).map_err(werr(&path))?;
            written.secrets.push(path);
        }
        let path = dir.join(format!("{}.toml", s.tool));
        if let Ok(text) = &s.manifest {
            // Readable by its owner alone: an argument may hold what the
            // file it came from held (a database URL with its password).
            write_private(&path, text.trim_end()).map_err(werr(&path))?;
        }
        written.manifests.push(path);
    }
    Ok(written)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Writes `value` to a file created with mode 0600 (never readable by
/// others, not even for a moment).
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    set_mode(path, 0o600)
}

/// The dry run's (and the write's) report: each server, its manifest or
/// why not, and the notes; never a secret's value.
pub fn report(imported: &Imported, dir: &Path, show_manifests: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let ok = imported
        .servers
        .iter()
        .filter(|s| s.manifest.is_ok())
        .count();
    let _ = writeln!(
        o,
        "{}: a {} configuration; {} of {} servers carried",
        imported.path.display(),
        imported.format.name(),
        ok,
        imported.servers.len()
    );
    for s in &imported.servers {
        match &s.manifest {
            Ok(text) => {
                let _ = writeln!(
                    o,
                    "\n== {} -> {}",
                    s.name,
                    dir.join(format!("{}.toml", s.tool)).display()
                );
                if show_manifests {
                    o.push_str(text);
                }
            }
            Err(why) => {
                let _ = writeln!(o, "\n== {}: NOT CARRIED: {why}", s.name);
            }
        }
        for n in &s.notes {
            let _ = writeln!(o, "   note: {n}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(name: &str, text: &str) -> Imported {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        read(&path, None).unwrap()
    }

    fn named<'a>(i: &'a Imported, name: &str) -> &'a Server {
        i.servers.iter().find(|s| s.name == name).unwrap()
    }

    fn manifest(s: &Server) -> toml::Table {
        toml::from_str(s.manifest.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn claude_desktop_servers_become_process_manifests_and_secrets_files() {
        let i = import(
            "claude_desktop_config.json",
            r#"{
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"]
    },
    "brave search": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-brave-search"],
      "env": { "BRAVE_API_KEY": "BSA-not-a-real-key", "LOG_LEVEL": "info" }
    }
  }
}"#,
        );
        assert_eq!(i.format, Format::Claude);
        let fs = manifest(named(&i, "filesystem"));
        assert_eq!(fs["name"].as_str(), Some("filesystem"));
        assert_eq!(fs["protocol"].as_str(), Some("mcp"));
        assert_eq!(fs["preset"].as_str(), Some("npx"));
        assert_eq!(
            fs["command"].as_array().unwrap()[3].as_str(),
            Some("/Users/me/Desktop")
        );
        let brave = named(&i, "brave search");
        assert_eq!(brave.tool, "brave-search");
        let m = manifest(brave);
        assert_eq!(m["env"]["LOG_LEVEL"].as_str(), Some("info"));
        assert_eq!(
            m["env"]["BRAVE_API_KEY"]["file"].as_str(),
            Some("secrets/brave-search.BRAVE_API_KEY")
        );
        assert!(
            !brave
                .manifest
                .as_ref()
                .unwrap()
                .contains("BSA-not-a-real-key")
        );
        let r = report(&i, Path::new("tools"), true);
        assert!(
            !r.contains("BSA-not-a-real-key")
                && r.contains("moved to secrets/brave-search.BRAVE_API_KEY"),
            "{r}"
        );
        assert!(!format!("{i:?}").contains("BSA-not-a-real-key"));
    }

    #[test]
    fn vscode_inputs_and_variables_become_references_and_remote_servers_are_named() {
        let i = import(
            "ws/.vscode/mcp.json",
            r#"{
  // VS Code's file: comments and trailing commas.
  "inputs": [
    { "type": "promptString", "id": "github-token", "description": "GitHub Personal Access Token", "password": true },
  ],
  "servers": {
    "github": {
      "type": "stdio",
      "command": "docker",
      "args": ["run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "ghcr.io/github/github-mcp-server"],
      "env": { "GITHUB_PERSONAL_ACCESS_TOKEN": "${input:github-token}", "HOME_DIR": "${env:HOME}" },
    },
    "notes": {
      "command": "node",
      "args": ["${workspaceFolder}/server.js"],
      "envFile": "${workspaceFolder}/.env",
    },
    "remote": { "type": "http", "url": "https://api.example.com/mcp" },
  },
}"#,
        );
        assert_eq!(i.format, Format::Vscode);
        let gh = named(&i, "github");
        let m = manifest(gh);
        assert_eq!(
            m["env"]["GITHUB_PERSONAL_ACCESS_TOKEN"]["env"].as_str(),
            Some("GITHUB_PERSONAL_ACCESS_TOKEN")
        );
        assert_eq!(m["env"]["HOME_DIR"]["env"].as_str(), Some("HOME"));
        assert!(m.get("preset").is_none());
        assert!(
            gh.notes
                .iter()
                .any(|n| n.contains("GitHub Personal Access Token"))
        );
        let notes = named(&i, "notes");
        let m = manifest(notes);
        let arg = m["command"].as_array().unwrap()[1].as_str().unwrap();
        assert!(
            arg.ends_with("/ws/server.js") && !arg.contains('$'),
            "{arg}"
        );
        assert!(
            notes.notes.iter().any(|n| n.starts_with("envFile")),
            "{:?}",
            notes.notes
        );
        let remote = manifest(named(&i, "remote"));
        assert_eq!(remote["runtime"].as_str(), Some("remote"));
        assert_eq!(remote["url"].as_str(), Some("https://api.example.com/mcp"));
    }

    #[test]
    fn cursor_and_windsurf_are_told_apart() {
        let cursor = import(
            ".cursor/mcp.json",
            r#"{"mcpServers": {"a": {"command": "uvx", "args": ["mcp-server-time"]}, "b": {"url": "https://x.example/mcp", "headers": {"Authorization": "Bearer t"}}}}"#,
        );
        assert_eq!(cursor.format, Format::Cursor);
        // A remote server, its bearer token moved to a secret file.
        let b = named(&cursor, "b");
        let m = manifest(b);
        assert_eq!(m["runtime"].as_str(), Some("remote"));
        assert_eq!(
            m["headers"]["Authorization"]["file"].as_str(),
            Some("secrets/b.Authorization")
        );
        assert_eq!(b.secrets.len(), 1);
        assert_eq!(b.secrets[0].value, "Bearer t");
        assert!(!b.manifest.as_ref().unwrap().contains("Bearer t"));
        let windsurf = import(
            "windsurf/mcp_config.json",
            r#"{"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"], "disabledTools": ["convert_time"], "env": {"TZ": "${env:TZ}"}}, "off": {"command": "x", "disabled": true}, "r": {"serverUrl": "https://y.example/sse"}}}"#,
        );
        assert_eq!(windsurf.format, Format::Windsurf);
        let t = named(&windsurf, "time");
        assert_eq!(manifest(t)["env"]["TZ"]["env"].as_str(), Some("TZ"));
        assert!(t.notes.iter().any(|n| n.starts_with("disabledTools")));
        assert!(
            named(&windsurf, "off")
                .manifest
                .as_ref()
                .unwrap_err()
                .contains("disabled")
        );
        // Carried (Windsurf names no transport), the /sse path said.
        let r = named(&windsurf, "r");
        assert_eq!(manifest(r)["url"].as_str(), Some("https://y.example/sse"));
        assert!(r.notes.iter().any(|n| n.contains("/sse")), "{:?}", r.notes);
        let sse = import(
            ".vscode/mcp.json",
            r#"{"servers": {"old": {"type": "sse", "url": "https://z.example/sse"}}}"#,
        );
        assert!(
            named(&sse, "old")
                .manifest
                .as_ref()
                .unwrap_err()
                .contains("HTTP+SSE")
        );
    }

    #[test]
    fn writing_refuses_to_replace_without_force_and_keeps_secrets_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let i = import(
            "claude_desktop_config.json",
            r#"{"mcpServers": {"k": {"command": "node", "args": ["s.js"], "env": {"API_TOKEN": "t0k"}}}}"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let w = write(&i, dir.path(), false).unwrap();
        assert_eq!(w.manifests, [dir.path().join("k.toml")]);
        let secret = dir.path().join("secrets/k.API_TOKEN");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "t0k\n");
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write(&i, dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("k.toml") && e.contains("--force"), "{e}");
        write(&i, dir.path(), true).unwrap();
    }

    /// An env key is a file name too: one that could leave `secrets/` is
    /// not carried, and nothing is written outside the tools directory.
    #[test]
    fn an_env_key_cannot_write_outside_the_secrets_directory() {
        let i = import(
            "claude_desktop_config.json",
            r#"{"mcpServers": {"a": {"command": "node", "env": {
                "TOKEN/../../evil.toml": "name = evil",
                "../TOKEN": "x",
                "GOOD_TOKEN": "y"}}}}"#,
        );
        let a = named(&i, "a");
        let m = manifest(a);
        assert_eq!(m["env"].as_table().unwrap().len(), 1, "{m}");
        assert_eq!(a.secrets.len(), 1);
        assert!(
            a.notes
                .iter()
                .filter(|n| n.contains("not a variable name"))
                .count()
                == 2
        );
        let dir = tempfile::tempdir().unwrap();
        let tools = dir.path().join("tools");
        write(&i, &tools, false).unwrap();
        assert!(!dir.path().join("evil.toml").exists() && !tools.join("evil.toml").exists());
    }

    #[test]
    fn credentials_in_arguments_and_addresses_are_not_shown_or_are_flagged() {
        let i = import(
            ".cursor/mcp.json",
            r#"{"mcpServers": {
                "pg": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-postgres", "postgresql://u:hunter2@db/x"]},
                "r": {"url": "https://user:hunter3@mcp.example.com/mcp?key=hunter4"}}}"#,
        );
        assert!(
            named(&i, "pg")
                .notes
                .iter()
                .any(|n| n.starts_with("args[2] holds"))
        );
        let r = report(&i, Path::new("t"), false);
        assert!(
            !r.contains("hunter3")
                && !r.contains("hunter4")
                && r.contains("https://mcp.example.com/mcp"),
            "{r}"
        );
        assert!(flag_with_credential("--api-key=abc") && !flag_with_credential("--port=3"));
    }

    #[test]
    fn remote_servers_that_would_not_load_are_not_carried_and_no_value_is_shown() {
        let i = import(
            ".cursor/mcp.json",
            r#"{"mcpServers": {
                "bearer": {"url": "https://a.example/mcp", "headers": {"Authorization": "Bearer sk-PARTIAL-${env:SUFFIX}"}},
                "ws": {"url": "wss://b.example/mcp"},
                "frag": {"url": "https://c.example/mcp#x"},
                "slash": {"url": "https://user:PW/SECRET@d.example/mcp"},
                "twice": {"url": "https://e.example/mcp", "headers": {"Authorization": "a", "authorization": "b"}},
                "num": {"url": "https://f.example/mcp", "headers": {"X-Tenant": 42}}}}"#,
        );
        for name in ["bearer", "ws", "frag", "slash", "twice"] {
            assert!(named(&i, name).manifest.is_err(), "{name} carried");
        }
        let num = manifest(named(&i, "num"));
        assert_eq!(num["headers"]["X-Tenant"].as_str(), Some("42"));
        let r = report(&i, Path::new("t"), false);
        assert!(
            !r.contains("sk-PARTIAL") && !r.contains("SECRET") && !r.contains("PW"),
            "{r}"
        );
    }

    #[test]
    fn a_file_without_servers_says_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claude_desktop_config.json");
        std::fs::write(&path, r#"{"globalShortcut": ""}"#).unwrap();
        let e = read(&path, None).unwrap_err().to_string();
        assert!(
            e.contains("mcpServers") && e.contains("Claude Desktop"),
            "{e}"
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(
            read(&path, None)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }
}
