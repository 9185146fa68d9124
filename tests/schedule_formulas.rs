//! LR schedules against reference schedulers (HF transformers / torch, fixtures from
//! scripts/make_optim_fixtures.py) and against the published formulas.
use cpt::config::ScheduleConfig;
use cpt::train::schedule::{DecayShape, Schedule, Unit};
use std::f64::consts::PI;

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-12 * scale
}

#[test]
fn matches_reference_schedulers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim/schedules.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 8);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let cfg: ScheduleConfig = serde_json::from_value(case["spec"].clone()).unwrap();
        let peak = case["peak_lr"].as_f64().unwrap();
        let schedule = Schedule::from_config(&cfg, peak, 1e9).unwrap();
        let total = cfg.total.unwrap().get() as usize;
        let lrs: Vec<f64> = case["lrs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (step, want) in lrs.iter().enumerate() {
            let got = schedule.lr_at(step as f64);
            if step <= total {
                assert!(close(got, *want, peak), "{name} step {step}: {got} vs reference {want}");
            } else {
                // HF's cosine schedules climb again after the end; cpt stays at the floor.
                assert!(close(got, schedule.floor_lr, peak), "{name} step {step}: {got} is not the floor");
            }
        }
    }
}

fn cfg(yaml: &str) -> ScheduleConfig {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn wsd_phases_and_decay_shapes_follow_their_formulas() {
    let peak = 1e-3;
    let floor = 1e-5;
    for (shape, f) in [
        ("linear", Box::new(|q: f64| floor + (peak - floor) * (1.0 - q)) as Box<dyn Fn(f64) -> f64>),
        ("cosine", Box::new(|q: f64| floor + (peak - floor) * 0.5 * (1.0 + (PI * q).cos()))),
        ("1-sqrt", Box::new(|q: f64| floor + (peak - floor) * (1.0 - q.sqrt()))),
        ("exponential", Box::new(|q: f64| peak * (floor / peak).powf(q))),
    ] {
        let c = cfg(&format!("{{kind: wsd, unit: tokens, warmup: 1M, decay_fraction: 0.1, decay_shape: '{shape}', min_lr: {floor}}}"));
        let s = Schedule::from_config(&c, peak, 100e6).unwrap();
        assert_eq!(s.unit, Unit::Tokens);
        assert!(close(s.lr_at(0.0), 0.0, peak));
        assert!(close(s.lr_at(500_000.0), peak / 2.0, peak), "{shape}: half-way through warmup");
        assert!(close(s.lr_at(1e6), peak, peak));
        assert!(close(s.lr_at(89_999_999.0), peak, peak), "{shape}: stable until 90%");
        for q in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0] {
            let pos = 90e6 + q * 10e6;
            assert!(close(s.lr_at(pos), f(q), peak), "{shape} q={q}: {} vs {}", s.lr_at(pos), f(q));
        }
        assert!(close(s.lr_at(150e6), floor, peak), "{shape}: floor after the end");
    }
}

#[test]
fn minicpm_half_life_exponential_is_geometric_interpolation() {
    // MiniCPM: lr = peak * 0.5^((s - T) / h) over the decay. With the floor reached at the end
    // of a decay of length D, floor = peak * 0.5^(D / h).
    let (peak, d, h) = (1e-2, 1000.0, 250.0);
    let floor = peak * 0.5f64.powf(d / h);
    let c = cfg(&format!("{{kind: wsd, warmup: 0, total: 5000, decay: 1000, decay_shape: exponential, min_lr: {floor}}}"));
    let s = Schedule::from_config(&c, peak, 0.0).unwrap();
    for t in [0.0, 100.0, 250.0, 777.0, 1000.0] {
        let want = peak * 0.5f64.powf(t / h);
        assert!((s.lr_at(4000.0 + t) - want).abs() <= 1e-12 * peak);
    }
}

#[test]
fn rewarm_rises_from_start_lr_then_redecays_to_floor() {
    // arXiv 2403.08763: re-warm from the previous final LR to the peak over ~1%, cosine to 0.1 x peak.
    let peak = 3e-4;
    let c = cfg("{kind: rewarm, start_lr: 3.0e-5, warmup_fraction: 0.01, min_lr_ratio: 0.1}");
    let s = Schedule::from_config(&c, peak, 10_000.0).unwrap();
    assert!(close(s.lr_at(0.0), 3e-5, peak));
    assert!(close(s.lr_at(50.0), 3e-5 + (peak - 3e-5) * 0.5, peak));
    assert!(close(s.lr_at(100.0), peak, peak));
    let mid = 100.0 + 0.5 * 9900.0;
    assert!(close(s.lr_at(mid), 3e-5 + (peak - 3e-5) * 0.5, peak));
    assert!(close(s.lr_at(10_000.0), 3e-5, peak));
    assert_eq!(s.decay, Some(DecayShape::Cosine));
    let lin = Schedule::from_config(&cfg("{kind: rewarm, start_lr: 0.0, warmup: 10, decay_shape: linear}"), 1.0, 110.0).unwrap();
    assert!(close(lin.lr_at(60.0), 0.5, 1.0));
}

#[test]
fn constant_schedule_with_and_without_warmup() {
    let s = Schedule::from_config(&cfg("{kind: constant}"), 2e-4, 100.0).unwrap();
    assert_eq!(s.lr_at(0.0), 2e-4);
    assert_eq!(s.lr_at(1e9), 2e-4);
    // Llama-3-SynE: warm up from 1e-7 to 1e-5 over 10B tokens, then constant.
    let s = Schedule::from_config(&cfg("{kind: constant, unit: tokens, warmup: 10B, start_lr: 1.0e-7}"), 1e-5, 100e9).unwrap();
    assert!(close(s.lr_for(3, 0), 1e-7, 1e-5));
    assert!(close(s.lr_for(0, 5_000_000_000), 1e-7 + (1e-5 - 1e-7) * 0.5, 1e-5));
    assert!(close(s.lr_for(0, 50_000_000_000), 1e-5, 1e-5));
}

#[test]
fn inconsistent_schedules_are_rejected_with_the_field() {
    let err = |yaml: &str, len: f64| format!("{:#}", Schedule::from_config(&cfg(yaml), 1e-3, len).unwrap_err());
    assert!(err("{kind: wsd, warmup: 10}", 100.0).contains("schedule.decay"));
    assert!(err("{kind: wsd, warmup: 80, decay: 30}", 100.0).contains("longer than the run"));
    assert!(err("{kind: rewarm, warmup: 10}", 100.0).contains("schedule.start_lr"));
    assert!(err("{kind: cosine, warmup: 200}", 100.0).contains("schedule.warmup"));
    assert!(err("{kind: wsd, decay: 10, decay_shape: exponential}", 100.0).contains("schedule.min_lr"));
    assert!(err("{kind: cosine, warmup: 1, warmup_fraction: 0.1}", 100.0).contains("not both"));
}
