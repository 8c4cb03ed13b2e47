//! Units as people write them in manifests, configuration and command
//! lines: byte sizes (`"16 MiB"`, [`parse_size`], [`fmt_size`], the key value
//! [`Size`]) and durations (`"500ms"`, [`parse_duration_key`]). A leaf every
//! crate uses.

use std::fmt;
use std::time::Duration;

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
pub fn fmt_size(bytes: u64) -> impl fmt::Display {
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

/// A byte size: an integer, or a string such as `"16 MiB"`.
#[derive(Debug, Clone)]
pub enum Size {
    /// An integer.
    Bytes(u64),
    /// Text, parsed by [`parse_size`].
    Text(String),
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size: bytes as a non-negative integer, or a string such as \"16 MiB\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Size {
    /// The size in bytes; the message names `key`.
    ///
    /// # Errors
    ///
    /// The text is not a size.
    pub fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_size(s).ok_or_else(|| {
                format!(
                    "{key} = {s:?} is not a size: write bytes as an integer, or a number with B, KiB, MiB, GiB, kB, MB or GB"
                )
            }),
        }
    }
}

/// Parses the duration `text` of `key`; the message names the key.
///
/// # Errors
///
/// Not a duration, or longer than [`MAX_DURATION`].
pub fn parse_duration_key(key: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{key} = {text:?} is not a duration ({e}): write e.g. \"500ms\", \"5s\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{key} = {text:?} is out of range: at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The longest duration a manifest key takes: a deadline past it is a
/// mistake, and one far enough out overflows the clock it is added to.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16 MiB"), Some(16 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("1 MiBs"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(fmt_size(16 << 20).to_string(), "16 MiB");
        assert_eq!(fmt_size(1000).to_string(), "1000 B");
    }
}
