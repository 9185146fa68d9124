//! The training progress bar (loss, tokens/s, ETA) and the end-of-run summary.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

/// A progress bar over the run's budget (steps or tokens), hidden when `enabled` is false or
/// stderr is not a terminal (indicatif hides itself then).
pub struct TrainProgress {
    bar: ProgressBar,
}

impl TrainProgress {
    /// `total` and later positions are in `unit` ("steps" or "tokens"); `start` is where a
    /// resumed run begins.
    pub fn new(total: u64, start: u64, unit: &str, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if enabled { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() },
        );
        let template = format!(
            "{{elapsed_precise}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} | {{msg}} | ETA {{eta}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(start);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(500));
        Self { bar }
    }

    /// Move to `position` and show the latest numbers.
    pub fn update(&self, position: u64, step: u64, loss: f64, tokens_per_s: f64) {
        self.bar.set_position(position);
        self.bar.set_message(format!("step {step} loss {loss:.4} {} tok/s", human_rate(tokens_per_s)));
    }

    /// Print a line above the bar without tearing it (validation results, warnings).
    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub steps: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub skipped_nonfinite: u64,
    pub skipped_spike: u64,
    pub last_checkpoint: Option<std::path::PathBuf>,
    /// Peak memory over the run, described (e.g. `3.20 GiB (peak of the GPU memory pool)`).
    pub peak_memory: Option<String>,
    /// With several ranks: one line per rank (peak memory, communication per step).
    pub ranks: Option<String>,
    /// Why the run ended ("reached max_tokens", "interrupted", ...).
    pub stop_reason: String,
}

impl RunSummary {
    /// The multi-line summary printed at the end of `cpt train`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let tok_s = if self.elapsed_s > 0.0 { self.tokens as f64 / self.elapsed_s } else { 0.0 };
        out.push_str(&format!("run ended: {}\n", self.stop_reason));
        out.push_str(&format!(
            "  steps {} | tokens {} | {:.1} s | {} tok/s\n",
            self.steps,
            self.tokens,
            self.elapsed_s,
            human_rate(tok_s)
        ));
        match (self.first_loss, self.final_loss) {
            (Some(a), Some(b)) => out.push_str(&format!("  loss {a:.4} -> {b:.4}\n")),
            (None, Some(b)) => out.push_str(&format!("  loss {b:.4}\n")),
            _ => {}
        }
        if self.skipped_nonfinite + self.skipped_spike > 0 {
            out.push_str(&format!(
                "  skipped steps: {} non-finite, {} loss spikes\n",
                self.skipped_nonfinite, self.skipped_spike
            ));
        }
        if let Some(peak) = &self.peak_memory {
            out.push_str(&format!("  peak memory: {peak}\n"));
        }
        if let Some(ranks) = &self.ranks {
            out.push_str(&format!("  {ranks}\n"));
        }
        if let Some(ckpt) = &self.last_checkpoint {
            out.push_str(&format!("  last checkpoint: {}\n", ckpt.display()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_counts_losses_and_skips() {
        let s = RunSummary {
            steps: 120,
            tokens: 491_520,
            elapsed_s: 40.0,
            first_loss: Some(9.01),
            final_loss: Some(4.25),
            skipped_nonfinite: 1,
            skipped_spike: 2,
            last_checkpoint: Some("runs/tiny/checkpoints/step-00000120".into()),
            peak_memory: Some("1.25 GiB (peak resident set of the process)".into()),
            ranks: None,
            stop_reason: "reached max_steps".into(),
        };
        let text = s.render();
        assert!(text.contains("run ended: reached max_steps"), "{text}");
        assert!(text.contains("steps 120 | tokens 491520 | 40.0 s | 12.3k tok/s"), "{text}");
        assert!(text.contains("loss 9.0100 -> 4.2500"), "{text}");
        assert!(text.contains("skipped steps: 1 non-finite, 2 loss spikes"), "{text}");
        assert!(text.contains("step-00000120"), "{text}");
        assert!(text.contains("peak memory: 1.25 GiB"), "{text}");
        let quiet = RunSummary { stop_reason: "interrupted".into(), ..Default::default() }.render();
        assert!(!quiet.contains("skipped") && !quiet.contains("loss"), "{quiet}");
    }

    #[test]
    fn hidden_bar_accepts_updates() {
        let bar = TrainProgress::new(100, 10, "steps", false);
        bar.update(20, 20, 3.5, 1500.0);
        assert_eq!(bar.bar.position(), 20);
        bar.finish();
    }
}
