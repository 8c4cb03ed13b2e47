//! Medians, spreads and the Markdown tables of `compare`.

use std::fmt::Write as _;

/// The median and the range of a set of replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (the upper one for an even count).
    pub median: f64,
    /// The smallest replica.
    pub min: f64,
    /// The largest replica.
    pub max: f64,
}

/// Summarises `v`; NaN everywhere when it is empty.
pub fn summary(v: &[f64]) -> Summary {
    if v.is_empty() {
        return Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Summary {
        median: s[s.len() / 2],
        min: s[0],
        max: s[s.len() - 1],
    }
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// A rate: the ratio is this side over the baseline.
    Higher,
    /// A time: the ratio is the baseline over this side.
    Lower,
}

/// One side of a comparison: its replicas, in the order they ran.
#[derive(Debug, Clone)]
pub struct Side {
    /// Its name in the table.
    pub name: String,
    /// One figure per replica.
    pub replicas: Vec<f64>,
}

/// A Markdown table: every side's median and range, and its advantage
/// over `baseline` (>1 is better, whichever way the figure goes) as the
/// median of the per-replica ratios (replica i against replica i of the
/// baseline, which ran beside it) with their range.
pub fn table(unit: &str, better: Better, baseline: &str, sides: &[Side]) -> String {
    let base = sides.iter().find(|s| s.name == baseline);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| side | median {unit} | min–max | × vs {baseline} (min–max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for side in sides {
        let s = summary(&side.replicas);
        let ratio = match base {
            Some(b) if b.name != side.name => {
                let r: Vec<f64> = side
                    .replicas
                    .iter()
                    .zip(&b.replicas)
                    .map(|(x, y)| match better {
                        Better::Higher => x / y,
                        Better::Lower => y / x,
                    })
                    .collect();
                let r = summary(&r);
                format!("{:.2} ({:.2}–{:.2})", r.median, r.min, r.max)
            }
            Some(_) => "1 (baseline)".into(),
            None => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {}–{} | {ratio} |",
            side.name,
            fmt(s.median),
            fmt(s.min),
            fmt(s.max)
        );
    }
    out
}

/// Three significant digits, whatever the magnitude.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
