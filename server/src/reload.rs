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

/// Starts reloading `app`'s clients from `path` (when given) on change and
/// on SIGHUP, until `stop`. Without `[[clients]]`, SIGHUP is logged and
/// ignored (it used to end the process).
///
/// # Errors
///
/// [`ReloadError`].
pub fn spawn(
    app: Arc<App>,
    path: Option<PathBuf>,
    stop: CancellationToken,
) -> Result<(), ReloadError> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ReloadError::Signal)?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = match (&path, app.clients()) {
        (Some(p), Some(_)) => Some(watch(p, tx)?),
        _ => None,
    };
    tokio::spawn(async move {
        // Held for as long as the loop runs.
        let _watcher = watcher;
        loop {
            let cause = tokio::select! {
                () = stop.cancelled() => return,
                _ = hup.recv() => "SIGHUP",
                Some(()) = rx.recv() => "the file changed",
            };
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload(&app, path.as_deref(), cause);
        }
    });
    Ok(())
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
    w.watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| ReloadError::Watch {
            dir,
            file: path.to_path_buf(),
            source,
        })?;
    Ok(w)
}

/// One reload: the file read whole; its clients served, or the error
/// logged and the list kept.
pub fn reload(app: &App, path: Option<&Path>, cause: &str) {
    let Some(clients) = app.clients() else {
        tracing::info!(
            "{cause}: nothing to reload (the server has no [[clients]]; other settings need a restart)"
        );
        return;
    };
    let Some(path) = path else {
        tracing::info!("{cause}: nothing to reload (no --config file)");
        return;
    };
    let served = clients.list().clients().len();
    let settings = match Settings::from_file(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{cause}: {e}; keeping the {served} clients served");
            return;
        }
    };
    let specs = settings.clients.unwrap_or_default();
    if specs.is_empty() {
        tracing::warn!(
            "{cause}: {} has no [[clients]] now: every request but /healthz is refused until it has one (a restart serves without clients)",
            path.display()
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
}
