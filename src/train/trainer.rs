//! The training loop. `train` sets a run up (`Trainer::setup`), then takes steps until the
//! budget is spent, a signal arrives or the guard stops the run; each step reads as what it
//! does: draw micro-batches, forward/backward, reduce, guard, optimiser step, log, validate,
//! evaluate, checkpoint.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::sampler::Sampler;
use crate::kernels::KernelMode;
use crate::model::causal_lm::CausalLm;
use crate::util::atomic::write_file_atomic;
use crate::util::progress::{RunSummary, TrainProgress};
use crate::util::signals::StopSignal;

use super::batch::{draw_micro_batches, MicroBatch};
use super::checkpoint::{Checkpoints, TrainerState, STATE_FORMAT};
use super::evals::TrainingEvals;
use super::forward_backward::{forward_backward, LocalGradients, StepGradients};
use super::freeze::FreezePhase;
use super::guard::{Guard, Verdict};
use super::memory::GIB;
use super::metrics::{MetricsWriter, StepRecord};
use super::optim::Optimizer;
use super::run_log::RunLog;
use super::samples::TrainingSamples;
use super::schedule::Schedule;
use super::setup::{configure_threads, ensure_model, flops_per_token, open_sampler, print_start, select_device};
use super::tensorboard::TensorBoardWriter;
use super::trained_model::{self, trainable};
use super::validate::validation_losses;

pub use super::resume::Resume;

/// H100/H200 dense bf16 peak, the denominator of MFU (reference.md, Throughput).
const PEAK_FLOPS: f64 = 989e12;
/// Name of the marker a finished run leaves in its directory (read by `cpt sweep`).
pub const DONE_FILE: &str = "DONE.json";
/// Environment variable naming steps (1-based, comma-separated) whose loss is replaced by
/// NaN: fault injection that lets tests and users check the guard rails end to end.
pub const INJECT_NAN_ENV: &str = "CPT_INJECT_NAN_AT_STEPS";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub resume: Resume,
    /// Draw the progress bar (also subject to `logging.progress_bar`).
    pub progress: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The token/step budget is spent.
    Completed,
    /// SIGINT or SIGTERM: a checkpoint was written first.
    Interrupted,
    /// The guard saw too many skipped steps in a row.
    GuardStopped,
}

/// What `train` returns and writes to `DONE.json` (completed runs only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub ending: Ending,
    pub steps: u64,
    pub tokens: u64,
    pub final_loss: Option<f64>,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    pub last_checkpoint: Option<PathBuf>,
    /// FLOPs spent (6N + 12 L H Q T per token, PaLM appendix B).
    pub flops: f64,
}

/// Runs (or resumes) the training described by `cfg`.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    let mut run = Trainer::setup(cfg, opts)?;
    if cfg.validation.at_start && run.counters.step == 0 {
        run.validate()?;
    }
    run.log.restart_memory();
    let mut ending = Ending::Completed;
    while run.counters.step < run.total_steps {
        if let Some(end) = run.step()? {
            ending = end;
            break;
        }
    }
    run.finish(ending)
}

/// The loop's position; what a checkpoint must restore besides weights, moments, guard and
/// sampler.
struct Counters {
    step: u64,
    tokens: u64,
    optimizer_steps: u64,
    /// The LR of the last applied update.
    lr: f64,
    /// Wall time of the run before this process (resumes).
    elapsed_before: f64,
}

impl Counters {
    /// Counts one more step of `tokens`; returns the token count before it.
    fn advance(&mut self, tokens: u64) -> u64 {
        let before = self.tokens;
        self.step += 1;
        self.tokens += tokens;
        before
    }

    fn from_state(state: &TrainerState) -> Self {
        Self {
            step: state.step,
            tokens: state.tokens,
            optimizer_steps: state.optimizer_steps,
            lr: state.lr,
            elapsed_before: state.elapsed_s,
        }
    }
}

/// Everything a run holds between steps.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    device: Device,
    model: CausalLm,
    sampler: Sampler,
    optimizer: Optimizer,
    schedule: Schedule,
    guard: Guard,
    freeze: FreezePhase,
    counters: Counters,
    log: RunLog,
    checkpoints: Checkpoints,
    evals: Option<TrainingEvals>,
    samples: Option<TrainingSamples>,
    stop: StopSignal,
    /// Steps whose loss is replaced by NaN (`INJECT_NAN_ENV`).
    nan_steps: Vec<u64>,
    total_steps: u64,
    tokens_per_step: u64,
    flops_per_token: f64,
    started: Instant,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
    last_checkpoint: Option<PathBuf>,
}

impl<'a> Trainer<'a> {
    /// Validates the config, prepares the run directory, device, model, data and sampler,
    /// optimiser, schedule, guard and writers; restores them from a checkpoint on a resume.
    fn setup(cfg: &'a TrainConfig, opts: &TrainOptions) -> Result<Self> {
        cfg.validate()?;
        let run_dir = cfg.run.out_dir.clone();
        std::fs::create_dir_all(&run_dir).with_context(|| format!("creating run directory {}", run_dir.display()))?;
        let checkpoints = Checkpoints::new(run_dir.join("checkpoints"), cfg.checkpoint.keep_last);
        checkpoints.remove_stale_temporaries()?;
        let resume_from = opts.resume.resolve(&checkpoints)?;

        let device = select_device(cfg)?;
        let compute_dtype = cfg.run.dtype.to_candle();
        ensure_model(cfg)?;
        configure_threads(cfg)?;
        let mut model = trained_model::load(cfg, resume_from.as_deref(), &device, compute_dtype)?;
        // Every checkpoint carries the tokenizer files of the base.
        let model_dir = resume_from.clone().unwrap_or_else(|| cfg.model.path.clone());
        model.set_kernels(cfg.kernels).context("kernels")?;
        write_file_atomic(&run_dir.join("config.yaml"), cfg.to_yaml()?.as_bytes())?;

        let evals = TrainingEvals::prepare(cfg, &model_dir)?;
        let samples = TrainingSamples::prepare(cfg, &model_dir)?;
        let mut sampler = open_sampler(cfg, &model)?;
        for w in sampler.warnings() {
            eprintln!("warning: {w}");
        }
        let mut optimizer = Optimizer::new(trainable(&model), cfg.optimizer_settings())?;
        // Fused kernels include the multi-tensor AdamW (one launch per step on a GPU).
        optimizer.set_multi_tensor(cfg.kernels.mode == KernelMode::Fused);
        let schedule: Schedule = cfg.schedule()?;
        let mut guard = Guard::new(cfg.guard_settings());
        let mut counters = Counters { step: 0, tokens: 0, optimizer_steps: 0, lr: 0.0, elapsed_before: 0.0 };

        let metrics_path = run_dir.join("metrics.jsonl");
        let metrics = match &resume_from {
            Some(dir) => {
                let state = super::resume::restore(dir, &mut optimizer, &mut sampler, &device)?;
                trained_model::restore_random_state(&model, &state.rng).with_context(|| format!("resuming from {}", dir.display()))?;
                guard = state.guard.clone();
                counters = Counters::from_state(&state);
                eprintln!("resumed from {} at step {} ({} tokens)", dir.display(), state.step, state.tokens);
                MetricsWriter::resume(&metrics_path, state.step)?
            }
            None => MetricsWriter::create(&metrics_path)?,
        };
        let tensorboard = if cfg.logging.tensorboard { Some(TensorBoardWriter::create(&run_dir.join("tb"))?) } else { None };
        let stop = StopSignal::install()?;

        print_start(cfg, &model, &device, compute_dtype);
        let total_steps = cfg.total_steps();
        let progress = TrainProgress::new(total_steps, counters.step, "steps", opts.progress && cfg.logging.progress_bar);
        let log = RunLog::new(metrics, tensorboard, progress, &device, counters.tokens);
        Ok(Self {
            cfg,
            flops_per_token: flops_per_token(&model, cfg.batch.seq_len),
            device,
            model,
            sampler,
            optimizer,
            schedule,
            guard,
            freeze: FreezePhase::default(),
            counters,
            log,
            checkpoints,
            evals,
            samples,
            stop,
            nan_steps: nan_injection_steps()?,
            total_steps,
            tokens_per_step: cfg.tokens_per_step(),
            started: Instant::now(),
            first_loss: None,
            last_loss: None,
            last_checkpoint: resume_from,
        })
    }

    /// One optimiser step; `Some(ending)` when the run ends after it.
    fn step(&mut self) -> Result<Option<Ending>> {
        self.freeze.apply(self.cfg, &self.model, &mut self.optimizer, self.counters.step)?;
        let micro_batches = self.draw_micro_batches()?;
        let local = self.forward_backward(&micro_batches)?;
        let mut step = self.reduce(local);
        self.inject_fault(&mut step);
        let tokens_before = self.counters.advance(self.tokens_per_step);

        let (verdict, grad_norm) = self.guard(&mut step)?;
        let lr = self.schedule.lr_for(self.counters.step - 1, tokens_before);
        let skipped = match &verdict {
            Verdict::Accept => {
                self.optimizer_step(&mut step, lr)?;
                None
            }
            Verdict::Skip(reason) | Verdict::Stop { reason, .. } => Some(reason.to_string()),
        };
        self.log(&step, lr, grad_norm, skipped)?;
        if self.validation_due() {
            self.validate()?;
        }
        if self.eval_due() {
            self.evaluate()?;
        }
        if self.samples_due() {
            self.write_samples()?;
        }
        let ending = self.ending(&verdict);
        if self.checkpoint_due(tokens_before, ending.as_ref()) {
            self.checkpoint()?;
        }
        if ending == Some(Ending::Interrupted) {
            self.log.println("interrupted: checkpoint written, exiting");
        }
        Ok(ending)
    }

    /// The next `grad_accum` micro-batches of this step.
    fn draw_micro_batches(&mut self) -> Result<Vec<MicroBatch>> {
        let count = self.cfg.grad_accum() as usize;
        draw_micro_batches(&mut self.sampler, count, self.cfg.batch.micro_batch, self.model.device())
    }

    /// Forward and backward of each micro-batch, gradients of the trainable parameters.
    fn forward_backward(&self, micro_batches: &[MicroBatch]) -> Result<LocalGradients> {
        forward_backward(&self.model, trainable(&self.model), micro_batches)
    }

    /// The step's gradients and losses from what the micro-batches left. One process holds
    /// the whole step. With data parallelism, ranks all-reduce `local` (gradients averaged,
    /// loss and per-source sums added) before this, so that the guard sees the same loss and
    /// norm on every rank and every rank takes the same verdict and update.
    fn reduce(&self, local: LocalGradients) -> StepGradients {
        local.into_step(&self.sampler.source_names())
    }

    /// Fault injection for the guard rails: the loss of the listed steps becomes NaN.
    fn inject_fault(&self, step: &mut StepGradients) {
        if self.nan_steps.contains(&(self.counters.step + 1)) {
            step.loss = f64::NAN;
        }
    }

    /// Drops the gradients the freeze masks exclude, takes the global norm of what trains,
    /// and asks the guard whether to apply the update (NaN/inf loss or norm, loss spikes).
    /// It sees reduced values only, so data-parallel ranks reach the same verdict; a
    /// rank-local reason to skip would have to be agreed on here.
    fn guard(&mut self, step: &mut StepGradients) -> Result<(Verdict, f64)> {
        // Masks first, so the norm counts only what trains.
        self.optimizer.apply_masks(&mut step.grads)?;
        let grad_norm = step.grads.global_norm()?;
        let verdict = self.guard.assess(step.loss, grad_norm);
        match &verdict {
            Verdict::Accept => {}
            Verdict::Skip(reason) => self.log.println(&format!("step {}: skipped ({reason})", self.counters.step)),
            Verdict::Stop { reason, consecutive } => self.log.println(&format!(
                "step {}: {consecutive} steps in a row skipped (last: {reason}); stopping with a checkpoint",
                self.counters.step
            )),
        }
        Ok((verdict, grad_norm))
    }

    /// Clips the gradients (`optim.grad_clip`) and updates the parameters at `lr`.
    fn optimizer_step(&mut self, step: &mut StepGradients, lr: f64) -> Result<()> {
        if let Some(max_norm) = self.cfg.optim.grad_clip {
            step.grads.clip_global_norm(max_norm)?;
        }
        self.optimizer.step(&step.grads, lr)?;
        self.counters.optimizer_steps += 1;
        self.counters.lr = lr;
        self.last_loss = Some(step.loss);
        self.first_loss.get_or_insert(step.loss);
        Ok(())
    }

    /// A step record every `logging.every_steps` steps, and for every skipped step.
    fn log(&mut self, step: &StepGradients, lr: f64, grad_norm: f64, skipped: Option<String>) -> Result<()> {
        let elapsed = self.elapsed();
        let due = self.counters.step.is_multiple_of(self.cfg.logging.every_steps.get().max(1)) || skipped.is_some();
        if !due {
            return Ok(());
        }
        let window = self.log.close_window(self.counters.tokens);
        let record = StepRecord {
            step: self.counters.step,
            tokens: self.counters.tokens,
            loss: step.loss,
            lr,
            grad_norm,
            tokens_per_s: window.tokens_per_s,
            elapsed_s: elapsed,
            source_loss: step.source_loss.clone(),
            mfu: self.device.is_cuda().then(|| window.tokens_per_s * self.flops_per_token / PEAK_FLOPS),
            peak_mem_bytes: window.peak_mem_bytes,
            skipped,
        };
        self.log.step(&record)
    }

    /// Every `validation.every_steps` steps, and at the last step so every run ends with a
    /// validation record.
    fn validation_due(&self) -> bool {
        self.cfg
            .validation
            .every_steps
            .is_some_and(|every| self.counters.step.is_multiple_of(every.get().max(1)) || self.counters.step == self.total_steps)
    }

    /// Held-out loss per source and topic; with topic mixing, the sampler's topic weights
    /// follow the new losses.
    fn validate(&mut self) -> Result<()> {
        let (sources, topics) =
            validation_losses(&self.model, &self.sampler, self.cfg.batch.micro_batch, self.cfg.validation.max_windows)?;
        if sources.is_empty() {
            return Ok(());
        }
        let topic_losses = topics.iter().map(|(k, v)| (k.clone(), v.loss)).collect();
        let step = self.counters.step;
        self.log.validation(step, self.counters.tokens, sources, topics)?;
        if let Some(update) = self.sampler.update_topic_mixing(step, &topic_losses)? {
            let mut record = serde_json::to_value(&update)?;
            record["kind"] = "mixing".into();
            self.log.record(&record)?;
            self.log.println(&format!("step {step}: topic weights updated ({:?} rule)", update.rule));
        }
        Ok(())
    }

    /// Every `eval.every_steps` steps and at the last step, when the config names tasks.
    fn eval_due(&self) -> bool {
        let step = self.counters.step;
        self.evals.as_ref().is_some_and(|e| step.is_multiple_of(e.every) || step == self.total_steps)
    }

    /// The benchmarks and perplexity sets of `eval.tasks`, one `eval` record.
    fn evaluate(&mut self) -> Result<()> {
        if let Some(evals) = &self.evals {
            evals.run(&self.model, self.counters.step, self.counters.tokens, &mut self.log)?;
        }
        Ok(())
    }

    /// Every `eval.generate.every_steps` steps and at the last step, when prompts are given.
    fn samples_due(&self) -> bool {
        self.samples.as_ref().is_some_and(|s| s.due(self.counters.step, self.total_steps))
    }

    /// What the model writes after the `eval.generate` prompts, one `sample` record each.
    fn write_samples(&mut self) -> Result<()> {
        if let Some(samples) = &self.samples {
            samples.run(&self.model, self.counters.step, self.counters.tokens, &mut self.log)?;
        }
        Ok(())
    }

    /// How the run ends after this step, if it does: a signal (checked once per step), or
    /// the guard's stop.
    fn ending(&self, verdict: &Verdict) -> Option<Ending> {
        if self.stop.requested() {
            Some(Ending::Interrupted)
        } else if matches!(verdict, Verdict::Stop { .. }) {
            Some(Ending::GuardStopped)
        } else {
            None
        }
    }

    /// `checkpoint.every_steps` / `every_tokens`; at the last step with `checkpoint.at_end`;
    /// always before a signal or the guard ends the run.
    fn checkpoint_due(&self, tokens_before: u64, ending: Option<&Ending>) -> bool {
        let scheduled = self.cfg.checkpoint_due(tokens_before, self.counters.step, self.counters.tokens);
        let last = self.counters.step >= self.total_steps;
        scheduled || ending.is_some() || (last && self.cfg.checkpoint.at_end)
    }

    /// Writes a checkpoint: the model (`trained_model::save`) plus optimiser, sampler, guard and
    /// counters (`checkpoint::Checkpoints`, atomic). The one place a run writes its state.
    fn checkpoint(&mut self) -> Result<()> {
        let cfg = self.cfg;
        let state = TrainerState {
            format: STATE_FORMAT,
            step: self.counters.step,
            tokens: self.counters.tokens,
            schedule_position: self.schedule.position(self.counters.step, self.counters.tokens),
            lr: self.counters.lr,
            optimizer_steps: self.counters.optimizer_steps,
            rng: trained_model::random_state(cfg, &self.model),
            guard: self.guard.clone(),
            sampler: serde_json::to_value(self.sampler.state())?,
            config: serde_json::to_value(cfg)?,
            elapsed_s: self.elapsed(),
        };
        let model = &self.model;
        let dir = self.checkpoints.save(&state, &self.optimizer, |dir| trained_model::save(cfg, model, dir))?;
        self.log.println(&format!("checkpoint: {}", dir.display()));
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    /// Wall time of the run so far, resumes included.
    fn elapsed(&self) -> f64 {
        self.counters.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The summary, `DONE.json` for a completed run, and the outcome (an error when the
    /// guard stopped the run).
    fn finish(mut self, ending: Ending) -> Result<TrainOutcome> {
        let (peak_memory, peak_what) = self.log.finish();
        let elapsed = self.elapsed();
        let counters = &self.counters;
        let outcome = TrainOutcome {
            ending: ending.clone(),
            steps: counters.step,
            tokens: counters.tokens,
            final_loss: self.last_loss,
            skipped_steps: self.guard.skipped_nonfinite + self.guard.skipped_spike,
            elapsed_s: elapsed,
            last_checkpoint: self.last_checkpoint.clone(),
            flops: self.flops_per_token * counters.tokens as f64,
        };
        let summary = RunSummary {
            steps: counters.step,
            tokens: counters.tokens,
            elapsed_s: elapsed,
            first_loss: self.first_loss,
            final_loss: self.last_loss,
            skipped_nonfinite: self.guard.skipped_nonfinite,
            skipped_spike: self.guard.skipped_spike,
            last_checkpoint: self.last_checkpoint,
            peak_memory: peak_memory.map(|b| format!("{:.2} GiB ({peak_what})", b as f64 / GIB)),
            stop_reason: match ending {
                Ending::Completed => format!("trained {} steps; metrics in {}", counters.step, self.log.metrics_path().display()),
                Ending::Interrupted => "interrupted by a signal (checkpoint written)".to_string(),
                Ending::GuardStopped => "stopped by the guard (checkpoint written)".to_string(),
            },
        };
        eprintln!("{}", summary.render());
        match ending {
            Ending::Completed => {
                write_file_atomic(&self.cfg.run.out_dir.join(DONE_FILE), &serde_json::to_vec_pretty(&outcome)?)?;
                Ok(outcome)
            }
            Ending::Interrupted => Ok(outcome),
            Ending::GuardStopped => bail!(
                "training stopped at step {}: {} consecutive steps were skipped by the guard (see {}); the last checkpoint is intact",
                counters.step,
                self.cfg.guard.max_consecutive_skips,
                self.log.metrics_path().display()
            ),
        }
    }
}

fn nan_injection_steps() -> Result<Vec<u64>> {
    match std::env::var(INJECT_NAN_ENV) {
        Ok(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<u64>().with_context(|| format!("{INJECT_NAN_ENV}: `{s}` is not a step number")))
            .collect(),
        Err(_) => Ok(Vec::new()),
    }
}
