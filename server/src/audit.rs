//! `[audit]`: the audit log's settings (the log itself is the
//! `toolplane-audit` crate), and what a call's record holds.
//!
//! ```toml
//! [audit]
//! dir = "audit"                  # turns it on; relative to the file
//! durability = "async"           # or "before-answer": the answer waits for its record's fdatasync
//! max_batch = 256                # a batch is written when this many records wait…
//! max_delay = "2ms"              # …or this long after the last one (async; before-answer
//!                                # writes a batch as soon as the last is on disk)
//! capacity = 65536               # records the ring holds
//! max_queued = "64 MiB"          # and bytes of inputs, with arguments = true
//! on_full = "wait"               # or "drop-and-count" (async only)
//! full_wait = "1s"               # how long a call waits for room
//! max_file = "64 MiB"            # a new file past this size
//! keep_files = 16                # the oldest removed past this many
//! keep_age = "30d"               # and those older than this (default: kept by count)
//! node = "tp-1"                  # named in each record (default: the host's name; in a cluster, [cluster] node)
//! arguments = false              # keep each call's input (off: see below)
//! ```
//!
//! Inputs are left out unless `arguments = true`: they are the callers'
//! data (file contents, queries, personal data) and the log is kept for
//! weeks by people who audit calls, not read their contents; the input's
//! SHA-256 and size tell which input a call had when it is at hand.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toolplane_audit::{Durability, OnFull, Options};

use crate::token::parse_duration_in;

/// The `[audit]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    dir: Option<std::path::PathBuf>,
    arguments: Option<bool>,
    max_batch: Option<usize>,
    max_delay: Option<String>,
    capacity: Option<usize>,
    max_queued: Option<String>,
    durability: Option<String>,
    on_full: Option<String>,
    full_wait: Option<String>,
    max_file: Option<String>,
    keep_files: Option<usize>,
    keep_age: Option<String>,
    node: Option<String>,
}

/// Most records a ring may hold.
/// (The ring is allocated whole at start; the inputs its records hold when
/// `arguments = true` are bounded by `max_queued`.)
pub const MAX_CAPACITY: usize = 1 << 20;

/// The log's options from `[audit]`, paths relative to `base`.
///
/// # Errors
///
/// A message naming the key and what is accepted.
pub fn parse(f: AuditFile, base: &Path) -> Result<Options, String> {
    let dir = f
        .dir
        .ok_or("audit.dir: missing: the directory of the audit files (it turns the log on)")?;
    let mut o = Options::new(base.join(dir));
    o.arguments = f.arguments.unwrap_or(false);
    let count = |key: &str, v: Option<usize>, max: usize, default: usize| match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!("audit.{key} = {n}: accepted 1..={max}")),
    };
    o.max_batch = count("max_batch", f.max_batch, 1 << 20, o.max_batch)?;
    o.capacity = count("capacity", f.capacity, MAX_CAPACITY, o.capacity)?;
    o.keep_files = count("keep_files", f.keep_files, 1 << 20, o.keep_files)?;
    if o.max_batch > o.capacity {
        return Err(format!(
            "audit.max_batch = {} is above audit.capacity = {}: a batch is at most the ring",
            o.max_batch, o.capacity
        ));
    }
    let duration = |key: &str, v: &Option<String>, min: Duration, max: Duration| {
        v.as_deref()
            .map(|t| parse_duration_in(t, min, max).map_err(|m| format!("audit.{key}: {m}")))
            .transpose()
    };
    let ms = Duration::from_millis;
    if let Some(d) = duration(
        "max_delay",
        &f.max_delay,
        Duration::from_micros(100),
        ms(1000),
    )? {
        o.max_delay = d;
    }
    if let Some(d) = duration("full_wait", &f.full_wait, Duration::ZERO, ms(60_000))? {
        o.full_wait = d;
    }
    o.keep_age = duration(
        "keep_age",
        &f.keep_age,
        Duration::from_secs(60),
        Duration::from_secs(100 * 365 * 86_400),
    )?;
    if let Some(t) = &f.max_queued {
        o.max_queued = toolplane_pool::manifest::parse_size(t)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (64 << 10..=4 << 30).contains(n))
            .ok_or_else(|| {
                format!("audit.max_queued = {t:?}: accepted a size from \"64 KiB\" to \"4 GiB\"")
            })?;
    }
    if let Some(t) = &f.max_file {
        o.max_file = toolplane_pool::manifest::parse_size(t)
            .filter(|n| (4096..=1 << 30).contains(n))
            .ok_or_else(|| {
                format!("audit.max_file = {t:?}: accepted a size from \"4 KiB\" to \"1 GiB\"")
            })?;
    }
    o.durability = match f.durability.as_deref() {
        None | Some("async") => Durability::Async,
        Some("before-answer") => Durability::BeforeAnswer,
        Some(other) => {
            return Err(format!(
                "audit.durability = {other:?}: accepted \"async\", \"before-answer\""
            ));
        }
    };
    o.on_full = match f.on_full.as_deref() {
        None | Some("wait") => OnFull::Wait,
        Some("drop-and-count") if o.durability == Durability::BeforeAnswer => {
            return Err(
                "audit.on_full = \"drop-and-count\" with durability = \"before-answer\": an answer \
                 waits for its record, so a record cannot be dropped; accepted \"wait\""
                    .into(),
            );
        }
        Some("drop-and-count") => OnFull::DropAndCount,
        Some(other) => {
            return Err(format!(
                "audit.on_full = {other:?}: accepted \"wait\", \"drop-and-count\""
            ));
        }
    };
    o.node = match f.node {
        Some(n) if !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control) => {
            Arc::from(n)
        }
        Some(n) => {
            return Err(format!(
                "audit.node = {n:?}: accepted 1 to 255 characters, none of them control characters"
            ));
        }
        None => Arc::from(host_name()),
    };
    Ok(o)
}

/// The host's name (Linux), else `local`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Which records `toolplane audit` prints.
#[derive(Debug, Default)]
pub struct Query {
    /// Only this client's.
    pub client: Option<String>,
    /// Only tools matching this name or glob.
    pub tool: Option<toolplane_pool::names::Glob>,
    /// Only records taken at or after this time.
    pub since: Option<std::time::SystemTime>,
    /// One JSON object per line.
    pub json: bool,
    /// Keep reading as records are written (until interrupted).
    pub follow: bool,
}

impl Query {
    fn wants(&self, r: &toolplane_audit::Record) -> bool {
        self.client.as_deref().is_none_or(|c| *r.client == *c)
            && self.tool.as_ref().is_none_or(|g| g.matches(&r.tool))
            && self.since.is_none_or(|t| r.time() >= t)
    }
}

/// Parses `--since`: a duration ago (`10m`, `2h`) or a time (RFC 3339).
///
/// # Errors
///
/// A message naming what is accepted.
pub fn parse_since(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(std::time::SystemTime::now()
            .checked_sub(d)
            .unwrap_or(std::time::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!(
            "--since {text:?}: accepted a duration ago (\"10m\", \"2h\") or a time (\"2026-12-07T10:00:00Z\")"
        )
    })
}

/// What reading the log found besides records.
#[derive(Debug, Default)]
pub struct Findings {
    /// Records printed.
    pub printed: u64,
    /// Corrupted frames (their offsets were printed).
    pub corrupt: u64,
    /// Torn tails (their offsets were printed).
    pub torn: u64,
}

/// Prints the records of the log in `dir` that `q` wants to `out`, and
/// what is wrong with the files to `err`; with `q.follow`, goes on
/// printing records as they are written.
///
/// # Errors
///
/// The directory or a file cannot be read, or `out` cannot be written.
pub fn show(
    dir: &Path,
    q: &Query,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<Findings, toolplane_audit::AuditError> {
    use toolplane_audit::read::{Item, Problem, scan};
    let io = |path: &Path, doing: &'static str| {
        let path = path.to_owned();
        move |source| toolplane_audit::AuditError::Io {
            path,
            doing,
            source,
        }
    };
    let mut found = Findings::default();
    // The file being read and how far; a file is read to its end (a torn
    // tail named) once a newer one exists.
    let mut at: Option<(u64, std::path::PathBuf, u64)> = None;
    loop {
        let files = toolplane_audit::log::list(dir)?;
        let newest = files.last().map(|(i, _)| *i);
        for (index, path) in &files {
            let from = match &at {
                Some((i, _, _)) if index < i => continue,
                // A name not on a file, said once.
                Some((i, _, u64::MAX)) if index == i => continue,
                Some((i, _, off)) if index == i => *off,
                _ => 0,
            };
            let complete = !q.follow || Some(*index) != newest;
            let items_and_stop = match toolplane_audit::read::read_file(path, from)? {
                // Removed as old since it was listed.
                None => continue,
                Some(Err(p)) => (vec![Item::Problem(p)], u64::MAX),
                Some(Ok(bytes)) => scan(path, &bytes, from, complete),
            };
            let (items, stop) = items_and_stop;
            for item in items {
                match item {
                    Item::Record(r) if q.wants(&r) => {
                        found.printed += 1;
                        if q.json {
                            serde_json::to_writer(&mut *out, &r)
                                .map_err(|e| io(dir, "printing")(e.into()))?;
                            writeln!(out).map_err(io(dir, "printing"))?;
                        } else {
                            writeln!(out, "{}", r.line()).map_err(io(dir, "printing"))?;
                        }
                    }
                    Item::Record(_) => {}
                    Item::Problem(p) => {
                        match p {
                            Problem::TornTail { .. } => found.torn += 1,
                            _ => found.corrupt += 1,
                        }
                        let _ = writeln!(err, "toolplane audit: {p}");
                    }
                }
            }
            at = Some((*index, path.clone(), stop));
        }
        if !q.follow {
            return Ok(found);
        }
        out.flush().map_err(io(dir, "printing"))?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Options, String> {
        #[derive(Deserialize)]
        struct Only {
            audit: AuditFile,
        }
        let f: Only = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(f.audit, Path::new("/etc/toolplane"))
    }

    #[test]
    fn audit_settings_are_read_and_bad_ones_named() {
        let o = parse_str("[audit]\ndir = \"audit\"\n").unwrap();
        assert_eq!(o.dir, Path::new("/etc/toolplane/audit"));
        assert_eq!((o.max_batch, o.durability), (256, Durability::Async));
        let o = parse_str(
            "[audit]\ndir = \"/var/a\"\ndurability = \"before-answer\"\nmax_delay = \"1ms\"\nkeep_age = \"7d\"\nnode = \"n1\"\n",
        )
        .unwrap();
        assert_eq!(o.durability, Durability::BeforeAnswer);
        assert_eq!(o.max_delay, Duration::from_millis(1));
        assert_eq!(&*o.node, "n1");
        let o =
            parse_str("[audit]\ndir = \"a\"\narguments = true\nmax_queued = \"1 MiB\"\n").unwrap();
        assert_eq!((o.arguments, o.max_queued), (true, 1 << 20));
        for (text, says) in [
            ("arguments = true", "audit.dir: missing"),
            (
                "dir = \"a\"\ndurability = \"sync\"",
                "audit.durability = \"sync\"",
            ),
            (
                "dir = \"a\"\ndurability = \"before-answer\"\non_full = \"drop-and-count\"",
                "cannot be dropped",
            ),
            ("dir = \"a\"\nmax_batch = 0", "audit.max_batch = 0"),
            (
                "dir = \"a\"\nmax_queued = \"1 KiB\"",
                "audit.max_queued = \"1 KiB\"",
            ),
            (
                "dir = \"a\"\ncapacity = 8\nmax_batch = 16",
                "above audit.capacity",
            ),
            ("dir = \"a\"\nmax_delay = \"5s\"", "audit.max_delay"),
            ("dir = \"a\"\nmax_file = \"1 KiB\"", "audit.max_file"),
            ("dir = \"a\"\nnode = \"a\\nb\"", "audit.node"),
        ] {
            let e = parse_str(&format!("[audit]\n{text}\n")).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
