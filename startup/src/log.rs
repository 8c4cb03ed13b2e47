//! Logs through `tracing`: human-readable lines on stderr by default
//! (`toolplane: listening on …`, `toolplane: warning: …`), one JSON object
//! per line with `--log-format json`. `TOOLPLANE_LOG` filters them with
//! `tracing`'s directive syntax (`warn`, `toolplane_server=debug`);
//! the default is `info`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable that filters logs.
pub const FILTER_VAR: &str = "TOOLPLANE_LOG";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `<program>: [warning: |error: ]message`, for people.
    #[default]
    Human,
    /// One JSON object per line (timestamp, level, target, fields), for
    /// log collectors.
    Json,
}

/// The log flag every binary takes (`#[command(flatten)]`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LogArgs {
    /// How logs on stderr are written (filter them with TOOLPLANE_LOG, e.g. `warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "TOOLPLANE_LOG_FORMAT"
    )]
    pub log_format: Format,
}

/// Installs the subscriber. A second call (tests) leaves the first one.
pub fn init(name: &'static str, format: Format) {
    let filter = filter(std::env::var(FILTER_VAR).ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Human => builder
            .with_ansi(false)
            .event_format(Human { name })
            .try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The filter: `TOOLPLANE_LOG` (`info` when unset or unreadable), quieter
/// for the crates that say too much at `info` unless it names them.
fn filter(directives: Option<&str>) -> EnvFilter {
    let mut filter = EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .parse_lossy(directives.unwrap_or_default());
    // A directive names a crate when its target is the crate or a module
    // of it (`wasmtime_wasi_io=debug` does not name `wasmtime_wasi`).
    let names = |krate: &str| {
        directives.is_some_and(|d| {
            d.split(',').any(|directive| {
                let target = directive.trim().split(['=', '[']).next().unwrap_or("");
                target == krate
                    || target
                        .strip_prefix(krate)
                        .is_some_and(|rest| rest.starts_with("::"))
            })
        })
    };
    // rmcp's client logs every upstream session's start at info, with the
    // whole handshake, and its transport's failures at error as Rust values
    // (`reqwest::Error { … }`, a remote server's whole URL, query and all),
    // repeated at every retry: ours say what matters, once, in words, and
    // name the tool.
    if !names("rmcp") {
        filter = filter.add_directive("rmcp=off".parse().expect("a valid directive"));
    }
    // wasmtime-wasi opens an info span (`#[instrument]`) around every WASI
    // call a guest makes, its arguments formatted into the span: a dozen
    // per tool call, none of them ever shown, 7% of a worker's time in the
    // main job (PERF.md, "The main job on a slower machine"). Its warnings
    // still pass.
    // async-nats logs each (re)connection and every failed attempt at
    // info, as Rust values ("client error: nats: IO error"), every 10 ms
    // while a server restarts: the cluster says what matters, once, in
    // words (toolplane_cluster's connection events).
    if !names("async_nats") {
        filter = filter.add_directive("async_nats=warn".parse().expect("a valid directive"));
    }
    if !names("wasmtime_wasi") {
        filter = filter.add_directive("wasmtime_wasi=warn".parse().expect("a valid directive"));
    }
    filter
}

/// The human format: the program's name, the level when it is not `info`,
/// the message, then any other fields as `key=value`.
struct Human {
    name: &'static str,
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "{}: ", self.name)?;
        match *event.metadata().level() {
            Level::ERROR => w.write_str("error: ")?,
            Level::WARN => w.write_str("warning: ")?,
            Level::DEBUG => w.write_str("debug: ")?,
            Level::TRACE => w.write_str("trace: ")?,
            Level::INFO => {}
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::Human;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn wasi_call_spans_are_off_unless_asked_for_and_warnings_pass() {
        use tracing_subscriber::layer::SubscriberExt;
        let enabled = |directives: Option<&str>| {
            let subscriber = tracing_subscriber::registry().with(super::filter(directives));
            tracing::subscriber::with_default(subscriber, || {
                (
                    !tracing::info_span!(target: "wasmtime_wasi::p1", "fd_prestat_get")
                        .is_disabled(),
                    tracing::enabled!(target: "wasmtime_wasi::p1", tracing::Level::WARN),
                    tracing::enabled!(target: "toolplane_pool", tracing::Level::INFO),
                    tracing::enabled!(target: "rmcp::service", tracing::Level::ERROR),
                )
            })
        };
        assert_eq!(enabled(None), (false, true, true, false));
        assert_eq!(enabled(Some("warn")), (false, true, false, false));
        assert_eq!(
            enabled(Some("info,wasmtime_wasi=info")),
            (true, true, true, false)
        );
        assert_eq!(enabled(Some("info,rmcp=error")), (false, true, true, true));
        assert_eq!(
            enabled(Some("info,wasmtime_wasi::p1=info,rmcp::service=error")),
            (true, true, true, true)
        );
        // Another crate whose name begins the same does not count.
        assert_eq!(
            enabled(Some("info,wasmtime_wasi_io=debug,rmcpx=info")),
            (false, true, true, false)
        );
    }

    #[test]
    fn human_lines_name_the_program_and_any_level_but_info() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Human { name: "prog" })
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("listening on {}", "x");
            tracing::warn!(open = 3, "cap reached");
            tracing::error!("bad");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "prog: listening on x\nprog: warning: cap reached open=3\nprog: error: bad\n"
        );
    }
}
