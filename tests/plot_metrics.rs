//! Metrics JSONL, TensorBoard event files (read back by our reader and, where installed, by
//! TensorBoard itself) and `cpt plot` charts.
use cpt::train::metrics::{read_metrics, LossPpl, MetricsWriter, StepRecord, ValRecord};
use cpt::chart::line::{distinct_look, DISTINCT_LOOKS};
use cpt::chart::trend::local_linear;
use cpt::train::plot::{curves_from_records, plot_metrics, stage_boundaries, trend_half_width, PlotFormat};
use cpt::train::tensorboard::{read_events, TensorBoardWriter};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn write_run(path: &Path, steps: u64) {
    let mut w = MetricsWriter::create(path).unwrap();
    for step in 1..=steps {
        let s = step as f64;
        let mut source_loss = BTreeMap::new();
        source_loss.insert("zh_web".to_string(), 6.0 * (-s / 80.0).exp() + 2.5);
        w.write(&StepRecord {
            step,
            tokens: step * 4096,
            // Noisy, falling loss; one skipped step with a NaN loss.
            loss: if step == 37 { f64::NAN } else { 6.5 * (-s / 60.0).exp() + 2.0 + 0.15 * (s * 1.7).sin() },
            lr: 3e-4 * (step.min(20) as f64 / 20.0),
            grad_norm: 1.0 + 0.5 * (s / 9.0).cos(),
            tokens_per_s: 12000.0,
            elapsed_s: s * 0.3,
            source_loss,
            mfu: None,
            peak_mem_bytes: Some((1u64 << 30) + step * (1 << 20)),
            skipped: (step == 37).then(|| "non-finite loss".to_string()),
        })
        .unwrap();
        if step % 25 == 0 {
            let mut source = BTreeMap::new();
            source.insert("zh_web".to_string(), LossPpl::from_loss(5.0 * (-s / 90.0).exp() + 2.6));
            source.insert("en_replay".to_string(), LossPpl::from_loss(2.2 + 0.002 * s));
            w.write(&ValRecord::new(step, step * 4096, source, BTreeMap::new())).unwrap();
        }
    }
}

#[test]
fn metrics_records_are_lines_and_resume_drops_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    write_run(&path, 60);
    let records = read_metrics(&path).unwrap();
    assert_eq!(records.len(), 62);
    assert_eq!(records[0]["step"], 1);
    assert_eq!(records[0]["tokens"], 4096);
    assert!(records[0]["source_loss"]["zh_web"].is_f64());
    let skipped = records.iter().find(|r| r["step"] == 37 && r.get("kind").is_none()).unwrap();
    assert!(skipped["loss"].is_null(), "NaN is written as null");
    assert_eq!(skipped["skipped"], "non-finite loss");
    let val = records.iter().find(|r| r["kind"] == "val").unwrap();
    assert_eq!(val["step"], 25);
    let ppl = val["source"]["en_replay"]["ppl"].as_f64().unwrap();
    assert!((ppl - (2.2f64 + 0.05).exp()).abs() < 1e-9);

    // A run resumed from the checkpoint at step 40 rewrites history after it.
    let mut w = MetricsWriter::resume(&path, 40).unwrap();
    w.write(&StepRecord { step: 41, loss: 1.0, ..Default::default() }).unwrap();
    let records = read_metrics(&path).unwrap();
    let steps: Vec<u64> = records.iter().filter(|r| r.get("kind").is_none()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=41).collect::<Vec<_>>());
    assert_eq!(records.iter().filter(|r| r["kind"] == "val").count(), 1);

    std::fs::write(&path, "{\"step\": 1}\nnot json\n").unwrap();
    let e = format!("{:#}", read_metrics(&path).unwrap_err());
    assert!(e.contains("metrics.jsonl: line 2"), "{e}");
}

#[test]
fn tensorboard_events_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = TensorBoardWriter::create(&dir.path().join("tb")).unwrap();
    let name = tb.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    for step in 1..=30u64 {
        tb.add_scalars(
            step,
            &[("train/loss".to_string(), 5.0 / step as f32), ("train/lr".to_string(), 1e-4 * step as f32)],
        )
        .unwrap();
    }
    tb.add_scalar("val/zh_web/loss", 3.25, 30).unwrap();
    let path = tb.path().to_path_buf();
    drop(tb);

    let events = read_events(&path).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!(events.len(), 32);
    assert_eq!(events[3].step, 3);
    assert_eq!(events[3].scalars, vec![("train/loss".to_string(), 5.0 / 3.0), ("train/lr".to_string(), 1e-4f32 * 3.0)]);
    assert!(events[3].wall_time > 1.7e9);
    assert_eq!(events[31].scalars, vec![("val/zh_web/loss".to_string(), 3.25)]);

    // A flipped byte is caught by the CRC.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 1;
    let broken = dir.path().join("broken");
    std::fs::write(&broken, bytes).unwrap();
    assert!(format!("{:#}", read_events(&broken).unwrap_err()).contains("CRC"));

    // TensorBoard's own reader, where it is installed.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_tb_events.py");
    let has_tb = Command::new("python3").args(["-c", "import tensorboard"]).output().is_ok_and(|o| o.status.success());
    if !has_tb {
        eprintln!("skipping the TensorBoard cross-check: python3 cannot import tensorboard");
        return;
    }
    let out = Command::new("python3").arg(&script).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scalars: BTreeMap<String, Vec<(i64, f64)>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scalars["train/loss"].len(), 30);
    assert_eq!(scalars["train/loss"][9], (10, (5.0f32 / 10.0) as f64));
    assert_eq!(scalars["train/lr"][29], (30, (1e-4f32 * 30.0) as f64));
    assert_eq!(scalars["val/zh_web/loss"], vec![(30, 3.25)]);
}

#[test]
fn curves_and_smoothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    write_run(&path, 100);
    let curves = curves_from_records(&read_metrics(&path).unwrap());
    assert_eq!(curves.loss.len(), 99, "the NaN step is left out");
    assert_eq!(curves.val.len(), 2);
    assert_eq!(curves.val[0].1.len(), 4);
    assert_eq!(curves.peak_mem_gib.len(), 100);
    assert!((curves.peak_mem_gib[0].1 - (1.0 + 1.0 / 1024.0)).abs() < 1e-12, "bytes become GiB");
    assert_eq!(curves.tokens.len(), 100, "the skipped step still counts its tokens");

    // The trend has no lag: a loss that drops at step 500 (logged every 10 steps, the
    // README run's interval) is crossed half-way between the last high and the first low
    // point; an exponential moving average of weight 0.9 would still be above the midpoint
    // ~70 steps later.
    let step: Vec<(f64, f64)> = (1..=100).map(|i| (10.0 * i as f64, if i <= 50 { 5.0 } else { 4.0 })).collect();
    let trend = local_linear(&step, trend_half_width(&step));
    assert!(trend[49].1 > 4.5 && trend[50].1 < 4.5, "{:?}", &trend[47..53]);
    // ... and ends where the run is: on a steadily falling loss, at the last point itself.
    let falling: Vec<(f64, f64)> = (1..=49).map(|i| (10.0 * i as f64, 7.5 - 0.006 * 10.0 * i as f64)).collect();
    let trend = local_linear(&falling, trend_half_width(&falling));
    let (last, last_trend) = (falling.last().unwrap(), trend.last().unwrap());
    assert_eq!(last.0, last_trend.0);
    assert!((last.1 - last_trend.1).abs() < 1e-9, "{last:?} vs {last_trend:?}");
}

#[test]
fn every_series_of_a_chart_looks_different() {
    for n in 1..=DISTINCT_LOOKS {
        let looks: Vec<_> = (0..n).map(distinct_look).collect();
        for a in 0..n {
            for b in 0..a {
                let (x, y) = (looks[a], looks[b]);
                assert!(x.color != y.color || x.dash != y.dash, "series {a} and {b} of {n} look alike");
            }
        }
    }
    // The README run's 12 sources: en_books (0) and zh_books (8) are no longer the same blue.
    assert_ne!(distinct_look(0).color, distinct_look(8).color);
    assert_ne!(distinct_look(0).dash, distinct_look(10).dash, "the 11th series reuses blue, dashed");
}

/// The `x` of the SVG text element holding exactly `text`.
fn svg_text_x(svg: &str, text: &str) -> Option<f64> {
    let end = svg.find(&format!(">\n{text}\n</text>"))?;
    let start = svg[..end].rfind("<text")?;
    let x = svg[start..end].split("x=\"").nth(1)?.split('"').next()?;
    x.parse().ok()
}

#[test]
fn stage_boundaries_are_marked_and_the_legend_sits_beside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    write_run(&metrics, 200);
    // The run's resolved config, as `cpt train` leaves it beside the metrics: 4096 tokens a
    // step, stages of 300k and 250k tokens.
    std::fs::write(
        dir.path().join("config.yaml"),
        "model: {path: m}\ndata:\n  sources: [{name: zh_web, paths: x.jsonl}]\n  stages:\n    - {name: first, tokens: 300k, weights: {zh_web: 1}}\n    - {name: second, tokens: 250k, weights: {zh_web: 1}}\n    - {name: third, weights: {zh_web: 1}}\ntrain: {max_steps: 200}\n",
    )
    .unwrap();
    let curves = curves_from_records(&read_metrics(&metrics).unwrap());
    let marks = stage_boundaries(&metrics, &curves.tokens);
    let at: Vec<(f64, &str)> = marks.iter().map(|m| (m.x, m.label.as_str())).collect();
    assert_eq!(at.len(), 2);
    assert!((at[0].0 - 300_000.0 / 4096.0).abs() < 1e-9 && at[0].1 == "stage 2: second", "{at:?}");
    assert!((at[1].0 - 550_000.0 / 4096.0).abs() < 1e-9 && at[1].1 == "stage 3: third", "{at:?}");

    let files = plot_metrics(&metrics, &dir.path().join("svg"), PlotFormat::Svg).unwrap();
    for f in &files {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(svg.contains("stage 2: second") && svg.contains("stage boundary"), "{}: no stage marks", f.display());
    }
    let svg = std::fs::read_to_string(&files[1]).unwrap();
    // The plot (axes, curves) is 900 px wide; the legend's names stand to its right.
    for name in ["zh_web", "en_replay", "stage boundary"] {
        let x = svg_text_x(&svg, name).unwrap_or_else(|| panic!("no legend entry {name}"));
        assert!(x > 900.0, "{name} at x = {x}");
    }
    let loss = std::fs::read_to_string(&files[0]).unwrap();
    assert!(loss.contains("trend, no lag (local linear"), "the legend says which smoothing");
    // Without a config beside the metrics, the charts simply have no marks.
    std::fs::remove_file(dir.path().join("config.yaml")).unwrap();
    assert!(stage_boundaries(&metrics, &curves.tokens).is_empty());
}

#[test]
fn plot_writes_png_and_svg_charts() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    write_run(&metrics, 200);
    let png_dir = dir.path().join("png");
    let files = plot_metrics(&metrics, &png_dir, PlotFormat::Png).unwrap();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["loss.png", "val_loss.png", "lr.png", "grad_norm.png", "peak_memory.png"]);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
        assert!(bytes.len() > 10_000, "{}: only {} bytes", f.display(), bytes.len());
    }
    let svgs = plot_metrics(&metrics, &dir.path().join("svg"), PlotFormat::Svg).unwrap();
    let svg = std::fs::read_to_string(&svgs[1]).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Validation loss per source"));
    assert!(svg.contains("en_replay") && svg.contains("zh_web"));
    assert!(svg.matches("<polyline").count() >= 2, "one line per source");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = format!("{:#}", plot_metrics(&empty, dir.path(), PlotFormat::Png).unwrap_err());
    assert!(e.contains("empty.jsonl") && e.contains("no training or validation records"), "{e}");
}

#[test]
fn cpt_plot_command() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    write_run(&metrics, 50);
    let out = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(["plot", "--metrics"])
        .arg(&metrics)
        .args(["--format", "svg"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("plots/loss.svg").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_cpt")).args(["plot", "--metrics", "nope.jsonl"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.jsonl"));
}
