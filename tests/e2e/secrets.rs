//! Secrets by reference: a process tool's `env` from the server's own
//! environment (`{ env = … }`) or an owner-only file (`{ file = … }`),
//! resolved at load; the values reach the program and are shown nowhere.

use std::os::unix::fs::PermissionsExt as _;

use crate::cli::toolplane_with;
use crate::support::{Dirs, Server, client};

const FROM_ENV: &str = "env-s3cret-7c1d";
const FROM_FILE: &str = "file-s3cret-1b9e";

fn write(path: &std::path::Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `secretive` prints its three variables; `exposed` names a file others
/// can read.
fn tools(dirs: &Dirs) {
    let t = dirs.tools.path();
    write(&t.join("api-key"), &format!("{FROM_FILE}\n"), 0o600);
    write(&t.join("open-key"), "open\n", 0o644);
    let script = r#"printf '{"a":"%s","b":"%s","c":"%s"}' "$A" "$B" "$C""#;
    std::fs::write(
        t.join("secretive.toml"),
        format!(
            "name = \"secretive\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n\
             [env]\nA = {{ env = \"TP_E2E_SECRET\" }}\nB = {{ file = \"api-key\" }}\nC = \"plain\"\nAPI_TOKEN = \"literal\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        t.join("exposed.toml"),
        "name = \"exposed\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"true\"]\n\
         [env]\nX = { file = \"open-key\" }\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_by_reference_reach_the_program_and_are_shown_nowhere() {
    let dirs = Dirs::new();
    tools(&dirs);
    let s = Server::start(&dirs, &[], &[("TP_E2E_SECRET", FROM_ENV)], None);
    let c = client();
    let (st, v) = crate::rest::post(&c, &s, "secretive", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"a": FROM_ENV, "b": FROM_FILE, "c": "plain"})
    );

    // A file others can read is refused at load, naming it and its mode.
    let (st, v) = crate::rest::post(&c, &s, "exposed", "{}").await;
    assert_eq!(st, 424, "{v}");
    let why = v.to_string();
    assert!(
        why.contains("env.X") && why.contains("open-key") && why.contains("0644"),
        "{why}"
    );

    let listed = c
        .get(s.url("/v1/tools"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = s.stderr();
    // A credential written in the manifest is warned about, by key.
    assert!(
        log.contains("env.API_TOKEN is written in the manifest") && !log.contains("env.C is"),
        "{log}"
    );
    let (tools, data) = (
        dirs.tools.path().to_str().unwrap(),
        dirs.data.path().to_str().unwrap(),
    );
    let secret_env = [("TP_E2E_SECRET", FROM_ENV)];
    let listing = toolplane_with(
        &["tools", "list", "--json", "--tools", tools, "--data", data],
        &secret_env,
    );
    let check = toolplane_with(&["check", "--tools", tools, "--data", data], &secret_env);
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check_text.contains("open-key"), "{check_text}");
    for (what, text) in [
        ("/v1/tools", listed),
        ("the server's log", log),
        (
            "tools list",
            String::from_utf8_lossy(&listing.stdout).into_owned(),
        ),
        ("check", check_text),
    ] {
        assert!(
            !text.contains(FROM_ENV) && !text.contains(FROM_FILE),
            "{what} shows a secret:\n{text}"
        );
    }
}

/// A variable the server does not have is a load error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_is_a_load_error_naming_it() {
    let dirs = Dirs::new();
    tools(&dirs);
    let s = Server::start(&dirs, &[], &[], None);
    let (st, v) = crate::rest::post(&client(), &s, "secretive", "{}").await;
    assert_eq!(st, 424, "{v}");
    assert!(
        v.to_string().contains("env.A") && v.to_string().contains("TP_E2E_SECRET"),
        "{v}"
    );
}
