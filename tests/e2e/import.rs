//! `toolplane import`: real configuration files in each format (written as
//! each application's documentation shows them), imported, loaded and
//! called: the npm filesystem MCP server the process-tool tests use.

use std::path::Path;

use crate::cli::toolplane;
use crate::support::{Dirs, Server, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_of_four_applications_are_imported_loaded_and_called() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = repo
        .join("tests/upstreams/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
        .canonicalize()
        .expect("tests/upstreams/setup.sh installed the filesystem server (./dev test does)");
    let server = server.display().to_string();
    let dirs = Dirs::new();
    let data = dirs
        .data
        .path()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // A remote MCP server on loopback (the Python SDK's, over streamable
    // HTTP) that wants a key in a header.
    let remote = crate::remote_server::HttpServer::start(
        (
            repo.join("target/interop-venv-1.30.0/bin/python")
                .display()
                .to_string(),
            repo.join("tests/upstreams/fastmcp_server.py")
                .display()
                .to_string(),
        ),
        0,
        "plain-text-credential-3f9",
    );
    let url = remote.url();
    // Claude Desktop: `mcpServers`, command/args/env; a credential in
    // plain text.
    let claude = h.join("claude_desktop_config.json");
    std::fs::write(
        &claude,
        format!(
            r#"{{
  "mcpServers": {{
    "fs claude": {{
      "command": "node",
      "args": [{server:?}, {data:?}],
      "env": {{ "FS_API_KEY": "plain-text-credential-3f9" }}
    }}
  }}
}}"#
        ),
    )
    .unwrap();
    // Cursor: the same, and a remote server with its key in plain text.
    std::fs::create_dir_all(h.join(".cursor")).unwrap();
    let cursor = h.join(".cursor/mcp.json");
    std::fs::write(
        &cursor,
        format!(
            r#"{{"mcpServers": {{
  "fs-cursor": {{ "command": "node", "args": [{server:?}, {data:?}] }},
  "rem-cursor": {{ "url": {url:?}, "headers": {{ "X-Api-Key": "plain-text-credential-3f9" }} }}
}}}}"#
        ),
    )
    .unwrap();
    // VS Code: `servers`, `type`, `inputs`, comments, ${workspaceFolder}.
    let ws = h.join("ws");
    std::fs::create_dir_all(ws.join(".vscode")).unwrap();
    std::os::unix::fs::symlink(&data, ws.join("shared")).unwrap();
    let vscode = ws.join(".vscode/mcp.json");
    std::fs::write(
        &vscode,
        format!(
            r#"{{
  // Prompted for when the server starts.
  "inputs": [{{ "type": "promptString", "id": "key", "description": "API key", "password": true }}],
  "servers": {{
    "fs-vscode": {{
      "type": "stdio",
      "command": "node",
      "args": [{server:?}, "${{workspaceFolder}}/shared"],
    }},
  }},
}}"#
        ),
    )
    .unwrap();
    // Windsurf: `mcpServers`, ${{env:…}}, a remote one by `serverUrl`.
    std::fs::create_dir_all(h.join(".codeium/windsurf")).unwrap();
    let windsurf = h.join(".codeium/windsurf/mcp_config.json");
    std::fs::write(
        &windsurf,
        format!(
            r#"{{"mcpServers": {{
  "fs-windsurf": {{ "command": "node", "args": [{server:?}, {data:?}], "env": {{ "HOME": "${{env:HOME}}" }} }},
  "rem-windsurf": {{ "serverUrl": {url:?}, "headers": {{ "X-Api-Key": "plain-text-credential-3f9" }} }}
}}}}"#
        ),
    )
    .unwrap();

    let tools = dirs.tools.path().to_str().unwrap();
    for (file, format) in [
        (&claude, "Claude Desktop"),
        (&cursor, "Cursor"),
        (&vscode, "VS Code"),
        (&windsurf, "Windsurf"),
    ] {
        let file = file.to_str().unwrap();
        // A dry run writes nothing and shows the manifest.
        let dry = toolplane(&["import", file, "--tools", tools]);
        let said = String::from_utf8_lossy(&dry.stdout).into_owned();
        assert!(
            dry.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        assert!(
            said.contains(&format!("a {format} configuration")) && said.contains("dry run"),
            "{said}"
        );
        assert!(!said.contains("plain-text-credential-3f9"), "{said}");
        let out = toolplane(&["import", file, "--tools", tools, "--write"]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!said.contains("plain-text-credential-3f9"), "{said}");
        if format == "Cursor" || format == "Windsurf" {
            assert!(
                said.contains("headers.X-Api-Key: a credential in plain text"),
                "{said}"
            );
        }
    }
    // Written again without --force: refused, naming the file.
    let again = toolplane(&[
        "import",
        claude.to_str().unwrap(),
        "--tools",
        tools,
        "--write",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("fs-claude.toml"));
    // The credential moved to an owner-only file, out of the manifest.
    let manifest = std::fs::read_to_string(dirs.tools.path().join("fs-claude.toml")).unwrap();
    assert!(
        !manifest.contains("plain-text-credential-3f9")
            && manifest.contains("secrets/fs-claude.FS_API_KEY"),
        "{manifest}"
    );

    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    for tool in ["fs-claude", "fs-cursor", "fs-vscode", "fs-windsurf"] {
        let name = format!("{tool}.list_allowed_directories");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (st, v) = crate::rest::post(&c, &s, &name, "{}").await;
            if st == 200 {
                assert!(v.to_string().contains("Allowed directories"), "{v}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {st} {v}\n{}",
                s.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    // The remote servers, imported with their key moved to a secret file.
    for tool in ["rem-cursor", "rem-windsurf"] {
        let manifest =
            std::fs::read_to_string(dirs.tools.path().join(format!("{tool}.toml"))).unwrap();
        assert!(
            manifest.contains("runtime = \"remote\"")
                && !manifest.contains("plain-text-credential-3f9"),
            "{manifest}"
        );
        let name = format!("{tool}.add");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (st, v) = crate::rest::post(&c, &s, &name, r#"{"a":20,"b":22}"#).await;
            if st == 200 {
                assert_eq!(v, serde_json::json!({"result": 42}));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {st} {v}\n{}",
                s.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(!s.stderr().contains("plain-text-credential-3f9"));
}
