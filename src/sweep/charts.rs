//! Sweep charts with plotters: a heat map of one metric over two axes (e.g. Chinese ratio
//! x learning rate, best cell outlined) and validation-loss curves of every run against
//! tokens (a `chart::line` chart). The format follows the file extension (`.svg` or `.png`).

use super::results::ResultSet;
use crate::chart::line::{distinct_look, LineChart, Series};
use crate::chart::{ensure_font, is_svg};
use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// A heat-map description.
pub struct Heatmap<'a> {
    pub x_axis: &'a str,
    pub y_axis: &'a str,
    pub metric: &'a str,
    /// Lower is better (losses) unless false (accuracies).
    pub lower_is_better: bool,
}

struct Cells {
    xs: Vec<String>,
    ys: Vec<String>,
    values: Vec<Vec<Option<f64>>>, // [y][x]
}

fn cells(results: &ResultSet, h: &Heatmap) -> Result<Cells> {
    for a in [h.x_axis, h.y_axis] {
        if !results.axes.iter().any(|x| x == a) {
            bail!("heat map: no axis `{a}` in the results (axes: {})", results.axes.join(", "));
        }
    }
    let column = results.column(h.metric)?;
    let label = |run: usize, axis: &str| results.runs[run].axes.iter().find(|(n, _)| n == axis).map(|(_, l)| l.clone());
    let mut xs: Vec<String> = Vec::new();
    let mut ys: Vec<String> = Vec::new();
    for i in 0..results.runs.len() {
        if let (Some(x), Some(y)) = (label(i, h.x_axis), label(i, h.y_axis)) {
            if !xs.contains(&x) {
                xs.push(x);
            }
            if !ys.contains(&y) {
                ys.push(y);
            }
        }
    }
    let mut values = vec![vec![None; xs.len()]; ys.len()];
    let mut counts = vec![vec![0usize; xs.len()]; ys.len()];
    for (i, v) in column {
        let (Some(x), Some(y)) = (label(i, h.x_axis), label(i, h.y_axis)) else { continue };
        let (xi, yi) = (xs.iter().position(|a| *a == x).expect("seen"), ys.iter().position(|a| *a == y).expect("seen"));
        // Several runs per cell (a third axis): show their mean.
        let c = &mut counts[yi][xi];
        let old = values[yi][xi].unwrap_or(0.0);
        values[yi][xi] = Some((old * *c as f64 + v) / (*c + 1) as f64);
        *c += 1;
    }
    if values.iter().flatten().all(Option::is_none) {
        bail!("heat map: no finished run has `{}`", h.metric);
    }
    Ok(Cells { xs, ys, values })
}

/// Viridis-like ramp from dark purple (t = 0) to yellow (t = 1).
fn ramp(t: f64) -> RGBColor {
    let stops = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Cells, h: &Heatmap) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let present: Vec<f64> = c.values.iter().flatten().flatten().cloned().collect();
    let (lo, hi) = present.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let best = if h.lower_is_better { lo } else { hi };
    let (nx, ny) = (c.xs.len(), c.ys.len());
    let title = format!("{} ({} is better)", h.metric, if h.lower_is_better { "lower" } else { "higher" });
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let xs = c.xs.clone();
    let ys = c.ys.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(h.x_axis)
        .y_desc(h.y_axis)
        .x_labels(nx * 2 + 1)
        .y_labels(ny * 2 + 1)
        .x_label_formatter(&move |v| label_at(&xs, *v))
        .y_label_formatter(&move |v| label_at(&ys, *v))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (yi, row) in c.values.iter().enumerate() {
        for (xi, v) in row.iter().enumerate() {
            let (x0, y0) = (xi as f64, yi as f64);
            let area = [(x0, y0), (x0 + 1.0, y0 + 1.0)];
            let (fill, text, ink) = match v {
                Some(v) => {
                    let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                    let t = if h.lower_is_better { t } else { 1.0 - t };
                    // Light text on the dark end of the ramp.
                    (ramp(1.0 - t), format!("{v:.4}"), if t > 0.55 { WHITE } else { BLACK })
                }
                None => (RGBColor(220, 220, 220), "n/a".to_string(), BLACK),
            };
            chart.draw_series(std::iter::once(Rectangle::new(area, fill.filled()))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if *v == Some(best) {
                chart
                    .draw_series(std::iter::once(Rectangle::new([(x0 + 0.03, y0 + 0.03), (x0 + 0.97, y0 + 0.97)], RED.stroke_width(3))))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            let style = TextStyle::from(("sans-serif", 16).into_font()).color(&ink).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
            chart.draw_series(std::iter::once(Text::new(text, (x0 + 0.5, y0 + 0.5), style))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

fn label_at(labels: &[String], v: f64) -> String {
    // Labels sit at cell centres (k + 0.5); other tick positions stay blank.
    let k = (v - 0.5).round();
    if (v - 0.5 - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
        labels[k as usize].clone()
    } else {
        String::new()
    }
}

/// Draws a heat map of `h.metric` over two axes into `path` (.svg or .png).
pub fn heatmap(results: &ResultSet, h: &Heatmap, path: &Path) -> Result<()> {
    ensure_font()?;
    let c = cells(results, h)?;
    let size = (160 + 130 * c.xs.len() as u32, 140 + 70 * c.ys.len() as u32);
    let size = (size.0.max(520), size.1.max(360));
    if is_svg(path)? {
        draw_heatmap(&SVGBackend::new(path, size).into_drawing_area(), &c, h)
    } else {
        draw_heatmap(&BitMapBackend::new(path, size).into_drawing_area(), &c, h)
    }
    .with_context(|| format!("drawing {}", path.display()))
}

/// One curve per run: (tokens, validation loss of `source`).
pub fn read_val_curve(metrics: &Path, source: &str) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON record", metrics.display(), i + 1))?;
        if rec.get("kind").and_then(|k| k.as_str()) != Some("val") {
            continue;
        }
        if let (Some(t), Some(l)) = (rec.get("tokens").and_then(|v| v.as_f64()), rec.get("source").and_then(|s| s.get(source)).and_then(|s| s.get("loss")).and_then(|v| v.as_f64())) {
            out.push((t, l));
        }
    }
    Ok(out)
}

/// Draws validation-loss curves (one line per run) for `source` into `path`.
pub fn curves(source: &str, curves: &[(String, Vec<(f64, f64)>)], path: &Path) -> Result<()> {
    if curves.iter().all(|(_, c)| c.is_empty()) {
        bail!("curves: no run has validation records for source `{source}`");
    }
    let chart = LineChart {
        title: format!("validation loss: {source}"),
        x_label: "tokens".into(),
        y_label: "loss".into(),
        series: curves.iter().enumerate().map(|(k, (name, c))| Series { name: name.clone(), points: c.clone(), look: distinct_look(k), dots: true }).collect(),
        markers: Vec::new(),
        marker_name: String::new(),
    };
    chart.draw(path)
}
