//! The server with a hostile tools directory: broken tools are reported,
//! logged and not retried, the tools beside them serve, and an idle server
//! reloads nothing.

use std::time::{Duration, Instant};

use crate::rest::post;
use crate::support::{Dirs, Server, client, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tool_is_reported_and_not_retried_and_a_failed_reload_is_logged() {
    let dirs = Dirs::new();
    let t = dirs.tools.path();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(t.join("fifo.wasm"))
            .status()
            .unwrap()
            .success()
    );
    for (name, module) in [("bad.fifo", "fifo.wasm"), ("bad.zero", "/dev/zero")] {
        std::fs::write(
            t.join(format!("{name}.toml")),
            format!("name = \"{name}\"\ndescription = \"d\"\nmodule = \"{module}\"\n"),
        )
        .unwrap();
    }
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "broken tools do not make the server unready"
    );
    let r = c
        .post(s.url("/v1/tools/bad.fifo/call"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    assert!(
        r.headers().get("retry-after").is_none(),
        "{:?}",
        r.headers()
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("a FIFO, not a regular file"), "{body}");
    assert_eq!(post(&c, &s, "echo", "{}").await.0, 200);
    // The log is read by a thread of this test: wait for it (bounded).
    s.logged(&["fifo.wasm", "a FIFO", "a character device"])
        .await;
    // A reload that fails is logged; the old version keeps serving.
    std::fs::write(t.join("echo.wasm"), b"\0asm\x01\0\0\0junk").unwrap();
    s.logged(&["echo.wasm: tool echo:"]).await;
    assert_eq!(
        post(&c, &s, "echo", "{}").await.0,
        200,
        "the old echo serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_watching_its_tools_reloads_nothing_in_ten_seconds() {
    let dirs = Dirs::new();
    // Tools of their own names: a file tool named like a built-in replaces
    // it once loaded, a registry change that may come after start-up.
    let t = dirs.tools.path();
    for e in std::fs::read_dir(t).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    for i in 0..8 {
        std::fs::write(
            t.join(format!("idle{i}.toml")),
            format!("name = \"idle{i}\"\ndescription = \"echo\"\nmodule = \"echo.wasm\"\n"),
        )
        .unwrap();
    }
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let url = s.url("/metrics");
    // Settled: every tool loaded (their `Loaded` changes come first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c, &url, "toolplane_tools{state=\"loading\"}").await > 0.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = metric(&c, &url, "toolplane_registry_version").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A new connection: the server ends a keep-alive connection idle for
    // its header timeout (10 s), which the old one just was.
    let after = metric(&client(), &url, "toolplane_registry_version").await;
    assert_eq!(before, after, "the registry changed while nothing did");
}
