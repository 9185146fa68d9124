//! Charts of a metrics file (`cpt plot`): training loss (raw and smoothed), per-source
//! validation loss, learning rate and gradient norm, as PNG or SVG.
use crate::train::metrics::read_metrics;
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// DejaVu Sans (Latin subset, see assets/DejaVuSans-LICENSE.txt): PNG text needs a font
/// and the machine may have none.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
static REGISTER_FONT: Once = Once::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    Png,
    Svg,
}

impl std::str::FromStr for PlotFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(PlotFormat::Png),
            "svg" => Ok(PlotFormat::Svg),
            other => bail!("unknown plot format `{other}` (png or svg)"),
        }
    }
}

impl PlotFormat {
    fn extension(self) -> &'static str {
        match self {
            PlotFormat::Png => "png",
            PlotFormat::Svg => "svg",
        }
    }
}

/// One line on a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    width: u32,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The curves found in a metrics file.
#[derive(Debug, Default)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    pub grad_norm: Vec<(f64, f64)>,
    /// Peak memory (GiB) per record, where measured.
    pub peak_mem_gib: Vec<(f64, f64)>,
    /// Validation loss per source, in first-seen order.
    pub val: Vec<(String, Vec<(f64, f64)>)>,
}

/// Extract curves from metrics records (train records have no `kind`; validation records
/// are `kind: "val"`). Non-finite values (skipped steps) are left out.
pub fn curves_from_records(records: &[serde_json::Value]) -> Curves {
    let mut curves = Curves::default();
    for r in records {
        let Some(step) = r.get("step").and_then(|s| s.as_f64()) else { continue };
        let num = |k: &str| r.get(k).and_then(|v| v.as_f64()).filter(|v| v.is_finite());
        match r.get("kind").and_then(|k| k.as_str()) {
            None | Some("train") => {
                if let Some(v) = num("loss") {
                    curves.loss.push((step, v));
                }
                if let Some(v) = num("lr") {
                    curves.lr.push((step, v));
                }
                if let Some(v) = num("grad_norm") {
                    curves.grad_norm.push((step, v));
                }
                if let Some(v) = num("peak_mem_bytes") {
                    curves.peak_mem_gib.push((step, v / (1u64 << 30) as f64));
                }
            }
            Some("val") => {
                let Some(sources) = r.get("source").and_then(|s| s.as_object()) else { continue };
                for (name, v) in sources {
                    let Some(loss) = v.get("loss").and_then(|l| l.as_f64()).filter(|l| l.is_finite()) else { continue };
                    match curves.val.iter_mut().find(|(n, _)| n == name) {
                        Some((_, pts)) => pts.push((step, loss)),
                        None => curves.val.push((name.clone(), vec![(step, loss)])),
                    }
                }
            }
            Some(_) => {}
        }
    }
    curves
}

/// TensorBoard-style exponential moving average with bias correction.
pub fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut last = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, (x, y)) in points.iter().enumerate() {
        last = last * weight + (1.0 - weight) * y;
        let debias = 1.0 - weight.powi(i as i32 + 1);
        out.push((*x, last / debias));
    }
    out
}

/// Write the charts of `metrics` into `out_dir`; returns the files written.
pub fn plot_metrics(metrics: &Path, out_dir: &Path, format: PlotFormat) -> Result<Vec<PathBuf>> {
    let records = read_metrics(metrics)?;
    let curves = curves_from_records(&records);
    if curves.loss.is_empty() && curves.val.is_empty() {
        bail!("{}: no training or validation records with a finite loss to plot", metrics.display());
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut charts: Vec<(&str, &str, &str, Vec<Series>)> = Vec::new();
    if !curves.loss.is_empty() {
        // Heavier smoothing for longer runs, none to speak of for a handful of points.
        let weight = if curves.loss.len() < 10 { 0.3 } else { 0.9 };
        charts.push((
            "loss",
            "Training loss",
            "loss",
            vec![
                Series { name: "raw".into(), points: curves.loss.clone(), color: RGBColor(160, 190, 225), width: 1 },
                Series { name: "smoothed".into(), points: smooth(&curves.loss, weight), color: PALETTE[0], width: 2 },
            ],
        ));
    }
    if !curves.val.is_empty() {
        let series = curves
            .val
            .iter()
            .enumerate()
            .map(|(i, (name, pts))| Series {
                name: name.clone(),
                points: pts.clone(),
                color: PALETTE[i % PALETTE.len()],
                width: 2,
            })
            .collect();
        charts.push(("val_loss", "Validation loss per source", "loss", series));
    }
    if !curves.lr.is_empty() {
        charts.push((
            "lr",
            "Learning rate",
            "lr",
            vec![Series { name: "lr".into(), points: curves.lr.clone(), color: PALETTE[2], width: 2 }],
        ));
    }
    if !curves.grad_norm.is_empty() {
        charts.push((
            "grad_norm",
            "Gradient norm (before clipping)",
            "norm",
            vec![Series { name: "grad norm".into(), points: curves.grad_norm.clone(), color: PALETTE[3], width: 1 }],
        ));
    }
    if !curves.peak_mem_gib.is_empty() {
        charts.push((
            "peak_memory",
            "Peak memory per logging window",
            "GiB",
            vec![Series { name: "peak memory".into(), points: curves.peak_mem_gib.clone(), color: PALETTE[4], width: 1 }],
        ));
    }
    REGISTER_FONT.call_once(|| {
        // A bundled, valid font: failure here is a build defect, reported when drawing.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let mut written = Vec::new();
    for (file, title, y_label, series) in charts {
        let path = out_dir.join(format!("{file}.{}", format.extension()));
        let size = (960, 540);
        match format {
            PlotFormat::Png => draw_chart(BitMapBackend::new(&path, size).into_drawing_area(), title, y_label, &series)?,
            PlotFormat::Svg => draw_chart(SVGBackend::new(&path, size).into_drawing_area(), title, y_label, &series)?,
        }
        written.push(path);
    }
    Ok(written)
}

fn padded_range(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1e-12) };
    (lo - 0.05 * span, hi + 0.05 * span)
}

fn draw_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing `{title}`: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = padded_range(all.clone().map(|p| p.0));
    let (y0, y1) = padded_range(all.map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .y_label_formatter(&|v| format_tick(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for s in series {
        let style = ShapeStyle::from(&s.color).stroke_width(s.width);
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ShapeStyle::from(&color).stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}
