//! Reading `[[clients]]` again while serving: when the configuration file
//! changes (written in place, or replaced by an editor's rename) and on
//! `SIGHUP`. The file is parsed whole, as at start; a file that does not
//! parse keeps the list served and logs the error naming the key. Only the
//! client list is taken from it: other settings need a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;

/// Changes that arrive within this of each other are one reload (an
/// editor's write is several events).
const SETTLE: Duration = Duration::from_millis(50);

/// How often the file is looked at when no event came.
const POLL: Duration = Duration::from_secs(2);

/// Why the reloader could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file's directory cannot be watched.
    #[error("watching {dir} for changes of {file}: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The SIGHUP handler cannot be installed.
    #[error("installing the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Starts reloading `app`'s clients from `path` on change and on SIGHUP,
/// until `stop`. Without `[[clients]]` (or a file) nothing starts, and
/// SIGHUP ends the process as it always did.
///
/// # Errors
///
/// [`ReloadError`].
pub fn spawn(
    app: Arc<App>,
    path: Option<PathBuf>,
    stop: CancellationToken,
) -> Result<(), ReloadError> {
    let (Some(path), Some(_)) = (path, app.clients()) else {
        return Ok(());
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ReloadError::Signal)?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = watch(&path, tx)?;
    tokio::spawn(async move {
        // Held for as long as the loop runs.
        let _watcher = watcher;
        // What the list was read from last: a change event that leaves the
        // file as it was (another file of the directory, a touch) is not a
        // reload.
        let mut applied = std::fs::read(&path).ok();
        // Besides the watcher: a look every POLL, for the changes no event
        // reports (a symlinked file whose link is swapped in another
        // directory, network filesystems).
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                () = stop.cancelled() => return,
                _ = hup.recv() => "SIGHUP",
                Some(()) = rx.recv() => "the file changed",
                _ = poll.tick() => "the file changed",
            };
            let Some(text) = settled(&path).await else {
                tracing::warn!(
                    "{cause}: {} cannot be read; keeping the clients served",
                    path.display()
                );
                continue;
            };
            while rx.try_recv().is_ok() {}
            if cause != "SIGHUP" && applied.as_deref() == Some(&text[..]) {
                continue;
            }
            let (app2, path2, seen) = (Arc::clone(&app), path.clone(), text.clone());
            // Off the control thread (a long list takes a while to check),
            // and a fault in it is logged, not the end of reloading.
            let done = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    reload(&app2, &path2, &text, cause)
                }))
            })
            .await;
            // What was seen, served or not: a file that stays wrong is
            // reported once, not at every look.
            match done {
                Ok(Ok(text)) => applied = Some(text),
                Ok(Err(_)) | Err(_) => {
                    applied = Some(seen);
                    tracing::error!(
                        "{cause}: reading the clients failed (a fault of this server); keeping the clients served"
                    );
                }
            }
        }
    });
    Ok(())
}

/// The file's content once two reads [`SETTLE`] apart agree (an editor
/// writing in place is not read half-way), at most a second's worth.
async fn settled(path: &Path) -> Option<Vec<u8>> {
    let mut last = None;
    for _ in 0..20 {
        tokio::time::sleep(SETTLE).await;
        let now = tokio::fs::read(path).await.ok()?;
        if last.as_ref() == Some(&now) {
            return Some(now);
        }
        last = Some(now);
    }
    last
}

fn watch(path: &Path, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, ReloadError> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let mut w = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            // Full: a reload is pending already.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| ReloadError::Watch {
        dir: dir.clone(),
        file: path.to_path_buf(),
        source,
    })?;
    let mut dirs = vec![dir];
    if let Some(target_dir) = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
        && std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&target_dir)
    {
        dirs.push(target_dir);
    }
    for dir in dirs {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch {
                dir,
                file: path.to_path_buf(),
                source,
            })?;
    }
    Ok(w)
}

/// One reload of `text`, read from `path`: its clients served, or the
/// error logged and the list kept. Returns the text, as seen.
pub fn reload(app: &App, path: &Path, text: &[u8], cause: &str) -> Vec<u8> {
    let seen = text.to_vec();
    let Some(clients) = app.clients() else {
        return seen;
    };
    let served = clients.list().clients().len();
    let parsed = std::str::from_utf8(text)
        .map_err(|_| format!("{}: not UTF-8", path.display()))
        .and_then(|t| Settings::from_toml_str(t, path).map_err(|e| e.to_string()));
    let settings = match parsed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{cause}: {e}; keeping the {served} clients served");
            return seen;
        }
    };
    let specs = match settings.clients {
        Some(specs) => specs,
        // With [oauth], access tokens are clients enough: no list is a
        // list of none.
        None if settings.oauth.is_some() => Vec::new(),
        None => {
            // Most likely a file caught while it is written; `clients =
            // []` says "nobody" on purpose.
            tracing::warn!(
                "{cause}: {} has no [[clients]]; keeping the {served} clients served (write `clients = []` to refuse every client)",
                path.display()
            );
            return seen;
        }
    };
    if specs.is_empty() && settings.oauth.is_none() {
        tracing::warn!(
            "{cause}: clients = []: every request but /healthz is refused until the list has a client"
        );
    }
    let (added, removed) = clients.replace(&specs);
    let names = |v: &[Arc<str>]| {
        v.iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::info!(
        "{cause}: {} clients served (added: {}; removed: {})",
        specs.len(),
        if added.is_empty() {
            "none".into()
        } else {
            names(&added)
        },
        if removed.is_empty() {
            "none".into()
        } else {
            names(&removed)
        },
    );
    seen
}
