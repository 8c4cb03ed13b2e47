//! Byte sizes as manifests and messages write them (`"16 MiB"`).

use std::fmt;

/// Parses `"16 MiB"`, `"512KiB"`, `"1 GB"`, `"4096"`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a byte count for messages: `16 MiB`, `1000 B`.
pub(crate) fn fmt_size(bytes: u64) -> impl fmt::Display {
    struct S(u64);
    impl fmt::Display for S {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let n = self.0;
            for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
                if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                    return write!(f, "{} {unit}", n >> shift);
                }
            }
            write!(f, "{n} B")
        }
    }
    S(bytes)
}
