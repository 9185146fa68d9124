//! The training loop: sampler windows -> forward/backward -> guard -> optimiser step, with
//! logging, validation, topic re-weighting, checkpoints and exact resume.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::prepare::{prepare, PrepareOptions, PreparedData};
use crate::data::rank_slice::RankSlice;
use crate::data::sampler::{Sampler, SamplerState};
use crate::dist::optimizer::{ParallelOptimizer, Reduced};
use crate::dist::session::{RankStats, Session};
use crate::dist::{Launch, World};
use crate::data::tokenize::{SpecialOverrides, TextTokenizer};
use crate::model::causal_lm::{CausalLm, SaveOptions};
use crate::eval::model_adapter::ModelScorer;
use crate::eval::training::{parse_tasks, PreparedEvalTasks};
use crate::kernels::device_info;
use crate::kernels::recompute::GradSink;
use crate::kernels::KernelMode;
use crate::model::tokenizer::Tokenizer;

use super::batch::MicroBatch;
use super::checkpoint::{load_checkpoint_parallel, Checkpoints, TrainerState, STATE_FORMAT};
use super::guard::{Guard, Verdict};
use super::memory::{PeakMemory, GIB};
use super::metrics::{MetricsWriter, StepRecord, ValRecord};
use super::optim::GradAccumulator;
use super::schedule::Schedule;
use super::tensorboard::TensorBoardWriter;
use super::validate::{validation_losses, ValidationSplit};
use crate::util::progress::{RunSummary, TrainProgress};
use crate::util::signals::StopSignal;

/// H100/H200 dense bf16 peak, the denominator of MFU (reference.md, Throughput).
const PEAK_FLOPS: f64 = 989e12;
/// Name of the marker a finished run leaves in its directory (read by `cpt sweep`).
pub const DONE_FILE: &str = "DONE.json";

/// Where a run starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// A new run; refuses a run directory that already holds checkpoints.
    Fresh,
    /// The newest complete checkpoint of the run directory.
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

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

/// The loop's mutable position; what a checkpoint must restore besides weights, moments and
/// the sampler.
struct Counters {
    step: u64,
    tokens: u64,
    optimizer_steps: u64,
    lr: f64,
    elapsed_before: f64,
}

/// Runs (or resumes) the training described by `cfg`: alone, or as one rank of a job
/// started by torchrun, mpiexec or srun (docs/distributed.md).
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    cfg.validate()?;
    let launch = Launch::from_env()?;
    let device = select_device(cfg, &launch)?;
    let run_dir = cfg.run.out_dir.clone();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let session = Session::start(launch, &device, &cfg.parallel, &run_dir, &serde_json::to_vec(cfg)?)?;
    let result = train_in(cfg, opts, &session, device);
    match &result {
        Ok(_) => session.finish(),
        Err(e) => crate::dist::watchdog::report_failure(&format!("{e:#}")),
    }
    result
}

fn train_in(cfg: &TrainConfig, opts: &TrainOptions, session: &Session, device: Device) -> Result<TrainOutcome> {
    let world = &session.world;
    let main = world.is_main();
    let run_dir = cfg.run.out_dir.clone();
    let checkpoints = Checkpoints::new(run_dir.join("checkpoints"), cfg.checkpoint.keep_last);
    world.main_first(|| checkpoints.remove_stale_temporaries())?;
    let resume_from = resolve_resume(&opts.resume, &checkpoints)?;
    let accum_per_rank = per_rank_accumulation(cfg, world)?;

    let compute_dtype = cfg.run.dtype.to_candle();
    world.main_first(|| super::setup::ensure_model(cfg))?;
    super::setup::configure_threads(cfg)?;
    let model_dir = resume_from.clone().unwrap_or_else(|| cfg.model.path.clone());
    let mut model = CausalLm::from_pretrained(&model_dir, &device, compute_dtype)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    model.set_kernels(cfg.kernels).context("kernels")?;
    if main {
        crate::util::atomic::write_file_atomic(&run_dir.join("config.yaml"), cfg.to_yaml()?.as_bytes())?;
    }

    let evals = TrainingEvals::prepare(cfg, &model_dir)?;
    session.note("preparing data");
    let mut sampler = open_sampler(cfg, &model, world)?;
    if main {
        for w in sampler.warnings() {
            eprintln!("warning: {w}");
        }
    }
    let mut optimizer =
        ParallelOptimizer::new(world, cfg.parallel.zero, cfg.parallel.bucket_elems(), &mut model, cfg.optimizer_settings())?;
    // Fused kernels include the multi-tensor AdamW (one launch per step on a GPU).
    optimizer.set_multi_tensor(cfg.kernels.mode == KernelMode::Fused);
    let schedule: Schedule = cfg.schedule()?;
    let mut guard = Guard::new(cfg.guard_settings());
    let mut counters = Counters { step: 0, tokens: 0, optimizer_steps: 0, lr: 0.0, elapsed_before: 0.0 };

    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics = match &resume_from {
        Some(dir) => {
            let state = load_checkpoint_parallel(dir, &mut optimizer, &model, &device)?;
            let sampler_state: SamplerState = serde_json::from_value(state.sampler.clone())
                .with_context(|| format!("{}: the sampler state does not parse", dir.display()))?;
            let report = sampler.restore(&sampler_state)?;
            if !report.is_exact() && main {
                eprintln!("resume: the data plan changed since the checkpoint:\n  {}", report.changes.join("\n  "));
            }
            guard = state.guard.clone();
            counters = Counters {
                step: state.step,
                tokens: state.tokens,
                optimizer_steps: state.optimizer_steps,
                lr: state.lr,
                elapsed_before: state.elapsed_s,
            };
            if main {
                eprintln!("resumed from {} at step {} ({} tokens)", dir.display(), state.step, state.tokens);
            }
            main.then(|| MetricsWriter::resume(&metrics_path, state.step)).transpose()?
        }
        None => main.then(|| MetricsWriter::create(&metrics_path)).transpose()?,
    };
    let mut tensorboard =
        if cfg.logging.tensorboard && main { Some(TensorBoardWriter::create(&run_dir.join("tb"))?) } else { None };

    let stop = StopSignal::install()?;

    if main {
        print_start(cfg, &model, &device, compute_dtype, world);
    }
    let total_steps = cfg.total_steps();
    let tokens_per_step = cfg.tokens_per_step();
    let flops_per_token = flops_per_token(&model, cfg.batch.seq_len);
    let progress = TrainProgress::new(total_steps, counters.step, "steps", opts.progress && cfg.logging.progress_bar && main);
    let started = Instant::now();
    let mut window_start = (Instant::now(), counters.tokens);
    let mut last_checkpoint = resume_from.clone();
    let mut last_loss = None;
    let mut first_loss = None;
    let mut ending = Ending::Completed;
    let slice = RankSlice { rank: world.rank(), world: world.size() };
    // Bytes and seconds of communication, and steps: since the last record, and over the run.
    let mut comm_window = (0.0f64, 0.0f64, 0u64);
    let mut comm_run = (0.0f64, 0.0f64, 0u64);

    if cfg.validation.at_start && counters.step == 0 {
        run_validation(cfg, &model, &mut sampler, &counters, metrics.as_mut(), &mut tensorboard, &progress, world)?;
    }

    let mut masked = false;
    let fault_injection = nan_injection_steps()?;
    let mut peak_memory = PeakMemory::start(&device);
    // Step records count the steps' communication, not the start-up's.
    world.comm().stats().take();
    while counters.step < total_steps {
        session.note(format!("step {}", counters.step + 1));
        apply_freeze(cfg, &model, &mut optimizer, counters.step, &mut masked)?;
        let mut step_out = forward_backward(cfg, &model, &mut sampler, slice, accum_per_rank, &optimizer)?;
        if fault_injection.contains(&(counters.step + 1)) {
            step_out.loss = f64::NAN;
        }
        // The step's losses summed over ranks: every rank decides alike.
        reduce_step(world, &mut step_out, accum_per_rank)?;
        let prev_tokens = counters.tokens;
        counters.step += 1;
        counters.tokens += tokens_per_step;

        // Summed over ranks; masked (frozen) gradients dropped first, so the norm counts
        // only what trains.
        let mut grads: Reduced = optimizer.reduce(step_out.grads)?;
        let grad_norm = optimizer.grad_norm(&grads)?;
        let verdict = guard.assess(step_out.loss, grad_norm);
        let lr = schedule.lr_for(counters.step - 1, prev_tokens);
        let skipped = match verdict {
            Verdict::Accept => {
                if let Some(max) = cfg.optim.grad_clip {
                    optimizer.clip(&mut grads, grad_norm, max)?;
                }
                optimizer.step(&grads, lr, &model)?;
                counters.optimizer_steps += 1;
                counters.lr = lr;
                last_loss = Some(step_out.loss);
                first_loss.get_or_insert(step_out.loss);
                None
            }
            Verdict::Skip(reason) => {
                progress.println(&format!("step {}: skipped ({reason})", counters.step));
                Some(reason.to_string())
            }
            Verdict::Stop { reason, consecutive } => {
                progress.println(&format!(
                    "step {}: {consecutive} steps in a row skipped (last: {reason}); stopping with a checkpoint",
                    counters.step
                ));
                ending = Ending::GuardStopped;
                Some(reason.to_string())
            }
        };
        drop(grads);

        let comm = world.comm().stats().take();
        comm_window = (comm_window.0 + comm.bytes as f64, comm_window.1 + comm.seconds, comm_window.2 + 1);
        comm_run = (comm_run.0 + comm.bytes as f64, comm_run.1 + comm.seconds, comm_run.2 + 1);
        let elapsed = counters.elapsed_before + started.elapsed().as_secs_f64();
        let log_due = counters.step % cfg.logging.every_steps.get().max(1) == 0 || skipped.is_some();
        if log_due {
            let dt = window_start.0.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_s = (counters.tokens - window_start.1) as f64 / dt;
            window_start = (Instant::now(), counters.tokens);
            let peak = peak_memory.window_peak();
            let ranks = if world.size() > 1 {
                let steps = comm_window.2.max(1) as f64;
                Some(RankStats::gather(world, peak, comm_window.0 / steps, comm_window.1 / steps)?)
            } else {
                None
            };
            comm_window = (0.0, 0.0, 0);
            let record = StepRecord {
                step: counters.step,
                tokens: counters.tokens,
                loss: step_out.loss,
                lr,
                grad_norm,
                tokens_per_s,
                elapsed_s: elapsed,
                source_loss: step_out.source_loss.clone(),
                mfu: device.is_cuda().then(|| tokens_per_s * flops_per_token / PEAK_FLOPS),
                peak_mem_bytes: peak,
                skipped: skipped.clone(),
                ranks,
            };
            if let Some(metrics) = metrics.as_mut() {
                metrics.write(&record)?;
            }
            if let Some(tb) = tensorboard.as_mut() {
                let mut scalars = vec![
                    ("train/loss".to_string(), step_out.loss as f32),
                    ("train/lr".to_string(), lr as f32),
                    ("train/grad_norm".to_string(), grad_norm as f32),
                    ("train/tokens_per_s".to_string(), tokens_per_s as f32),
                ];
                if let Some(bytes) = record.peak_mem_bytes {
                    scalars.push(("train/peak_mem_gib".to_string(), (bytes as f64 / GIB) as f32));
                }
                scalars.extend(step_out.source_loss.iter().map(|(k, v)| (format!("train_source/{k}"), *v as f32)));
                tb.add_scalars(counters.step, &scalars)?;
            }
            progress.update(counters.step, counters.step, step_out.loss, tokens_per_s);
        }

        if let Some(every) = cfg.validation.every_steps {
            // Also at the last step, so every run ends with a validation record.
            if counters.step % every.get().max(1) == 0 || counters.step == total_steps {
                run_validation(cfg, &model, &mut sampler, &counters, metrics.as_mut(), &mut tensorboard, &progress, world)?;
            }
        }

        if let Some(evals) = &evals {
            if counters.step % evals.every == 0 || counters.step == total_steps {
                evals.run(&model, &counters, metrics.as_mut(), &progress)?;
            }
        }

        // A signal to any rank stops every rank after this step.
        let interrupted = stop_agreed(world, stop.requested())?;
        let finished = counters.step >= total_steps || ending == Ending::GuardStopped || interrupted;
        let due = cfg.checkpoint_due(prev_tokens, counters.step, counters.tokens);
        if due || (finished && (cfg.checkpoint.at_end || interrupted || ending == Ending::GuardStopped)) {
            session.note(format!("checkpoint at step {}", counters.step));
            let elapsed = counters.elapsed_before + started.elapsed().as_secs_f64();
            let dir = save_checkpoint(cfg, &checkpoints, &model, &optimizer, &sampler, &guard, &counters, &schedule, elapsed, world)?;
            progress.println(&format!("checkpoint: {}", dir.display()));
            last_checkpoint = Some(dir);
        }
        if interrupted {
            ending = Ending::Interrupted;
            progress.println("interrupted: checkpoint written, exiting");
            break;
        }
        if ending == Ending::GuardStopped {
            break;
        }
    }
    progress.finish();

    let elapsed = counters.elapsed_before + started.elapsed().as_secs_f64();
    let skipped_steps = guard.skipped_nonfinite + guard.skipped_spike;
    let outcome = TrainOutcome {
        ending: ending.clone(),
        steps: counters.step,
        tokens: counters.tokens,
        final_loss: last_loss,
        skipped_steps,
        elapsed_s: elapsed,
        last_checkpoint: last_checkpoint.clone(),
        flops: flops_per_token * counters.tokens as f64,
    };
    let run_peak = peak_memory.run_peak();
    let steps = comm_run.2.max(1) as f64;
    let run_ranks =
        if world.size() > 1 { Some(RankStats::gather(world, run_peak, comm_run.0 / steps, comm_run.1 / steps)?) } else { None };
    let summary = RunSummary {
        steps: counters.step,
        tokens: counters.tokens,
        elapsed_s: elapsed,
        first_loss,
        final_loss: last_loss,
        skipped_nonfinite: guard.skipped_nonfinite,
        skipped_spike: guard.skipped_spike,
        last_checkpoint,
        peak_memory: run_peak.map(|b| format!("{:.2} GiB ({})", b as f64 / GIB, peak_memory.what())),
        ranks: run_ranks.map(|r| describe_ranks(&r)),
        stop_reason: match ending {
            Ending::Completed => format!("trained {} steps; metrics in {}", counters.step, metrics_path.display()),
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
                crate::util::atomic::write_file_atomic(&run_dir.join(DONE_FILE), &serde_json::to_vec_pretty(&outcome)?)?;
            }
            Ok(outcome)
        }
        Ending::Interrupted => Ok(outcome),
        Ending::GuardStopped => bail!(
            "training stopped at step {}: {} consecutive steps were skipped by the guard (see {}); the last checkpoint is intact",
            counters.step,
            cfg.guard.max_consecutive_skips,
            metrics_path.display()
        ),
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

/// Sums the step's loss and per-source losses over ranks (every rank ends with the global
/// values, bit-identical).
fn reduce_step(world: &World, out: &mut StepOutput, accum_per_rank: usize) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let mut values = vec![out.loss_sum];
    // Every rank knows every source (the same sampler): send sums and counts for all.
    for name in &out.all_sources {
        let (s, n) = out.source_sums.get(name).copied().unwrap_or((0.0, 0));
        values.push(s);
        values.push(n as f64);
    }
    world.comm().sum_f64(&mut values)?;
    out.loss = values[0] / (accum_per_rank * world.size()) as f64;
    out.source_loss = out
        .all_sources
        .iter()
        .enumerate()
        .filter(|(i, _)| values[2 + 2 * i] > 0.0)
        .map(|(i, name)| (name.clone(), values[1 + 2 * i] / values[2 + 2 * i]))
        .collect();
    Ok(())
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

/// Loss, per-source loss and summed gradients of one optimiser step (this rank's share
/// until `reduce_step` sums them over ranks).
struct StepOutput {
    loss: f64,
    source_loss: BTreeMap<String, f64>,
    /// This rank's sum of micro-batch mean losses, and per-source (sum of row means, rows).
    loss_sum: f64,
    source_sums: BTreeMap<String, (f64, u64)>,
    all_sources: Vec<String>,
    grads: super::optim::Grads,
}

/// This rank's micro-batches of the step: forward, backward, gradients accumulated with
/// the factor 1 / (micro-batches over all ranks), so their sum over ranks is the mean.
fn forward_backward(
    cfg: &TrainConfig,
    model: &CausalLm,
    sampler: &mut Sampler,
    slice: RankSlice,
    accum: usize,
    optimizer: &ParallelOptimizer,
) -> Result<StepOutput> {
    let seq_len = cfg.batch.seq_len;
    let names: Vec<String> = sampler.source_names().iter().map(|s| s.to_string()).collect();
    let scale = 1.0 / (accum * slice.world) as f64;
    optimizer.set_micro_batch_scale(scale);
    let windows = slice.draw_step(sampler, accum * cfg.batch.micro_batch)?;
    let mut acc = GradAccumulator::new();
    let mut loss_sum = 0.0;
    let mut per_source: BTreeMap<usize, (f64, u64)> = BTreeMap::new();
    for windows in windows.chunks(cfg.batch.micro_batch) {
        let batch = MicroBatch::from_windows(windows, seq_len, model.device())?;
        let sink = GradSink::new();
        let nll = model.token_nll(&batch.inputs, &batch.targets, Some(&batch.packing), Some(&sink))?;
        let loss = nll.mean_all()?;
        let row_means = nll.detach().mean(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for (src, m) in batch.sources.iter().zip(row_means) {
            let e = per_source.entry(*src).or_insert((0.0, 0));
            e.0 += m;
            e.1 += 1;
        }
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let mut grads = loss.backward()?;
        // Gradients of parameters inside recomputed layers (empty without recomputation).
        sink.merge_into(&mut grads)?;
        acc.add(model.named_parameters(), &grads, scale)?;
    }
    let source_loss = per_source.iter().map(|(i, (s, n))| (names[*i].clone(), s / *n as f64)).collect();
    let source_sums = per_source.into_iter().map(|(i, v)| (names[i].clone(), v)).collect();
    Ok(StepOutput { loss: loss_sum / accum as f64, source_loss, loss_sum, source_sums, all_sources: names, grads: acc.finish()? })
}

#[allow(clippy::too_many_arguments)]
fn run_validation(
    cfg: &TrainConfig,
    model: &CausalLm,
    sampler: &mut Sampler,
    counters: &Counters,
    metrics: Option<&mut MetricsWriter>,
    tensorboard: &mut Option<TensorBoardWriter>,
    progress: &TrainProgress,
    world: &World,
) -> Result<()> {
    let split = ValidationSplit {
        slice: RankSlice { rank: world.rank(), world: world.size() },
        comm: world.comm(),
        collective_forward: model.layers_released(),
    };
    let (sources, topics) = validation_losses(model, sampler, cfg.batch.micro_batch, cfg.validation.max_windows, &split)?;
    if sources.is_empty() {
        return Ok(());
    }
    let line: Vec<String> = sources.iter().map(|(k, v)| format!("{k} {:.4}", v.loss)).collect();
    progress.println(&format!("step {} validation loss: {}", counters.step, line.join(", ")));
    if let Some(tb) = tensorboard.as_mut() {
        let mut scalars: Vec<(String, f32)> = sources.iter().map(|(k, v)| (format!("val/{k}"), v.loss as f32)).collect();
        scalars.extend(topics.iter().map(|(k, v)| (format!("val_topic/{k}"), v.loss as f32)));
        tb.add_scalars(counters.step, &scalars)?;
    }
    let topic_losses: BTreeMap<String, f64> = topics.iter().map(|(k, v)| (k.clone(), v.loss)).collect();
    let mut metrics = metrics;
    if let Some(m) = metrics.as_deref_mut() {
        m.write(&ValRecord::new(counters.step, counters.tokens, sources, topics))?;
    }
    if !topic_losses.is_empty() {
        // Every rank holds the same losses, so every rank's sampler takes the same update.
        if let Some(update) = sampler.update_topic_mixing(counters.step, &topic_losses)? {
            let mut record = serde_json::to_value(&update)?;
            record["kind"] = "mixing".into();
            if let Some(m) = metrics.as_deref_mut() {
                m.write(&record)?;
            }
            progress.println(&format!("step {}: topic weights updated ({:?} rule)", counters.step, update.rule));
        }
    }
    Ok(())
}

/// Benchmarks and perplexity sets run every `eval.every_steps` steps (and at the end), with
/// the files loaded once at the start so a typo fails before training.
struct TrainingEvals {
    every: u64,
    tasks: PreparedEvalTasks,
    tokenizer: Tokenizer,
}

impl TrainingEvals {
    fn prepare(cfg: &TrainConfig, model_dir: &Path) -> Result<Option<Self>> {
        if cfg.eval.tasks.is_empty() {
            return Ok(None);
        }
        let Some(every) = cfg.eval.every_steps.map(|c| c.get()).filter(|&n| n > 0) else {
            bail!("eval.every_steps: needed when eval.tasks are given");
        };
        let tasks = parse_tasks(&cfg.eval.tasks)?;
        let tasks = PreparedEvalTasks::from_tasks(&tasks, cfg.eval.batch_tokens).context("eval.tasks")?;
        let tokenizer = Tokenizer::from_dir(model_dir)?;
        Ok(Some(Self { every, tasks, tokenizer }))
    }

    /// Every rank scores (the same numbers; under ZeRO-3 each forward is a collective);
    /// rank 0 logs.
    fn run(&self, model: &CausalLm, counters: &Counters, metrics: Option<&mut MetricsWriter>, progress: &TrainProgress) -> Result<()> {
        let results = self.tasks.run(&ModelScorer::new(model, None), &self.tokenizer)?;
        progress.println(&format!("step {} eval: {results}", counters.step));
        let mut record = serde_json::json!({"kind": "eval", "step": counters.step, "tokens": counters.tokens});
        if let (Some(obj), serde_json::Value::Object(r)) = (record.as_object_mut(), results) {
            obj.extend(r);
        }
        match metrics {
            Some(m) => m.write(&record),
            None => Ok(()),
        }
    }
}

/// The freeze warm-up after a vocabulary extension: masks on for steps `0..freeze.steps`
/// (set again on a resume inside the warm-up), cleared at `freeze.steps`.
fn apply_freeze(cfg: &TrainConfig, model: &CausalLm, optimizer: &mut ParallelOptimizer, step: u64, masked: &mut bool) -> Result<()> {
    let Some(freeze) = &cfg.freeze else { return Ok(()) };
    let warm_up = step < freeze.steps.get();
    if warm_up && !*masked {
        super::setup::start_freeze(cfg, model, optimizer, freeze)?;
        *masked = true;
    } else if !warm_up && *masked {
        optimizer.clear_masks();
        *masked = false;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    cfg: &TrainConfig,
    checkpoints: &Checkpoints,
    model: &CausalLm,
    optimizer: &ParallelOptimizer,
    sampler: &Sampler,
    guard: &Guard,
    counters: &Counters,
    schedule: &Schedule,
    elapsed_s: f64,
    world: &World,
) -> Result<PathBuf> {
    let state = TrainerState {
        format: STATE_FORMAT,
        step: counters.step,
        tokens: counters.tokens,
        schedule_position: schedule.position(counters.step, counters.tokens),
        lr: counters.lr,
        optimizer_steps: counters.optimizer_steps,
        // The loop draws no random numbers of its own: all randomness lives in the sampler
        // state (shuffles) and the model init seed.
        rng: serde_json::json!({ "seed": cfg.run.seed }),
        guard: guard.clone(),
        sampler: serde_json::to_value(sampler.state())?,
        config: serde_json::to_value(cfg)?,
        elapsed_s,
    };
    let save = SaveOptions {
        dtype: cfg.checkpoint.dtype.to_candle(),
        max_shard_bytes: cfg.checkpoint.max_shard_bytes.get(),
        assets_from: Some(cfg.model.path.clone()),
    };
    // With sharded state the f32 masters are gathered from every rank (a collective).
    let weights = optimizer.weights_for_save()?;
    checkpoints.save_parallel(world, &state, optimizer, |dir| match &weights {
        Some(w) => model.save_pretrained_tensors(dir, w, &save),
        None => model.save_pretrained(dir, &save),
    })
}

fn resolve_resume(resume: &Resume, checkpoints: &Checkpoints) -> Result<Option<PathBuf>> {
    match resume {
        Resume::Fresh => {
            if let Some(latest) = checkpoints.latest()? {
                bail!(
                    "the run directory already has checkpoints (newest: {}); pass --resume to continue it, or choose another run.out_dir",
                    latest.display()
                );
            }
            Ok(None)
        }
        Resume::Latest => match checkpoints.latest()? {
            Some(dir) => Ok(Some(dir)),
            None => bail!("--resume: no complete checkpoint under {}", checkpoints.root().display()),
        },
        Resume::From(dir) => {
            if !super::checkpoint::is_complete(dir) {
                bail!("--resume {}: not a complete checkpoint (no trainer_state)", dir.display());
            }
            Ok(Some(dir.clone()))
        }
    }
}

/// The config's device; on GPUs, `cuda:LOCAL_RANK` (one rank per device).
fn select_device(cfg: &TrainConfig, launch: &Launch) -> Result<Device> {
    use crate::config::schema::DeviceKind;
    let name = match cfg.run.device {
        DeviceKind::Cpu => "cpu".to_string(),
        DeviceKind::Cuda => format!("cuda:{}", launch.local_rank),
    };
    device_info::select(&name).context("run.device")
}

/// Tokenizes the configured sources (reusing cached shards; with several ranks only rank 0
/// tokenizes while the others wait for the cache) and opens the sampler.
fn open_sampler(cfg: &TrainConfig, model: &CausalLm, world: &World) -> Result<Sampler> {
    let data = &cfg.data;
    let tokenizer_path = data.tokenizer.clone().unwrap_or_else(|| cfg.model.path.clone());
    let overrides = SpecialOverrides { bos_token: data.bos_token.clone(), eos_token: data.eos_token.clone() };
    let tokenizer = TextTokenizer::load(&tokenizer_path, &overrides)?;
    if tokenizer.vocab_size() > model.config().vocab_size {
        bail!(
            "the tokenizer {} has {} tokens but the model's vocab_size is {}",
            tokenizer.path().display(),
            tokenizer.vocab_size(),
            model.config().vocab_size
        );
    }
    let cache_dir = data.cache_dir.clone().unwrap_or_else(|| cfg.run.out_dir.join("data"));
    let opts = PrepareOptions { cache_dir: cache_dir.clone(), progress: cfg.logging.progress_bar && world.is_main(), force: false };
    world.main_first(|| prepare(data, &tokenizer, &opts).map(|_| ()))?;
    let prepared = PreparedData::open(&cache_dir, data, Some(tokenizer.hash()))?;
    Sampler::new(data, prepared, cfg.batch.seq_len, cfg.run.seed)
}

/// 6N + 12 L H Q T per trained token (PaLM appendix B), N without the input embeddings.
fn flops_per_token(model: &CausalLm, seq_len: usize) -> f64 {
    let c = model.config();
    let embed = (c.vocab_size * c.hidden_size) as f64;
    let tied_head = if c.tie_word_embeddings { embed } else { 0.0 };
    let n = model.num_parameters() as f64 - embed + tied_head;
    6.0 * n + 12.0 * (c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len) as f64
}

fn print_start(cfg: &TrainConfig, model: &CausalLm, device: &Device, dtype: DType, world: &World) {
    let device_line = device_info::describe(device).unwrap_or_else(|e| format!("{device:?} ({e})"));
    if world.size() > 1 {
        eprintln!(
            "data parallel: {} ranks x {} micro-batches of {} per step, ZeRO-{}",
            world.size(),
            cfg.grad_accum() as usize / world.size(),
            cfg.batch.micro_batch,
            cfg.parallel.zero.number()
        );
    }
    eprintln!(
        "cpt train: {} ({:.1}M parameters) on {}, compute {:?}, master weights f32, kernels {}; {} steps x {} tokens -> {}",
        cfg.model.path.display(),
        model.num_parameters() as f64 / 1e6,
        device_line,
        dtype,
        model.kernels().describe(),
        cfg.total_steps(),
        cfg.tokens_per_step(),
        cfg.run.out_dir.display()
    );
}
