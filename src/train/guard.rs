//! Guard rails: skip a step whose loss or gradient is not finite, or whose loss spikes above
//! the rolling mean + k sigma of recently accepted steps; stop after too many skips in a row.
//! The whole state is serialisable so a resumed run judges spikes exactly as before.
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardSettings {
    /// k in "loss > mean + k * std"; None disables spike detection.
    pub spike_sigma: Option<f64>,
    /// Accepted losses the mean and std are taken over.
    pub window: usize,
    /// Accepted losses needed before spikes are judged.
    pub min_history: usize,
    /// Skips in a row that stop the run.
    pub max_consecutive_skips: u64,
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    NonFiniteLoss,
    NonFiniteGrad,
    LossSpike { loss: f64, threshold: f64 },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NonFiniteLoss => write!(f, "non-finite loss"),
            SkipReason::NonFiniteGrad => write!(f, "non-finite gradient"),
            SkipReason::LossSpike { loss, threshold } => write!(f, "loss spike ({loss:.4} > {threshold:.4})"),
        }
    }
}

/// What the loop does with the step it just computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Apply the optimiser update.
    Accept,
    /// Drop this step's gradients and move on.
    Skip(SkipReason),
    /// Drop it and stop the run (write a checkpoint of the last good state first).
    Stop { reason: SkipReason, consecutive: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    pub settings: GuardSettings,
    /// Most recent accepted losses, oldest first.
    pub recent: VecDeque<f64>,
    pub consecutive_skips: u64,
    pub skipped_nonfinite: u64,
    pub skipped_spike: u64,
}

impl Guard {
    pub fn new(settings: GuardSettings) -> Self {
        Self { settings, recent: VecDeque::new(), consecutive_skips: 0, skipped_nonfinite: 0, skipped_spike: 0 }
    }

    /// The spike threshold now (mean + k * population std), if spikes are being judged.
    pub fn spike_threshold(&self) -> Option<f64> {
        let k = self.settings.spike_sigma?;
        if self.recent.len() < self.settings.min_history.max(2) {
            return None;
        }
        let n = self.recent.len() as f64;
        let mean = self.recent.iter().sum::<f64>() / n;
        let var = self.recent.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some(mean + k * var.sqrt())
    }

    /// Judge a step from its loss and pre-clip gradient norm, and update the counters.
    pub fn assess(&mut self, loss: f64, grad_norm: f64) -> Verdict {
        let reason = if !loss.is_finite() {
            Some(SkipReason::NonFiniteLoss)
        } else if !grad_norm.is_finite() {
            Some(SkipReason::NonFiniteGrad)
        } else {
            match self.spike_threshold() {
                Some(threshold) if loss > threshold => Some(SkipReason::LossSpike { loss, threshold }),
                _ => None,
            }
        };
        match reason {
            None => {
                self.consecutive_skips = 0;
                self.recent.push_back(loss);
                while self.recent.len() > self.settings.window {
                    self.recent.pop_front();
                }
                Verdict::Accept
            }
            Some(reason) => {
                self.consecutive_skips += 1;
                match reason {
                    SkipReason::LossSpike { .. } => self.skipped_spike += 1,
                    _ => self.skipped_nonfinite += 1,
                }
                if self.consecutive_skips >= self.settings.max_consecutive_skips {
                    Verdict::Stop { reason, consecutive: self.consecutive_skips }
                } else {
                    Verdict::Skip(reason)
                }
            }
        }
    }
}
