//! Debian's `nats-server` on loopback, with JetStream and its own store:
//! for the tests and benches of the cluster (`apt-get install
//! nats-server`; tests/nats/setup.sh installs the pinned version).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `nats-server` child process, killed when dropped.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    store: PathBuf,
    jetstream: bool,
    /// Arguments beyond the port and store (a cluster member's routes).
    extra: Vec<String>,
    log: Arc<Mutex<String>>,
}

impl LocalNats {
    /// Starts one with JetStream, its store in `store`, on a free port.
    ///
    /// # Errors
    ///
    /// The binary is missing, or the server did not listen within 10 s
    /// (its log in the message).
    pub fn start(store: &Path) -> std::io::Result<LocalNats> {
        LocalNats::spawn(store, None, true, Vec::new())
    }

    /// Starts `n` servers routed to each other on loopback as one NATS
    /// cluster with JetStream (`-n s{i}`, `--cluster_name toolplane`),
    /// each with its store under `root`. JetStream answers once they have
    /// elected a metadata leader, a few seconds after.
    ///
    /// # Errors
    ///
    /// As [`LocalNats::start`].
    pub fn cluster(root: &Path, n: usize) -> std::io::Result<Vec<LocalNats>> {
        let free = || -> std::io::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let routes = (0..n)
            .map(|_| free())
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(n);
        for (i, route) in routes.iter().enumerate() {
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats://127.0.0.1:{r}"))
                .collect();
            let extra = vec![
                "-n".into(),
                format!("s{i}"),
                "--cluster_name".into(),
                "toolplane".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".into(),
                others.join(","),
            ];
            out.push(LocalNats::spawn(
                &root.join(format!("s{i}")),
                None,
                true,
                extra,
            )?);
        }
        Ok(out)
    }

    /// Starts one without JetStream (to see it refused).
    ///
    /// # Errors
    ///
    /// As [`LocalNats::start`].
    pub fn without_jetstream(store: &Path) -> std::io::Result<LocalNats> {
        LocalNats::spawn(store, None, false, Vec::new())
    }

    fn spawn(
        store: &Path,
        port: Option<u16>,
        jetstream: bool,
        extra: Vec<String>,
    ) -> std::io::Result<LocalNats> {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_string(), |p| p.to_string()));
        if jetstream {
            cmd.arg("-js").arg("-sd").arg(store);
        }
        cmd.args(&extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("nats-server: {e} (install it: bash tests/nats/setup.sh)"),
                )
            })?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, at)) = line.split_once("Listening for client connections on ")
                    && let Some(p) = at
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(p);
                }
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(p) => break p,
                Err(_) if Instant::now() < deadline && child.try_wait()?.is_none() => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(std::io::Error::other(format!(
                        "nats-server did not listen: {}",
                        log.lock().unwrap_or_else(|p| p.into_inner())
                    )));
                }
            }
        };
        Ok(LocalNats {
            child,
            port,
            store: store.to_path_buf(),
            jetstream,
            extra,
            log,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it has logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Kills it (SIGKILL) and starts it again on the same port and store.
    ///
    /// # Errors
    ///
    /// As [`LocalNats::start`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = LocalNats::spawn(
            &self.store,
            Some(self.port),
            self.jetstream,
            std::mem::take(&mut self.extra),
        )?;
        Ok(())
    }

    /// Kills it (SIGKILL), for good.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
