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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings { spike_sigma: Some(3.0), window: 10, min_history: 5, max_consecutive_skips: 3 }
    }

    #[test]
    fn non_finite_loss_or_gradient_is_skipped_and_counted() {
        let mut g = Guard::new(settings());
        assert_eq!(g.assess(f64::NAN, 1.0), Verdict::Skip(SkipReason::NonFiniteLoss));
        assert_eq!(g.assess(2.0, f64::INFINITY), Verdict::Skip(SkipReason::NonFiniteGrad));
        assert_eq!(g.skipped_nonfinite, 2);
        assert_eq!(g.assess(2.0, 1.0), Verdict::Accept);
        assert_eq!(g.consecutive_skips, 0);
        assert_eq!(g.recent, VecDeque::from(vec![2.0]), "skipped losses never enter the window");
    }

    #[test]
    fn spikes_are_judged_against_mean_plus_k_sigma_of_accepted_losses() {
        let mut g = Guard::new(settings());
        let losses = [2.0, 2.1, 1.9, 2.0, 2.2, 1.8];
        for (i, l) in losses.iter().enumerate() {
            // Below min_history nothing is a spike, however large.
            if i < 4 {
                assert_eq!(g.spike_threshold(), None);
            }
            assert_eq!(g.assess(*l, 1.0), Verdict::Accept);
        }
        let n = losses.len() as f64;
        let mean = losses.iter().sum::<f64>() / n;
        let std = (losses.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let threshold = mean + 3.0 * std;
        assert!((g.spike_threshold().unwrap() - threshold).abs() < 1e-12);
        assert_eq!(g.assess(threshold - 1e-9, 1.0), Verdict::Accept);
        let t = g.spike_threshold().unwrap();
        match g.assess(t + 0.5, 1.0) {
            Verdict::Skip(SkipReason::LossSpike { loss, threshold }) => {
                assert_eq!(loss, t + 0.5);
                assert_eq!(threshold, t);
            }
            other => panic!("expected a spike, got {other:?}"),
        }
        assert_eq!(g.skipped_spike, 1);
    }

    #[test]
    fn window_keeps_only_the_latest_accepted_losses() {
        let mut g = Guard::new(GuardSettings { spike_sigma: None, ..settings() });
        for i in 0..25 {
            assert_eq!(g.assess(i as f64 * 100.0, 1.0), Verdict::Accept, "no spike detection when disabled");
        }
        assert_eq!(g.recent.len(), 10);
        assert_eq!(g.recent.front(), Some(&1500.0));
    }

    #[test]
    fn consecutive_skips_stop_the_run() {
        let mut g = Guard::new(settings());
        assert!(matches!(g.assess(f64::NAN, 1.0), Verdict::Skip(_)));
        assert!(matches!(g.assess(1.0, f64::NAN), Verdict::Skip(_)));
        assert_eq!(
            g.assess(f64::NAN, 1.0),
            Verdict::Stop { reason: SkipReason::NonFiniteLoss, consecutive: 3 }
        );
    }

    #[test]
    fn restored_state_gives_the_same_verdicts() {
        let mut a = Guard::new(settings());
        for l in [3.1, 3.05, 2.97, 3.2, 3.0, 2.9, 3.01] {
            a.assess(l, 1.0);
        }
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Guard = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b);
        for l in [3.0, 4.5, f64::NAN, 2.95, 3.6] {
            assert_eq!(a.assess(l, 1.0), b.assess(l, 1.0));
        }
        assert_eq!(a, b);
    }
}
