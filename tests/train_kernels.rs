//! `cpt train` with the `kernels:` section: the fused ops and recomputation train like the
//! composed reference ops, every step record carries the peak memory, and recomputation
//! lowers it.
mod train_common;

use train_common::{final_weights, make_model, make_model_with, records, sigkill_after_checkpoint, step_losses, train, write_config};

fn peak_bytes(run: &std::path::Path) -> Vec<u64> {
    records(run)
        .iter()
        .filter(|r| r.get("kind").is_none())
        .map(|r| r["peak_mem_bytes"].as_u64().unwrap_or_else(|| panic!("step record without peak_mem_bytes: {r}")))
        .collect()
}

#[test]
fn fused_kernels_and_recomputation_train_like_the_composed_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let run = |name: &str, kernels: &str| {
        let cfg = write_config(tmp.path(), &model, name, 8, kernels);
        let out = train(&cfg, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{name}: {stderr}");
        (step_losses(&tmp.path().join(name)), stderr)
    };
    let (composed, log) = run("composed", "");
    assert!(log.contains("kernels composed;"), "{log}");
    let (recomputed, log) = run("recompute", "kernels: {recompute: true}");
    assert!(log.contains("kernels composed + recompute"), "{log}");
    let (fused, log) = run("fused", "kernels: {mode: fused, attention: flash, recompute: true, ce_chunk: 100}");
    assert!(log.contains("kernels fused (flash) + recompute"), "{log}");
    let (blocked, _) = run("blocked", "kernels: {mode: fused, attention: 'blocked:8'}");

    assert_eq!(composed.len(), 8);
    let max_rel = |other: &[f64]| composed.iter().zip(other).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
    eprintln!(
        "largest relative loss difference to composed: recompute {:.1e}, fused+recompute {:.1e}, blocked {:.1e}",
        max_rel(&recomputed),
        max_rel(&fused),
        max_rel(&blocked)
    );
    // Recomputation re-runs the same ops on the same inputs: the same numbers.
    for (a, b) in composed.iter().zip(&recomputed) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "recompute changed the loss: {composed:?} vs {recomputed:?}");
    }
    // Fused kernels (and the multi-tensor AdamW) round differently, within f32 noise that
    // eight steps of training do not amplify beyond 1e-5 (measured: 4e-8).
    for other in [&fused, &blocked] {
        for (a, b) in composed.iter().zip(other.iter()) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "fused loss differs: {composed:?} vs {other:?}");
        }
    }
    let peaks = peak_bytes(&tmp.path().join("fused"));
    assert_eq!(peaks.len(), 8);
    assert!(peaks.iter().all(|&p| p > 1 << 20), "peak memory not measured: {peaks:?}");
}

#[test]
fn fused_training_resumes_bit_identically_after_sigkill() {
    // In place updates (multi-tensor AdamW) and recomputed layers must not break exact resume.
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let kernels = "kernels: {mode: fused, attention: flash, recompute: true}";
    let steps = 8;
    let straight = write_config(tmp.path(), &model, "straight", steps, kernels);
    let out = train(&straight, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = write_config(tmp.path(), &model, "killed", steps, kernels);
    let killed_dir = tmp.path().join("killed");
    sigkill_after_checkpoint(&killed, &killed_dir, 4);
    let out = train(&killed, &["--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(final_weights(&tmp.path().join("straight"), steps) == final_weights(&killed_dir, steps), "resumed weights differ");
    assert_eq!(step_losses(&tmp.path().join("straight")), step_losses(&killed_dir));
}

#[test]
fn recomputation_lowers_the_peak_memory_of_training() {
    // Activations dominate: 6 layers, 8 x 512 tokens per micro-batch, composed attention
    // (four [8, 4, 512, 512] f32 tensors per layer).
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model_with(tmp.path(), "deep", &["--num-layers", "6"]);
    let batch = "batch: {micro_batch: 8, seq_len: 512, grad_accum: 1}";
    let peak = |name: &str, recompute: bool| -> u64 {
        let extra = format!("{batch}\nkernels: {{recompute: {recompute}}}\nvalidation: {{every_steps: 100}}");
        let cfg = write_config(tmp.path(), &model, name, 3, &extra);
        let out = train(&cfg, &[]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        *peak_bytes(&tmp.path().join(name)).iter().max().unwrap()
    };
    let plain = peak("plain", false);
    let recomputed = peak("recomputed", true);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    eprintln!("peak resident set: {:.3} GiB without, {:.3} GiB with recomputation", gib(plain), gib(recomputed));
    assert!(
        (recomputed as f64) < 0.6 * plain as f64,
        "recomputation should cut the peak: {:.3} GiB -> {:.3} GiB",
        gib(plain),
        gib(recomputed)
    );
}
