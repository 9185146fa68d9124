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
use crate::data::rank_slice::RankSlice;
use crate::data::sampler::Sampler;
use crate::dist::optimizer::{ParallelOptimizer, Reduced};
use crate::dist::session::{RankStats, Session};
use crate::dist::{Launch, World};
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
use super::run_log::RunLog;
use super::samples::TrainingSamples;
use super::schedule::Schedule;
use super::setup::{configure_threads, ensure_model, flops_per_token, open_sampler, print_start, select_device};
use super::tensorboard::TensorBoardWriter;
use super::trained_model::{self, trainable};
use super::validate::{validation_losses, ValidationSplit};

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

/// Runs (or resumes) the training described by `cfg`: alone, or as one rank of a job
/// started by torchrun, mpiexec or srun (docs/distributed.md).
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    cfg.validate()?;
    let launch = Launch::from_env()?;
    let device = select_device(cfg, &launch)?;
    std::fs::create_dir_all(&cfg.run.out_dir).with_context(|| format!("creating run directory {}", cfg.run.out_dir.display()))?;
    let session = Session::start(launch, &device, &cfg.parallel, &cfg.run.out_dir, &serde_json::to_vec(cfg)?)?;
    let result = run_steps(cfg, opts, &session, device);
    match &result {
        Ok(_) => session.finish(),
        // The peers of a multi-rank run learn at once (and end) instead of after a timeout.
        Err(e) => crate::dist::watchdog::report_failure(&format!("{e:#}")),
    }
    result
}

/// The run itself, on this rank.
fn run_steps(cfg: &TrainConfig, opts: &TrainOptions, session: &Session, device: Device) -> Result<TrainOutcome> {
    let mut run = Trainer::setup(cfg, opts, session, device)?;
    if cfg.validation.at_start && run.counters.step == 0 {
        run.validate()?;
    }
    run.log.restart_memory();
    // Step records count the steps' communication, not the start-up's.
    run.world.comm().stats().take();
    let mut ending = Ending::Completed;
    while run.counters.step < run.total_steps {
        session.note(format!("step {}", run.counters.step + 1));
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
    /// This rank among the run's ranks (one for a single process).
    world: World,
    /// This rank's share of each step's windows.
    slice: RankSlice,
    /// Micro-batches per step on this rank (`grad_accum / ranks`).
    micro_batches: usize,
    device: Device,
    model: CausalLm,
    sampler: Sampler,
    optimizer: ParallelOptimizer,
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
    /// Bytes and seconds of communication and steps: since the last record, and overall.
    comm_window: CommTally,
    comm_run: CommTally,
}

/// Communication added up over steps.
#[derive(Default, Clone, Copy)]
struct CommTally {
    bytes: f64,
    seconds: f64,
    steps: u64,
}

impl CommTally {
    fn add(&mut self, bytes: f64, seconds: f64) {
        self.bytes += bytes;
        self.seconds += seconds;
        self.steps += 1;
    }

    /// (bytes, seconds) per step.
    fn per_step(&self) -> (f64, f64) {
        let n = self.steps.max(1) as f64;
        (self.bytes / n, self.seconds / n)
    }
}

impl<'a> Trainer<'a> {
    /// Prepares the run directory, model, data and sampler, optimiser (sharded as
    /// `parallel.zero` says), schedule, guard and writers; restores them from a checkpoint
    /// on a resume. Work done once for all ranks (cleaning the checkpoint directory,
    /// creating the base model, tokenising) runs on rank 0 while the others wait.
    fn setup(cfg: &'a TrainConfig, opts: &TrainOptions, session: &Session, device: Device) -> Result<Self> {
        let world = session.world.clone();
        let main = world.is_main();
        let run_dir = cfg.run.out_dir.clone();
        let checkpoints = Checkpoints::new(run_dir.join("checkpoints"), cfg.checkpoint.keep_last);
        world.main_first(|| checkpoints.remove_stale_temporaries())?;
        let resume_from = opts.resume.resolve(&checkpoints)?;
        let micro_batches = per_rank_accumulation(cfg, &world)?;

        let compute_dtype = cfg.run.dtype.to_candle();
        world.main_first(|| ensure_model(cfg))?;
        configure_threads(cfg)?;
        let mut model = trained_model::load(cfg, resume_from.as_deref(), &device, compute_dtype)?;
        // Every checkpoint carries the tokenizer files of the base.
        let model_dir = resume_from.clone().unwrap_or_else(|| cfg.model.path.clone());
        model.set_kernels(cfg.kernels).context("kernels")?;
        if main {
            write_file_atomic(&run_dir.join("config.yaml"), cfg.to_yaml()?.as_bytes())?;
        }

        let evals = TrainingEvals::prepare(cfg, &model_dir)?;
        let samples = TrainingSamples::prepare(cfg, &model_dir)?;
        session.note("preparing data");
        let mut sampler = open_sampler(cfg, &model, &world)?;
        if main {
            for w in sampler.warnings() {
                eprintln!("warning: {w}");
            }
        }
        // ZeRO-3 takes the decoder layers' weights out of the model here.
        let mut optimizer = ParallelOptimizer::new(
            &world,
            cfg.parallel.zero,
            cfg.parallel.bucket_elems(),
            &mut model,
            cfg.optimizer_settings(),
        )?;
        // Fused kernels include the multi-tensor AdamW (one launch per step on a GPU).
        optimizer.set_multi_tensor(cfg.kernels.mode == KernelMode::Fused);
        let schedule: Schedule = cfg.schedule()?;
        let mut guard = Guard::new(cfg.guard_settings());
        let mut counters = Counters { step: 0, tokens: 0, optimizer_steps: 0, lr: 0.0, elapsed_before: 0.0 };

        let metrics_path = run_dir.join("metrics.jsonl");
        let metrics = match &resume_from {
            Some(dir) => {
                let state = super::resume::restore(dir, &mut optimizer, &model, &mut sampler, &device, main)?;
                trained_model::restore_random_state(&model, &state.rng).with_context(|| format!("resuming from {}", dir.display()))?;
                guard = state.guard.clone();
                counters = Counters::from_state(&state);
                if main {
                    eprintln!("resumed from {} at step {} ({} tokens)", dir.display(), state.step, state.tokens);
                }
                main.then(|| MetricsWriter::resume(&metrics_path, state.step)).transpose()?
            }
            None => main.then(|| MetricsWriter::create(&metrics_path)).transpose()?,
        };
        let tensorboard =
            if cfg.logging.tensorboard && main { Some(TensorBoardWriter::create(&run_dir.join("tb"))?) } else { None };
        let stop = StopSignal::install()?;

        if main {
            print_start(cfg, &model, &device, compute_dtype, &world);
        }
        let total_steps = cfg.total_steps();
        let progress = TrainProgress::new(total_steps, counters.step, "steps", opts.progress && cfg.logging.progress_bar && main);
        let log = RunLog::new(metrics, metrics_path, tensorboard, progress, &device, counters.tokens);
        Ok(Self {
            cfg,
            slice: RankSlice { rank: world.rank(), world: world.size() },
            world,
            micro_batches,
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
            comm_window: CommTally::default(),
            comm_run: CommTally::default(),
        })
    }

    /// One optimiser step; `Some(ending)` when the run ends after it.
    fn step(&mut self) -> Result<Option<Ending>> {
        self.freeze.apply(self.cfg, &self.model, &mut self.optimizer, self.counters.step)?;
        let micro_batches = self.draw_micro_batches()?;
        let local = self.forward_backward(&micro_batches)?;
        let mut step = self.reduce(local)?;
        self.inject_fault(&mut step);
        let tokens_before = self.counters.advance(self.tokens_per_step);

        let (verdict, grad_norm, mut grads) = self.guard(&mut step)?;
        let lr = self.schedule.lr_for(self.counters.step - 1, tokens_before);
        let skipped = match &verdict {
            Verdict::Accept => {
                self.optimizer_step(&step, &mut grads, grad_norm, lr)?;
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
        drop(grads);
        let ending = self.ending(&verdict)?;
        if self.checkpoint_due(tokens_before, ending.as_ref()) {
            self.checkpoint()?;
        }
        if ending == Some(Ending::Interrupted) {
            self.log.println("interrupted: checkpoint written, exiting");
        }
        Ok(ending)
    }

    /// This rank's micro-batches of the step: its share of the step's `grad_accum`.
    fn draw_micro_batches(&mut self) -> Result<Vec<MicroBatch>> {
        draw_micro_batches(&mut self.sampler, self.slice, self.micro_batches, self.cfg.batch.micro_batch, self.model.device())
    }

    /// Forward and backward of each micro-batch, gradients of the trainable parameters,
    /// each weighted 1 / the step's micro-batches over all ranks (ZeRO-3's layers reduce
    /// theirs inside the backward with the same weight).
    fn forward_backward(&self, micro_batches: &[MicroBatch]) -> Result<LocalGradients> {
        let step_micro_batches = self.micro_batches * self.world.size();
        self.optimizer.set_micro_batch_scale(1.0 / step_micro_batches as f64);
        // Adapter dropout draws one mask set per micro-batch, numbered over all ranks: this
        // rank's micro-batches are the step's `[rank*A, (rank+1)*A)` (`RankSlice`), so they
        // draw the masks one process would draw for them, at any world size.
        let draws = self.model.lora_dropout_draws();
        self.model.set_lora_dropout_draws(draws + (self.world.rank() * self.micro_batches) as u64);
        let local = forward_backward(&self.model, trainable(&self.model), micro_batches, step_micro_batches);
        self.model.set_lora_dropout_draws(draws + step_micro_batches as u64);
        local
    }

    /// The step's losses from what the micro-batches left: one process holds the whole
    /// step; data-parallel ranks add their sums first, so that the guard sees the same loss
    /// on every rank and every rank takes the same verdict and update. (The gradients are
    /// summed over ranks by the optimiser's `reduce`.)
    fn reduce(&self, mut local: LocalGradients) -> Result<StepGradients> {
        let names = self.sampler.source_names();
        local.sum_over_ranks(&self.world, names.len())?;
        Ok(local.into_step(&names))
    }

    /// Fault injection for the guard rails: the loss of the listed steps becomes NaN.
    fn inject_fault(&self, step: &mut StepGradients) {
        if self.nan_steps.contains(&(self.counters.step + 1)) {
            step.loss = f64::NAN;
        }
    }

    /// Sums the gradients over ranks (all-reduce, or reduce-scatter into this rank's
    /// shard), drops those the freeze masks exclude, takes the global norm of what trains,
    /// and asks the guard whether to apply the update (NaN/inf loss or norm, loss spikes).
    /// It sees reduced values only, so data-parallel ranks reach the same verdict; a
    /// rank-local reason to skip would have to be agreed on here.
    fn guard(&mut self, step: &mut StepGradients) -> Result<(Verdict, f64, Reduced)> {
        // Masks first, so the norm counts only what trains.
        let grads = self.optimizer.reduce(std::mem::replace(&mut step.grads, super::optim::Grads::from_tensors(Vec::new())))?;
        let grad_norm = self.optimizer.grad_norm(&grads)?;
        let verdict = self.guard.assess(step.loss, grad_norm);
        match &verdict {
            Verdict::Accept => {}
            Verdict::Skip(reason) => self.log.println(&format!("step {}: skipped ({reason})", self.counters.step)),
            Verdict::Stop { reason, consecutive } => self.log.println(&format!(
                "step {}: {consecutive} steps in a row skipped (last: {reason}); stopping with a checkpoint",
                self.counters.step
            )),
        }
        Ok((verdict, grad_norm, grads))
    }

    /// Clips the gradients (`optim.grad_clip`) and updates the parameters at `lr` (with
    /// sharded state, then all-gathers the updated weights into the model).
    fn optimizer_step(&mut self, step: &StepGradients, grads: &mut Reduced, grad_norm: f64, lr: f64) -> Result<()> {
        if let Some(max_norm) = self.cfg.optim.grad_clip {
            self.optimizer.clip(grads, grad_norm, max_norm)?;
        }
        self.optimizer.step(grads, lr, &self.model)?;
        self.counters.optimizer_steps += 1;
        self.counters.lr = lr;
        self.last_loss = Some(step.loss);
        self.first_loss.get_or_insert(step.loss);
        Ok(())
    }

    /// A step record every `logging.every_steps` steps, and for every skipped step; with
    /// several ranks it carries each rank's peak memory and communication per step.
    fn log(&mut self, step: &StepGradients, lr: f64, grad_norm: f64, skipped: Option<String>) -> Result<()> {
        let comm = self.world.comm().stats().take();
        self.comm_window.add(comm.bytes as f64, comm.seconds);
        self.comm_run.add(comm.bytes as f64, comm.seconds);
        let elapsed = self.elapsed();
        let due = self.counters.step.is_multiple_of(self.cfg.logging.every_steps.get().max(1)) || skipped.is_some();
        if !due {
            return Ok(());
        }
        let window = self.log.close_window(self.counters.tokens);
        let ranks = if self.world.size() > 1 {
            let (bytes, seconds) = self.comm_window.per_step();
            Some(RankStats::gather(&self.world, window.peak_mem_bytes, bytes, seconds)?)
        } else {
            None
        };
        self.comm_window = CommTally::default();
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
            ranks,
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
    /// With several ranks each scores its share of the held-out windows and the sums are
    /// merged, so every rank holds the same losses and takes the same topic update.
    fn validate(&mut self) -> Result<()> {
        let split = ValidationSplit {
            slice: self.slice,
            comm: self.world.comm(),
            collective_forward: self.model.layers_released(),
        };
        let (sources, topics) =
            validation_losses(&self.model, &self.sampler, self.cfg.batch.micro_batch, self.cfg.validation.max_windows, &split)?;
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
    /// Every rank generates (the same tokens: under ZeRO-3 each forward is a collective);
    /// rank 0 logs.
    fn write_samples(&mut self) -> Result<()> {
        if let Some(samples) = &self.samples {
            samples.run(&self.model, self.counters.step, self.counters.tokens, &mut self.log)?;
        }
        Ok(())
    }

    /// How the run ends after this step, if it does: a signal (checked once per step; a
    /// signal to any rank stops every rank), or the guard's stop.
    fn ending(&self, verdict: &Verdict) -> Result<Option<Ending>> {
        Ok(if stop_agreed(&self.world, self.stop.requested())? {
            Some(Ending::Interrupted)
        } else if matches!(verdict, Verdict::Stop { .. }) {
            Some(Ending::GuardStopped)
        } else {
            None
        })
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
        // With sharded state the f32 masters are gathered from every rank (a collective).
        let weights = self.optimizer.weights_for_save()?;
        let dir = self
            .checkpoints
            .save_parallel(&self.world, &state, &self.optimizer, |dir| trained_model::save(cfg, model, dir, weights.as_deref()))?;
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
        let ranks = if self.world.size() > 1 {
            let (bytes, seconds) = self.comm_run.per_step();
            Some(describe_ranks(&RankStats::gather(&self.world, peak_memory, bytes, seconds)?))
        } else {
            None
        };
        let main = self.world.is_main();
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
            ranks,
            stop_reason: match ending {
                Ending::Completed => format!("trained {} steps; metrics in {}", counters.step, self.log.metrics_path().display()),
                Ending::Interrupted => "interrupted by a signal (checkpoint written)".to_string(),
                Ending::GuardStopped => "stopped by the guard (checkpoint written)".to_string(),
            },
        };
        if main {
            eprintln!("{}", summary.render());
        }
        match ending {
            Ending::Completed => {
                if main {
                    write_file_atomic(&self.cfg.run.out_dir.join(DONE_FILE), &serde_json::to_vec_pretty(&outcome)?)?;
                }
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

/// Micro-batches each rank runs per step: `batch.grad_accum` counts them over all ranks,
/// so a config trains the same way at any world size.
fn per_rank_accumulation(cfg: &TrainConfig, world: &World) -> Result<usize> {
    let global = cfg.grad_accum() as usize;
    let w = world.size();
    if global % w != 0 {
        bail!(
            "batch.grad_accum: {global} micro-batches per step (over all ranks) cannot be split evenly over {w} ranks; use a multiple of {w}"
        );
    }
    Ok(global / w)
}

/// Whether any rank was asked to stop (SIGINT/SIGTERM): all ranks then checkpoint together.
fn stop_agreed(world: &World, requested: bool) -> Result<bool> {
    let mut flag = [if requested { 1.0 } else { 0.0 }];
    world.comm().max_f64(&mut flag)?;
    Ok(flag[0] > 0.0)
}

/// The run summary's per-rank lines: peak memory, and communication per step over the run.
fn describe_ranks(ranks: &RankStats) -> String {
    let mut parts = Vec::new();
    for (r, p) in ranks.peak_mem_bytes.iter().enumerate() {
        let mem = p.map_or("?".to_string(), |b| format!("{:.2} GiB", b as f64 / GIB));
        parts.push(format!(
            "rank {r}: peak {mem}, {:.1} MB and {:.3} s of communication per step",
            ranks.comm_bytes_per_step[r] / 1e6,
            ranks.comm_s_per_step[r]
        ));
    }
    parts.join("\n  ")
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
