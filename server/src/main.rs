//! `toolplane`: serve the engine and its tools over MCP and HTTP, list the
//! tools, call one, or check a configuration.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use toolplane_server::config::{self, Settings};
use toolplane_server::serve::{self, Failure, Listen};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "toolplane",
    version,
    about = "A data plane for tool calls: contained WASI and process tools, and remote MCP servers, over MCP and HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: toolplane_startup::log::LogArgs,
}

#[derive(clap::Args, Clone)]
struct Sources {
    /// Tools directory (`<tool>.toml` beside `<tool>.wasm`), served with the built-in tools.
    #[arg(long, value_name = "DIR")]
    tools: Option<PathBuf>,
    /// Data directory of the fs tools (default: under the user's data dir).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Configuration file (toolplane.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP (streamable HTTP at /mcp, and/or stdio), REST calls, /healthz, /readyz and /metrics.
    Serve {
        #[command(flatten)]
        sources: Sources,
        /// Listen for HTTP here (default 127.0.0.1:7070; HTTP is on unless only --stdio is given).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Serve MCP on stdin/stdout.
        #[arg(long)]
        stdio: bool,
        /// Require `Authorization: Bearer TOKEN` on everything but /healthz.
        #[arg(long, env = "TOOLPLANE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Serve as a node of the cluster on this NATS server
        /// (nats://host:port; the rest from [cluster], or its defaults).
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// This node's name in the cluster (default: [cluster] node, or the host's name).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// The tools: name, description, permissions, limits, load state.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Call one tool with a JSON input; the output on stdout, exit 1 on error.
    Call {
        /// The tool.
        tool: String,
        /// Its input, a JSON object.
        input: String,
        #[command(flatten)]
        sources: Sources,
    },
    /// Check the configuration, every manifest and every module.
    Check {
        #[command(flatten)]
        sources: Sources,
    },
    /// Make tools of the MCP servers in a Claude Desktop, Cursor, VS Code
    /// or Windsurf configuration (process tools, remote servers): a dry run
    /// unless --write.
    Import {
        /// The configuration (claude_desktop_config.json, .cursor/mcp.json,
        /// .vscode/mcp.json, mcp_config.json).
        file: PathBuf,
        /// The tools directory to write the manifests into.
        #[arg(long, value_name = "DIR")]
        tools: PathBuf,
        /// Write the manifests (and secret files); without it, show them.
        #[arg(long)]
        write: bool,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
        /// The file's format, when its name and content do not say.
        #[arg(long, value_enum)]
        format: Option<toolplane_server::import::Format>,
    },
    /// Read the audit log: one line per call (or JSON), oldest first; says
    /// where a file ends torn (a crash) or a record is corrupted.
    Audit {
        /// The configuration whose [audit] dir to read.
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// The audit directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only this client's calls (`local`, `anonymous` for calls without one).
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// Only calls of tools matching this name or glob (`files.*`).
        #[arg(long, value_name = "TOOL")]
        tool: Option<String>,
        /// Only calls since: a duration ago (`10m`) or a time (RFC 3339).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Keep printing calls as they are recorded.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The cluster on NATS: `toolplane cluster status` shows its live
    /// nodes and, per partition, the calls waiting, in flight and
    /// delivered again, and the oldest.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Bearer tokens: `toolplane token hash` reads a token on stdin and
    /// prints the `token_sha256` line for toolplane.toml.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The live nodes and each partition's calls, read from NATS (this
    /// does not join the cluster).
    Status {
        /// The configuration whose [cluster] to read.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The NATS server (nats://host:port), instead of [cluster] nats.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Read a token on stdin (one line), print `token_sha256 = "..."`.
    Hash,
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// List the tools.
    List {
        #[command(flatten)]
        sources: Sources,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the built-in tools (manifest and module each) into DIR, as a
    /// tools directory to start from.
    Install {
        /// The directory (created if missing).
        dir: std::path::PathBuf,
    },
}

fn settings(sources: &Sources) -> Result<Settings, Failure> {
    let mut s = match &sources.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    s.engine = s.engine.with_env()?;
    if let Some(t) = &sources.tools {
        s.tools = Some(t.clone());
    }
    if let Some(d) = &sources.data {
        s.data = Some(d.clone());
    }
    if let Some(dir) = &s.tools
        && !dir.is_dir()
    {
        return Err(Failure::Usage(format!(
            "--tools {}: not a directory",
            dir.display()
        )));
    }
    Ok(s)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Serve {
            sources,
            http,
            stdio,
            token,
            cluster,
            node,
        } => {
            let mut s = settings(&sources)?;
            if let Some(url) = cluster {
                let mut o = s.cluster.take().unwrap_or_else(|| {
                    toolplane_cluster::Options::new(
                        Vec::new(),
                        toolplane_cluster::Options::default_node(),
                    )
                });
                o.nats = vec![url];
                s.cluster = Some(o);
            }
            if let Some(name) = node {
                let Some(o) = s.cluster.as_mut() else {
                    return Err(Failure::Usage(
                        "--node names this node in a cluster: give --cluster URL or [cluster] too"
                            .into(),
                    ));
                };
                o.node = name;
            }
            if let Some(o) = &s.cluster {
                o.validate()
                    .map_err(|m| Failure::Usage(format!("--cluster: {m}")))?;
            }
            match token {
                // `--token "$TOKEN"` with TOKEN unset, or TOOLPLANE_TOKEN=
                // set empty: serving without authentication is not what
                // was asked.
                Some(t) if t.trim().is_empty() => {
                    return Err(Failure::Usage(
                        "--token (or TOOLPLANE_TOKEN) is empty: is the variable it was read from unset or blank? Give the token, or leave --token out to serve without one"
                            .into(),
                    ));
                }
                Some(_) if s.clients.is_some() || s.oauth.is_some() => {
                    return Err(Failure::Usage(
                        "--token (or TOOLPLANE_TOKEN) and [[clients]] or [oauth] in the configuration: give one; with them each client has its own token"
                            .into(),
                    ));
                }
                Some(t) => s.server.token = Some(config::TokenDigest::of(&t)),
                None => {}
            }
            if let Some(a) = &http {
                s.server.http =
                    config::parse_addr(a).map_err(|m| Failure::Usage(format!("--http: {m}")))?;
            }
            let listen = Listen {
                http: (http.is_some() || !stdio).then_some(s.server.http),
                stdio,
            };
            drop(stdout);
            serve::serve(s, listen, sources.config.clone())
        }
        Command::Tools {
            command: ToolsCommand::List { sources, json },
        } => serve::tools_list(&settings(&sources)?, json, &mut stdout),
        Command::Tools {
            command: ToolsCommand::Install { dir },
        } => toolplane_pool::builtin::install(&dir)
            .map(|written| {
                for m in written {
                    let _ = writeln!(stdout, "{}", m.display());
                }
            })
            .map_err(Failure::io(format!(
                "installing the built-in tools in {}",
                dir.display()
            ))),
        Command::Call {
            tool,
            input,
            sources,
        } => serve::call(&settings(&sources)?, &tool, &input, &mut stdout),
        Command::Check { sources } => serve::check(&settings(&sources)?, &mut stdout),
        Command::Import {
            file,
            tools,
            write,
            force,
            format,
        } => {
            use toolplane_server::import;
            let imported = import::read(&file, format)?;
            let say = |out: &mut std::io::StdoutLock<'_>, text: &str| {
                out.write_all(text.as_bytes())
                    .map_err(Failure::io("writing"))
            };
            if write {
                let written = import::write(&imported, &tools, force)?;
                say(&mut stdout, &import::report(&imported, &tools, false))?;
                say(
                    &mut stdout,
                    &format!(
                        "\nwrote {} manifests and {} secret files (mode 0600) in {}; `toolplane check --tools {}` loads them\n",
                        written.manifests.len(),
                        written.secrets.len(),
                        tools.display(),
                        tools.display()
                    ),
                )
            } else {
                say(&mut stdout, &import::report(&imported, &tools, true))?;
                say(
                    &mut stdout,
                    "\ndry run: nothing written; --write writes these (--force replaces files that exist)\n",
                )
            }
        }
        Command::Audit {
            config,
            dir,
            client,
            tool,
            since,
            follow,
            json,
        } => {
            use toolplane_server::audit;
            let dir = match (dir, config) {
                (Some(d), _) => d,
                (None, Some(c)) => {
                    Settings::from_file(&c)?
                        .audit
                        .map(|a| a.dir)
                        .ok_or_else(|| {
                            Failure::Usage(format!("{}: no [audit] table (audit.dir)", c.display()))
                        })?
                }
                (None, None) => {
                    return Err(Failure::Usage(
                        "toolplane audit: give --config FILE (its [audit] dir) or --dir DIR".into(),
                    ));
                }
            };
            let query = audit::Query {
                client,
                tool: tool
                    .map(|t| {
                        toolplane_pool::names::Glob::parse(&t)
                            .map_err(|e| Failure::Usage(format!("--tool {t:?}: {e}")))
                    })
                    .transpose()?,
                since: since
                    .map(|s| audit::parse_since(&s).map_err(Failure::Usage))
                    .transpose()?,
                json,
                follow,
            };
            if !dir.is_dir() {
                return Err(Failure::Usage(format!(
                    "{}: no such directory (the audit log's dir)",
                    dir.display()
                )));
            }
            let found = audit::show(&dir, &query, &mut stdout, &mut std::io::stderr())?;
            if found.corrupt > 0 {
                return Err(Failure::Problems(vec![format!(
                    "{} corrupted records in {} (their offsets above); the records around them were read",
                    found.corrupt,
                    dir.display()
                )]));
            }
            Ok(())
        }
        Command::Cluster {
            command:
                ClusterCommand::Status {
                    config,
                    cluster,
                    json,
                },
        } => {
            let mut o = match &config {
                Some(c) => Settings::from_file(c)?.cluster,
                None => None,
            };
            if let Some(url) = cluster {
                let o = o.get_or_insert_with(|| {
                    toolplane_cluster::Options::new(Vec::new(), "status".into())
                });
                o.nats = vec![url];
            }
            let Some(o) = o else {
                return Err(Failure::Usage(
                    "toolplane cluster status: give --cluster URL or --config FILE (its [cluster] nats)"
                        .into(),
                ));
            };
            serve::cluster_status(&o, json, &mut stdout)
        }
        Command::Token {
            command: TokenCommand::Hash,
        } => {
            use std::io::{BufRead, Write};
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(Failure::io("reading the token on stdin"))?;
            let token = line.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                return Err(Failure::Usage("no token on stdin".into()));
            }
            writeln!(
                stdout,
                "token_sha256 = \"{}\"",
                config::TokenDigest::of(token).to_hex()
            )
            .map_err(Failure::io("writing"))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    toolplane_startup::init("toolplane", cli.log.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(e.code())
        }
    }
}
