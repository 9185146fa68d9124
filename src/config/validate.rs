//! Value checks that serde cannot express, each naming the field's path, and the quantities
//! the training loop derives from the config (steps, tokens per step, the schedule).
use super::{OptimKind, TrainConfig};
use crate::train::guard::GuardSettings;
use crate::train::optim::{Algorithm, OptimizerSettings};
use crate::train::schedule::{Schedule, Unit};
use anyhow::{anyhow, Result};

impl TrainConfig {
    /// Every problem found, one per line as `path: problem`.
    pub fn validate(&self) -> Result<()> {
        let mut problems: Vec<String> = Vec::new();
        let mut check = |ok: bool, path: &str, what: &str| {
            if !ok {
                problems.push(format!("{path}: {what}"));
            }
        };

        check(!self.model.path.as_os_str().is_empty(), "model.path", "must not be empty");
        if let Some(init) = &self.model.init {
            check(!init.preset.is_empty(), "model.init.preset", "must not be empty");
            check(init.vocab_size.is_none_or(|v| v > 0), "model.init.vocab_size", "must be > 0");
        }

        let o = &self.optim;
        check(o.lr.is_finite() && o.lr > 0.0, "optim.lr", "must be > 0");
        check(o.weight_decay.is_finite() && o.weight_decay >= 0.0, "optim.weight_decay", "must be >= 0");
        if o.kind == OptimKind::Adamw {
            for (i, b) in o.betas.iter().enumerate() {
                check((0.0..1.0).contains(b), &format!("optim.betas[{i}]"), "must be in [0, 1)");
            }
            check(o.eps.is_finite() && o.eps > 0.0, "optim.eps", "must be > 0");
        }
        check((0.0..1.0).contains(&o.momentum), "optim.momentum", "must be in [0, 1)");
        check(!o.nesterov || o.momentum > 0.0, "optim.nesterov", "needs optim.momentum > 0");
        check(o.kind == OptimKind::Sgd || (o.momentum == 0.0 && !o.nesterov), "optim.momentum", "only applies to kind sgd");
        if let Some(c) = o.grad_clip {
            check(c.is_finite() && c > 0.0, "optim.grad_clip", "must be > 0 (or null for no clipping)");
        }

        check(self.eval.batch_tokens >= 1, "eval.batch_tokens", "must be >= 1");
        check(self.kernels.ce_chunk >= 1, "kernels.ce_chunk", "must be >= 1");

        let b = &self.batch;
        check(b.micro_batch >= 1, "batch.micro_batch", "must be >= 1");
        check(b.seq_len >= 1, "batch.seq_len", "must be >= 1");
        check(b.grad_accum.is_none_or(|g| g >= 1), "batch.grad_accum", "must be >= 1");
        check(
            b.grad_accum.is_none() || b.tokens_per_step.is_none(),
            "batch.tokens_per_step",
            "give grad_accum or tokens_per_step, not both",
        );
        if let Some(t) = b.tokens_per_step {
            let per_micro = (b.micro_batch * b.seq_len) as u64;
            check(
                per_micro > 0 && t.0 > 0 && t.0 % per_micro == 0,
                "batch.tokens_per_step",
                &format!("must be a positive multiple of micro_batch * seq_len = {per_micro}"),
            );
        }

        let t = &self.train;
        match (t.max_tokens, t.max_steps) {
            (None, None) => check(false, "train", "set max_tokens or max_steps"),
            (Some(_), Some(_)) => check(false, "train", "set max_tokens or max_steps, not both"),
            (Some(n), None) => check(n.0 > 0, "train.max_tokens", "must be > 0"),
            (None, Some(n)) => check(n.0 > 0, "train.max_steps", "must be > 0"),
        }

        let s = &self.schedule;
        if let Some(f) = s.warmup_fraction {
            check((0.0..=1.0).contains(&f), "schedule.warmup_fraction", "must be in [0, 1]");
        }
        if let Some(f) = s.decay_fraction {
            check(f > 0.0 && f <= 1.0, "schedule.decay_fraction", "must be in (0, 1]");
        }
        if let Some(m) = s.min_lr {
            check(m >= 0.0 && m <= o.lr, "schedule.min_lr", "must be in [0, optim.lr]");
        }
        if let Some(r) = s.min_lr_ratio {
            check((0.0..=1.0).contains(&r), "schedule.min_lr_ratio", "must be in [0, 1]");
        }
        if let Some(l) = s.start_lr {
            check(l.is_finite() && l >= 0.0, "schedule.start_lr", "must be >= 0");
        }
        let wsd_only = s.decay.is_some() || s.decay_fraction.is_some();
        check(
            !wsd_only || s.kind == super::ScheduleKind::Wsd,
            "schedule.decay",
            "only applies to kind wsd (cosine/linear/rewarm decay over the whole run)",
        );
        let c = &self.checkpoint;
        check(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1");
        check(
            c.every_steps.is_none() || c.every_tokens.is_none(),
            "checkpoint.every_tokens",
            "give every_steps or every_tokens, not both",
        );
        check(c.every_steps.is_none_or(|n| n.0 > 0), "checkpoint.every_steps", "must be > 0");
        check(c.every_tokens.is_none_or(|n| n.0 > 0), "checkpoint.every_tokens", "must be > 0");
        check(c.max_shard_bytes.0 > 0, "checkpoint.max_shard_bytes", "must be > 0");

        check(self.logging.every_steps.0 >= 1, "logging.every_steps", "must be >= 1");
        check(self.validation.every_steps.is_none_or(|n| n.0 > 0), "validation.every_steps", "must be > 0");
        check(self.validation.max_windows >= 1, "validation.max_windows", "must be >= 1");
        check(self.eval.every_steps.is_none_or(|n| n.0 > 0), "eval.every_steps", "must be > 0");
        if let Some(g) = &self.eval.generate {
            check(!g.prompts.is_empty(), "eval.generate.prompts", "give at least one prompt");
            check(g.every_steps.0 > 0, "eval.generate.every_steps", "must be > 0");
            check(g.max_new_tokens >= 1, "eval.generate.max_new_tokens", "must be >= 1");
            check(g.temperature >= 0.0 && g.temperature.is_finite(), "eval.generate.temperature", "must be >= 0 (0: greedy)");
        }

        if let Some(lora) = &self.lora {
            for problem in lora.problems() {
                let (path, what) = problem.split_once(": ").unwrap_or(("lora", problem.as_str()));
                check(false, path, what);
            }
            if let Some(freeze) = &self.freeze {
                check(
                    freeze.train_only == super::FreezeTarget::NewVocabRows,
                    "freeze.train_only",
                    "with lora, freeze restricts the saved modules: only new_vocab_rows applies (the adapters always train)",
                );
                // An adapter to continue (init_from) may bring its own modules_to_save.
                let saves = match (&lora.modules_to_save, &lora.init_from) {
                    (Some(m), _) => !m.is_empty(),
                    (None, from) => from.is_some(),
                };
                check(saves, "freeze", "with lora, list embed_tokens and/or lm_head in lora.modules_to_save for their new rows to train");
            }
            check(
                self.parallel.zero != crate::dist::config::ZeroStage::Zero3,
                "parallel.zero",
                "3 shards trainable decoder weights; a LoRA run trains adapters over a frozen base (use zero 0 or 1)",
            );
        }

        let g = &self.guard;
        if let Some(k) = g.spike_sigma {
            check(k.is_finite() && k > 0.0, "guard.spike_sigma", "must be > 0 (or null to disable)");
        }
        check(g.window >= 2, "guard.window", "must be >= 2");
        check(g.min_history >= 2 && g.min_history <= g.window, "guard.min_history", "must be in [2, guard.window]");
        check(g.max_consecutive_skips >= 1, "guard.max_consecutive_skips", "must be >= 1");
        problems.extend(self.parallel.problems(self.kernels.recompute));

        if problems.is_empty() {
            // The schedule's own consistency checks (phases fit in the run, etc.).
            if let Err(e) = self.schedule() {
                problems.push(format!("{e:#}"));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("invalid config:\n  {}", problems.join("\n  ")))
        }
    }

    /// Micro-batches per optimiser step.
    pub fn grad_accum(&self) -> u64 {
        let per_micro = (self.batch.micro_batch * self.batch.seq_len) as u64;
        match (self.batch.grad_accum, self.batch.tokens_per_step) {
            (Some(g), _) => g as u64,
            (None, Some(t)) if per_micro > 0 => (t.0 / per_micro).max(1),
            _ => 1,
        }
    }

    /// Tokens per optimiser step (micro_batch * seq_len * grad_accum).
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch.micro_batch * self.batch.seq_len) as u64 * self.grad_accum()
    }

    /// The number of optimiser steps the run takes (max_tokens rounded up to whole steps).
    pub fn total_steps(&self) -> u64 {
        match (self.train.max_steps, self.train.max_tokens) {
            (Some(s), _) => s.0,
            (None, Some(t)) => t.0.div_ceil(self.tokens_per_step().max(1)),
            (None, None) => 0,
        }
    }

    /// The run length in the schedule's unit.
    pub fn run_length(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Steps => self.total_steps(),
            Unit::Tokens => match self.train.max_tokens {
                Some(t) => t.0,
                None => self.total_steps() * self.tokens_per_step(),
            },
        }
    }

    /// The resolved LR schedule (peak = optim.lr).
    pub fn schedule(&self) -> Result<Schedule> {
        let length = self.run_length(self.schedule.unit) as f64;
        Schedule::from_config(&self.schedule, self.optim.lr, length)
    }

    pub fn optimizer_settings(&self) -> OptimizerSettings {
        let o = &self.optim;
        let algorithm = match o.kind {
            OptimKind::Adamw => Algorithm::AdamW { beta1: o.betas[0], beta2: o.betas[1], eps: o.eps },
            OptimKind::Sgd => Algorithm::Sgd { momentum: o.momentum, nesterov: o.nesterov },
        };
        OptimizerSettings { algorithm, weight_decay: o.weight_decay, decay_embeddings: o.decay_embeddings }
    }

    pub fn guard_settings(&self) -> GuardSettings {
        GuardSettings {
            spike_sigma: self.guard.spike_sigma,
            window: self.guard.window,
            min_history: self.guard.min_history,
            max_consecutive_skips: self.guard.max_consecutive_skips,
        }
    }

    /// Whether a checkpoint is due after a step that brought the counters from
    /// `prev_tokens` tokens to (`step`, `tokens`).
    pub fn checkpoint_due(&self, prev_tokens: u64, step: u64, tokens: u64) -> bool {
        let c = &self.checkpoint;
        if let Some(n) = c.every_steps {
            return step % n.0 == 0;
        }
        if let Some(n) = c.every_tokens {
            return tokens / n.0 > prev_tokens / n.0;
        }
        false
    }
}
