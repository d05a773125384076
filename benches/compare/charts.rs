//! SVG charts of the medians, drawn with plotters' SVG backend.

use std::path::Path;

use plotters::prelude::*;

use crate::load::Test;
use crate::output::figure;
use crate::sample::Sample;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One line per server: a figure of the pingpong tests against the
/// connection count (the x axis is categorical, one step per C).
pub fn by_connections(
    path: &Path,
    title: &str,
    y_desc: &str,
    samples: &[Sample],
    tests: &[Test],
    servers: &[&'static str],
    f: impl Fn(&Sample) -> Option<f64> + Copy,
) -> Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = servers
        .iter()
        .map(|&server| {
            let points = tests
                .iter()
                .enumerate()
                .filter_map(|(i, &t)| {
                    Some((i as f64, figure(samples, server, t, f)?.median))
                })
                .collect();
            (server, points)
        })
        .filter(|(_, p): &(&str, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|xy| xy.1))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let last = tests.len().saturating_sub(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.2f64..last + 0.2, 0f64..top * 1.15)?;
    let labels: Vec<String> =
        tests.iter().map(|t| t.connections.to_string()).collect();
    chart
        .configure_mesh()
        .x_labels(tests.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            match (i - x).abs() < 0.01 && i >= 0.0 {
                true => labels.get(i as usize).cloned().unwrap_or_default(),
                false => String::new(),
            }
        })
        .x_desc("connections")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    for (i, (server, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.clone(),
                color.stroke_width(2),
            ))?
            .label(server)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    color.stroke_width(2),
                )
            });
        chart.draw_series(
            points.into_iter().map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One bar per server: bytes of server memory per idle connection.
pub fn idle_bars(
    path: &Path,
    samples: &[Sample],
    test: Test,
    servers: &[&'static str],
) -> Result<()> {
    let bars: Vec<(&str, f64)> = servers
        .iter()
        .filter_map(|&s| {
            Some((s, figure(samples, s, test, Sample::bytes_per_conn)?.median))
        })
        .collect();
    let top = bars.iter().map(|b| b.1).fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("server memory per idle connection ({})", test.label()),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..top * 1.15)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x - 0.5;
            match (i - i.round()).abs() < 0.01 && i >= 0.0 {
                true => {
                    names.get(i.round() as usize).cloned().unwrap_or_default()
                }
                false => String::new(),
            }
        })
        .y_desc("bytes per connection (anonymous PSS delta)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let color = Palette99::pick(i).to_rgba();
        Rectangle::new(
            [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
            color.filled(),
        )
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.0} B"),
            (i as f64 + 0.3, v + top * 0.03),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}
