//! Units as profiles write them: rates (`"10k/s"`), durations (`"30s"`,
//! `"250us"`), sizes (`"1 KiB"`), and their display.

use std::fmt;
use std::time::Duration;

/// What a rate looks like, for error messages.
pub const RATE_FORMS: &str = "a rate such as \"10k/s\", \"2500/s\", \"1.5M/s\" or \"600/min\"";
/// What a duration looks like, for error messages.
pub const DURATION_FORMS: &str = "a duration such as \"30s\", \"250ms\", \"50us\" or \"30m\"";
/// What a size looks like, for error messages.
pub const SIZE_FORMS: &str =
    "a size such as \"64 B\", \"1 KiB\" or \"16 KiB\" (B, KiB, MiB, GiB, kB, MB, GB)";

/// Parses `"10k/s"`, `"2500/s"`, `"1.5M/s"`, `"600/min"` into events per
/// second.
pub fn parse_rate(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, per) = t.split_once('/')?;
    let num = num.trim();
    let (digits, mult) = match num.char_indices().last()? {
        (i, 'k' | 'K') => (&num[..i], 1e3),
        (i, 'M') => (&num[..i], 1e6),
        _ => (num, 1.0),
    };
    let n: f64 = digits.trim().parse().ok()?;
    let secs = match per.trim() {
        "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "min" => 60.0,
        _ => return None,
    };
    let rate = n * mult / secs;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// Parses a humantime duration (`"30s"`, `"250us"`, `"1h 30m"`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Parses a size (`"1 KiB"`, `"64 B"`, `"4096"`).
pub fn parse_size(text: &str) -> Option<u64> {
    toolplane_pool::manifest::parse_size(text)
}

/// A unit-bearing value as a profile writes it: it deserializes itself
/// from its text (or, for sizes, an integer), keeping the text for
/// messages; `value` is `None` when the text is not in the unit's forms.
/// Range checks belong to the section that knows the key and the range.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<U: Unit> {
    /// As written (quoted when it was a string).
    pub text: String,
    /// What it means, when it parses.
    pub value: Option<U::Value>,
}

/// A unit a profile writes values in.
pub trait Unit {
    /// What a value means.
    type Value: Clone + PartialEq + fmt::Debug;
    /// What the unit's values look like, for messages.
    const FORMS: &'static str;
    /// Parses a string value.
    fn parse(text: &str) -> Option<Self::Value>;
    /// Takes an integer value, where the unit has one.
    fn integer(_n: i64) -> Option<Self::Value> {
        None
    }
}

/// Events per second (`"10k/s"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate;
/// A duration (`"30s"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time;
/// A size in bytes (`"1 KiB"`, or an integer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size;

impl Unit for Rate {
    type Value = f64;
    const FORMS: &'static str = RATE_FORMS;
    fn parse(text: &str) -> Option<f64> {
        parse_rate(text)
    }
}

impl Unit for Time {
    type Value = Duration;
    const FORMS: &'static str = DURATION_FORMS;
    fn parse(text: &str) -> Option<Duration> {
        parse_duration(text)
    }
}

impl Unit for Size {
    type Value = u64;
    const FORMS: &'static str = SIZE_FORMS;
    fn parse(text: &str) -> Option<u64> {
        parse_size(text)
    }
    fn integer(n: i64) -> Option<u64> {
        u64::try_from(n).ok()
    }
}

impl<'de, U: Unit> serde::Deserialize<'de> for Written<U> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<U>(std::marker::PhantomData<U>);
        impl<U: Unit> serde::de::Visitor<'_> for V<U> {
            type Value = Written<U>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(U::FORMS)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Written<U>, E> {
                Ok(Written {
                    text: format!("{v:?}"),
                    value: U::parse(v),
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Written<U>, E> {
                Ok(Written {
                    text: v.to_string(),
                    value: U::integer(v),
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Written<U>, E> {
                Ok(Written {
                    text: v.to_string(),
                    value: i64::try_from(v).ok().and_then(U::integer),
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Written<U>, E> {
                Ok(Written {
                    text: v.to_string(),
                    value: None,
                })
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Written<U>, E> {
                Ok(Written {
                    text: v.to_string(),
                    value: None,
                })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<U: Unit> Written<U> {
    /// A value written in the unit (for defaults).
    pub fn new(text: &str) -> Written<U> {
        Written {
            text: format!("{text:?}"),
            value: U::parse(text),
        }
    }
}

/// A rate for people: `10k/s`, `2.5k/s`, `1.2M/s`, `850/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{}M/s", trim_float(per_sec / 1e6))
    } else if per_sec >= 1e3 {
        format!("{}k/s", trim_float(per_sec / 1e3))
    } else {
        format!("{}/s", trim_float(per_sec))
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Nanoseconds for people: `850ns`, `42.1µs`, `3.20ms`, `1.50s`.
#[derive(Debug, Clone, Copy)]
pub struct Nanos(pub f64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns < 1e3 {
            write!(f, "{ns:.0}ns")
        } else if ns < 1e6 {
            write!(f, "{:.1}µs", ns / 1e3)
        } else if ns < 1e9 {
            write!(f, "{:.2}ms", ns / 1e6)
        } else {
            write!(f, "{:.2}s", ns / 1e9)
        }
    }
}

/// Bytes for people: `85.2 MiB`.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= f64::from(1u32 << 30) {
            write!(f, "{:.2} GiB", b / f64::from(1u32 << 30))
        } else if b >= f64::from(1u32 << 20) {
            write!(f, "{:.1} MiB", b / f64::from(1u32 << 20))
        } else if b >= 1024.0 {
            write!(f, "{:.1} KiB", b / 1024.0)
        } else {
            write!(f, "{b} B")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10k/s"), Some(10_000.0));
        assert_eq!(parse_rate("2500/s"), Some(2500.0));
        assert_eq!(parse_rate("1.5M/s"), Some(1_500_000.0));
        assert_eq!(parse_rate("600/min"), Some(10.0));
        assert_eq!(parse_rate("2/ms"), Some(2000.0));
        for bad in ["10k", "10kk/s", "/s", "0/s", "-5/s", "10k/h", "fast"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        assert_eq!(fmt_rate(10_000.0), "10k/s");
        assert_eq!(fmt_rate(1_250_000.0), "1.25M/s");
        assert_eq!(fmt_rate(850.0), "850/s");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_size("1 KiB"), Some(1024));
        assert_eq!(Nanos(42_100.0).to_string(), "42.1µs");
        assert_eq!(Bytes(3 << 20).to_string(), "3.0 MiB");
    }
}
