//! Charts of a metrics file (`cpt plot`): training loss (raw and its trend), per-source
//! validation loss, learning rate, gradient norm and peak memory, as PNG or SVG, each over
//! steps with the run's stage boundaries marked.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::chart::line::{distinct_look, Dash, LineChart, Look, Marker, Series, COLORS};
use crate::chart::trend::local_linear;
use crate::data::config::DataConfig;
use crate::train::metrics::read_metrics;

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

/// The curves found in a metrics file.
#[derive(Debug, Default)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    /// Tokens trained by the end of each logged step (maps token budgets to steps).
    pub tokens: Vec<(f64, f64)>,
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
                if let Some(v) = num("tokens") {
                    curves.tokens.push((step, v));
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

/// The window of the loss trend: a tenth of the logged span on either side, and at least
/// two logging intervals (so a short run still gets a few points per window).
pub fn trend_half_width(points: &[(f64, f64)]) -> f64 {
    let (Some(first), Some(last)) = (points.first(), points.last()) else { return 0.0 };
    let interval = (last.0 - first.0) / (points.len().max(2) - 1) as f64;
    ((last.0 - first.0) / 10.0).max(2.0 * interval).round()
}

/// Where the run's stages end, in steps: the cumulative `data.stages[].tokens` of the run's
/// `config.yaml` (beside the metrics file) placed on the steps' token counts. None when the
/// run has no stages or no such config; a config that cannot be read is said on stderr.
pub fn stage_boundaries(metrics: &Path, tokens: &[(f64, f64)]) -> Vec<Marker> {
    let Some(config) = metrics.parent().map(|d| d.join("config.yaml")).filter(|c| c.is_file()) else { return Vec::new() };
    let stages = match DataConfig::load(&config) {
        Ok(loaded) => loaded.data.stages,
        Err(e) => {
            eprintln!("note: no stage boundaries drawn: {e:#}");
            return Vec::new();
        }
    };
    let mut end = 0u64;
    let mut markers = Vec::new();
    for (i, pair) in stages.windows(2).enumerate() {
        let Some(t) = pair[0].tokens else { break };
        end += t;
        if let Some(step) = step_at_tokens(tokens, end as f64) {
            let name = pair[1].name.clone().unwrap_or_else(|| format!("{}", i + 2));
            markers.push(Marker { x: step, label: format!("stage {}: {name}", i + 2) });
        }
    }
    markers
}

/// The (fractional) step at which `target` tokens were reached; None outside the run.
fn step_at_tokens(tokens: &[(f64, f64)], target: f64) -> Option<f64> {
    let after = tokens.iter().position(|&(_, t)| t >= target)?;
    if after == 0 {
        return (tokens[0].1 == target).then_some(tokens[0].0);
    }
    let ((s0, t0), (s1, t1)) = (tokens[after - 1], tokens[after]);
    Some(s0 + (s1 - s0) * (target - t0) / (t1 - t0))
}

fn single(name: &str, points: &[(f64, f64)], color: usize) -> Series {
    Series { name: name.into(), points: points.to_vec(), look: Look { color: COLORS[color], dash: Dash::Solid, width: 2 }, dots: true }
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
        let half = trend_half_width(&curves.loss);
        let raw = Look { color: crate::chart::line::RAW_COLOR, dash: Dash::Solid, width: 1 };
        charts.push((
            "loss",
            "Training loss",
            "loss",
            vec![
                Series { name: "raw".into(), points: curves.loss.clone(), look: raw, dots: true },
                Series {
                    name: format!("trend, no lag (local linear, ±{half} steps)"),
                    points: local_linear(&curves.loss, half),
                    look: Look { color: COLORS[0], dash: Dash::Solid, width: 2 },
                    dots: false,
                },
            ],
        ));
    }
    if !curves.val.is_empty() {
        let series = curves
            .val
            .iter()
            .enumerate()
            .map(|(i, (name, pts))| Series { name: name.clone(), points: pts.clone(), look: distinct_look(i), dots: true })
            .collect();
        charts.push(("val_loss", "Validation loss per source", "loss", series));
    }
    if !curves.lr.is_empty() {
        charts.push(("lr", "Learning rate", "lr", vec![single("lr", &curves.lr, 2)]));
    }
    if !curves.grad_norm.is_empty() {
        charts.push(("grad_norm", "Gradient norm (before clipping)", "norm", vec![single("grad norm", &curves.grad_norm, 3)]));
    }
    if !curves.peak_mem_gib.is_empty() {
        charts.push(("peak_memory", "Peak memory per logging window", "GiB", vec![single("peak memory", &curves.peak_mem_gib, 4)]));
    }
    let markers = stage_boundaries(metrics, &curves.tokens);
    let mut written = Vec::new();
    for (file, title, y_label, series) in charts {
        let path = out_dir.join(format!("{file}.{}", format.extension()));
        let chart = LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: y_label.into(),
            series,
            markers: markers.clone(),
            marker_name: "stage boundary".into(),
        };
        chart.draw(&path)?;
        written.push(path);
    }
    Ok(written)
}
