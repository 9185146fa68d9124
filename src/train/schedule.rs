//! Learning-rate schedules as pure functions of the position in training (steps or tokens
//! seen), so a resumed run needs nothing but its position to continue the schedule.
//!
//! Every schedule has the same three phases: a linear warmup from `start_lr` to the peak,
//! a plateau at the peak, and a decay to a floor:
//! - `cosine` / `linear`: warmup, then decay over the rest of the run (HF transformers'
//!   `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup`, with a floor as
//!   `get_cosine_with_min_lr_schedule_with_warmup`).
//! - `wsd`: warmup-stable-decay (MiniCPM, arXiv 2404.06395): peak until the last `decay`
//!   positions, then linear, cosine, exponential or 1-sqrt (Hägele et al., arXiv 2405.18392)
//!   decay to the floor.
//! - `constant`: warmup then the peak forever.
//! - `rewarm`: continual pre-training (arXiv 2403.08763): from the LR the previous run ended
//!   at (`start_lr`) up to the peak, then cosine or linear re-decay to the floor.
use crate::config::{ScheduleConfig, ScheduleKind};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// What a schedule position counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    #[default]
    Steps,
    Tokens,
}

/// Shape of the decay phase; `q` runs from 0 (decay start) to 1 (decay end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    /// `1 - q`
    Linear,
    /// `(1 + cos(pi q)) / 2`
    Cosine,
    /// Geometric interpolation `peak * (floor / peak)^q` (needs a floor > 0). MiniCPM's
    /// exponential decay with half-life `h` is this with `floor = peak * 0.5^(decay / h)`.
    Exponential,
    /// `1 - sqrt(q)` (arXiv 2405.18392, used with WSD).
    #[serde(rename = "1-sqrt", alias = "one_minus_sqrt")]
    OneMinusSqrt,
}

/// A fully resolved schedule: every length is in `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub unit: Unit,
    pub peak_lr: f64,
    pub start_lr: f64,
    pub warmup: f64,
    /// Where the decay begins and ends; `decay: None` means no decay (constant).
    pub decay_start: f64,
    pub decay_end: f64,
    pub floor_lr: f64,
    pub decay: Option<DecayShape>,
}

impl Schedule {
    /// The learning rate at `position` (steps or tokens already trained, in `unit`).
    pub fn lr_at(&self, position: f64) -> f64 {
        let p = position.max(0.0);
        if p < self.warmup {
            return self.start_lr + (self.peak_lr - self.start_lr) * p / self.warmup;
        }
        let Some(shape) = self.decay else { return self.peak_lr };
        if p < self.decay_start {
            return self.peak_lr;
        }
        let span = self.decay_end - self.decay_start;
        let q = if span > 0.0 { ((p - self.decay_start) / span).min(1.0) } else { 1.0 };
        let (peak, floor) = (self.peak_lr, self.floor_lr);
        match shape {
            DecayShape::Linear => floor + (peak - floor) * (1.0 - q),
            DecayShape::Cosine => floor + (peak - floor) * 0.5 * (1.0 + (PI * q).cos()),
            DecayShape::OneMinusSqrt => floor + (peak - floor) * (1.0 - q.sqrt()),
            DecayShape::Exponential => peak * (floor / peak).powf(q),
        }
    }

    /// The learning rate for a step that begins after `step` steps and `tokens` tokens.
    pub fn lr_for(&self, step: u64, tokens: u64) -> f64 {
        self.lr_at(self.position(step, tokens))
    }

    /// The position in this schedule's unit.
    pub fn position(&self, step: u64, tokens: u64) -> f64 {
        match self.unit {
            Unit::Steps => step as f64,
            Unit::Tokens => tokens as f64,
        }
    }

    /// Build from the `schedule:` config. `peak_lr` is `optim.lr`; `run_length` is the
    /// training budget in the schedule's unit (used when `schedule.total` is not given).
    pub fn from_config(cfg: &ScheduleConfig, peak_lr: f64, run_length: f64) -> Result<Self> {
        let total = cfg.total.map(|c| c.0 as f64).unwrap_or(run_length);
        ensure!(total > 0.0, "schedule: the run length must be > 0 (set train.max_steps/max_tokens or schedule.total)");
        let warmup = match (cfg.warmup, cfg.warmup_fraction) {
            (Some(_), Some(_)) => bail!("schedule: give warmup or warmup_fraction, not both"),
            (Some(w), None) => w.0 as f64,
            (None, Some(f)) => f * total,
            (None, None) => 0.0,
        };
        ensure!(warmup <= total, "schedule.warmup ({warmup}) is longer than the run ({total})");
        let floor_lr = match (cfg.min_lr, cfg.min_lr_ratio) {
            (Some(_), Some(_)) => bail!("schedule: give min_lr or min_lr_ratio, not both"),
            (Some(m), None) => m,
            (None, Some(r)) => r * peak_lr,
            (None, None) => 0.0,
        };
        let start_lr = cfg.start_lr.unwrap_or(0.0);
        let mut schedule = Schedule {
            unit: cfg.unit,
            peak_lr,
            start_lr,
            warmup,
            decay_start: warmup,
            decay_end: total,
            floor_lr,
            decay: None,
        };
        match cfg.kind {
            ScheduleKind::Constant => {}
            ScheduleKind::Cosine => schedule.decay = Some(DecayShape::Cosine),
            ScheduleKind::Linear => schedule.decay = Some(DecayShape::Linear),
            ScheduleKind::Rewarm => {
                ensure!(cfg.start_lr.is_some(), "schedule.start_lr: required for kind rewarm (the LR the previous run ended at)");
                let shape = cfg.decay_shape.unwrap_or(DecayShape::Cosine);
                ensure!(
                    matches!(shape, DecayShape::Cosine | DecayShape::Linear),
                    "schedule.decay_shape: rewarm re-decays with cosine or linear"
                );
                schedule.decay = Some(shape);
            }
            ScheduleKind::Wsd => {
                let decay = match (cfg.decay, cfg.decay_fraction) {
                    (Some(_), Some(_)) => bail!("schedule: give decay or decay_fraction, not both"),
                    (Some(d), None) => d.0 as f64,
                    (None, Some(f)) => f * total,
                    (None, None) => bail!("schedule.decay or schedule.decay_fraction: required for kind wsd"),
                };
                ensure!(
                    warmup + decay <= total,
                    "schedule: warmup ({warmup}) + decay ({decay}) is longer than the run ({total})"
                );
                schedule.decay_start = total - decay;
                schedule.decay = Some(cfg.decay_shape.unwrap_or(DecayShape::Linear));
            }
        }
        if schedule.decay == Some(DecayShape::Exponential) {
            ensure!(floor_lr > 0.0, "schedule.min_lr: exponential decay needs a floor > 0");
        }
        Ok(schedule)
    }
}
