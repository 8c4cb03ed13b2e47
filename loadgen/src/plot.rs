//! The run as an SVG: corrected latency percentiles over time (log scale,
//! with uncorrected p99 beside them), sent and completed rate, and
//! resident memory.

use std::path::Path;

use plotters::prelude::*;

use crate::memory::Sample;
use crate::progress::Point;

/// A line of a chart: its name, colour and value.
type Series = (&'static str, RGBColor, fn(&Point) -> f64);

/// A plot that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the plot {}: {source}", .path.display())]
pub struct PlotError {
    /// The file.
    pub path: std::path::PathBuf,
    /// plotters' reason.
    #[source]
    pub source: Box<dyn std::error::Error>,
}

/// Writes the plot.
///
/// # Errors
///
/// The file cannot be written (the message names it).
pub fn write_svg(
    path: &Path,
    title: &str,
    points: &[Point],
    memory: &[Sample],
    warmup_s: f64,
) -> Result<(), PlotError> {
    draw(path, title, points, memory, warmup_s).map_err(|source| PlotError {
        path: path.to_owned(),
        source,
    })
}

fn draw(
    path: &Path,
    title: &str,
    points: &[Point],
    memory: &[Sample],
    warmup_s: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((3, 1));
    let t_max = points
        .iter()
        .map(|p| p.t_s)
        .chain(memory.iter().map(|m| m.t_s))
        .fold(1.0, f64::max);

    // Latency, µs, log scale.
    let series: [Series; 5] = [
        ("corrected p50", RGBColor(31, 119, 180), |p| {
            p.corrected_us.p50
        }),
        ("corrected p99", RGBColor(255, 127, 14), |p| {
            p.corrected_us.p99
        }),
        ("corrected p99.9", RGBColor(214, 39, 40), |p| {
            p.corrected_us.p999
        }),
        ("corrected max", RGBColor(148, 103, 189), |p| {
            p.corrected_us.max
        }),
        ("uncorrected p99", RGBColor(127, 127, 127), |p| {
            p.uncorrected_us.p99
        }),
    ];
    let lat = points.iter().filter(|p| p.corrected_us.count > 0);
    let y_max = lat.clone().map(|p| p.corrected_us.max).fold(10.0, f64::max) * 2.0;
    let y_min = lat
        .map(|p| p.corrected_us.p50.min(p.uncorrected_us.p99))
        .fold(f64::INFINITY, f64::min)
        .clamp(0.1, 1.0);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("latency per second (µs, log scale)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("µs")
        .draw()?;
    for (name, color, f) in series {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter(|p| p.corrected_us.count > 0)
                    .map(|p| (p.t_s, f(p).max(y_min))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    warmup_line(&mut chart, warmup_s, y_min, y_max)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    // Rates.
    let r_max = points
        .iter()
        .map(|p| p.sent_rate.max(p.done_rate))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("events per second", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("events/s")
        .draw()?;
    let rates: [Series; 3] = [
        ("sent", RGBColor(31, 119, 180), |p| p.sent_rate),
        ("completed", RGBColor(44, 160, 44), |p| p.done_rate),
        ("rejected", RGBColor(214, 39, 40), |p| p.rejected as f64),
    ];
    for (name, color, f) in rates {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, f(p))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    // Memory, MiB.
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let m_max = memory.iter().map(|m| mib(m.rss_bytes)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption("resident memory (MiB)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..m_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()?;
    chart.draw_series(LineSeries::new(
        memory.iter().map(|m| (m.t_s, mib(m.rss_bytes))),
        RGBColor(140, 86, 75).stroke_width(2),
    ))?;
    warmup_line(&mut chart, warmup_s, 0.0, m_max)?;
    root.present()?;
    Ok(())
}

fn warmup_line<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    warmup_s: f64,
    lo: f64,
    hi: f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    if warmup_s > 0.0 {
        chart.draw_series(LineSeries::new(
            [(warmup_s, lo), (warmup_s, hi)],
            BLACK.mix(0.4),
        ))?;
    }
    Ok(())
}
