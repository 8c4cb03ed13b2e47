//! Resident memory of this process, from `/proc/self/smaps_rollup` (the
//! kernel's exact sum) or `/proc/self/statm` where that file is missing.

use serde::Serialize;

/// Where a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `Rss:` of `/proc/self/smaps_rollup`.
    SmapsRollup,
    /// Resident pages of `/proc/self/statm` × 4 KiB.
    Statm,
    /// A server's `process_resident_memory_bytes` (its `/metrics`).
    ServerMetrics,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds from the start of the run.
    pub t_s: f64,
    /// Resident bytes.
    pub rss_bytes: u64,
}

/// The resident set size in bytes, and where it was read.
pub fn resident() -> Option<(u64, Source)> {
    if let Ok(text) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        let kb = text.lines().find_map(|l| {
            let rest = l.strip_prefix("Rss:")?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        });
        if let Some(kb) = kb {
            return Some((kb * 1024, Source::SmapsRollup));
        }
    }
    // statm counts pages; the page size is 4 KiB on the platforms this
    // fallback serves (smaps_rollup exists since Linux 4.14).
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096, Source::Statm))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_plausible_rss() {
        let (bytes, _) = super::resident().expect("procfs is readable on Linux");
        assert!(bytes > 1 << 20 && bytes < 1 << 40, "{bytes}");
        // Touching 64 MiB shows.
        let v = std::hint::black_box(vec![1u8; 64 << 20]);
        let (after, _) = super::resident().unwrap();
        assert!(after >= bytes + (32 << 20), "{bytes} -> {after}");
        drop(v);
    }
}
