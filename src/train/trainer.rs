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
use crate::data::sampler::{Sampler, SamplerState};
use crate::data::tokenize::{SpecialOverrides, TextTokenizer};
use crate::model::causal_lm::CausalLm;
use crate::eval::model_adapter::ModelScorer;
use crate::eval::training::{parse_tasks, PreparedEvalTasks};
use crate::kernels::device_info;
use crate::kernels::recompute::GradSink;
use crate::kernels::KernelMode;
use crate::model::tokenizer::Tokenizer;

use super::batch::MicroBatch;
use super::checkpoint::{load_checkpoint, Checkpoints, TrainerState, STATE_FORMAT};
use super::guard::{Guard, Verdict};
use super::memory::{PeakMemory, GIB};
use super::metrics::{MetricsWriter, StepRecord, ValRecord};
use super::optim::{GradAccumulator, Optimizer};
use super::schedule::Schedule;
use super::tensorboard::TensorBoardWriter;
use super::validate::validation_losses;
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

/// Runs (or resumes) the training described by `cfg`.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    cfg.validate()?;
    let run_dir = cfg.run.out_dir.clone();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let checkpoints = Checkpoints::new(run_dir.join("checkpoints"), cfg.checkpoint.keep_last);
    checkpoints.remove_stale_temporaries()?;
    let resume_from = resolve_resume(&opts.resume, &checkpoints)?;

    let device = select_device(cfg)?;
    let compute_dtype = cfg.run.dtype.to_candle();
    super::setup::ensure_model(cfg)?;
    super::setup::configure_threads(cfg)?;
    let mut model = super::lora::load_model(cfg, resume_from.as_deref(), &device, compute_dtype)?;
    // A LoRA checkpoint holds only the adapter: the tokenizer comes from the base.
    let model_dir = match &resume_from {
        Some(dir) if cfg.lora.is_none() => dir.clone(),
        _ => cfg.model.path.clone(),
    };
    model.set_kernels(cfg.kernels).context("kernels")?;
    crate::util::atomic::write_file_atomic(&run_dir.join("config.yaml"), cfg.to_yaml()?.as_bytes())?;

    let evals = TrainingEvals::prepare(cfg, &model_dir)?;
    let mut sampler = open_sampler(cfg, &model)?;
    for w in sampler.warnings() {
        eprintln!("warning: {w}");
    }
    let mut optimizer = Optimizer::new(model.named_parameters(), cfg.optimizer_settings())?;
    // Fused kernels include the multi-tensor AdamW (one launch per step on a GPU).
    optimizer.set_multi_tensor(cfg.kernels.mode == KernelMode::Fused);
    let schedule: Schedule = cfg.schedule()?;
    let mut guard = Guard::new(cfg.guard_settings());
    let mut counters = Counters { step: 0, tokens: 0, optimizer_steps: 0, lr: 0.0, elapsed_before: 0.0 };

    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics = match &resume_from {
        Some(dir) => {
            let state = load_checkpoint(dir, &mut optimizer, &device)?;
            let sampler_state: SamplerState = serde_json::from_value(state.sampler.clone())
                .with_context(|| format!("{}: the sampler state does not parse", dir.display()))?;
            let report = sampler.restore(&sampler_state)?;
            if !report.is_exact() {
                eprintln!("resume: the data plan changed since the checkpoint:\n  {}", report.changes.join("\n  "));
            }
            guard = state.guard.clone();
            super::lora::restore_rng(&model, &state.rng);
            counters = Counters {
                step: state.step,
                tokens: state.tokens,
                optimizer_steps: state.optimizer_steps,
                lr: state.lr,
                elapsed_before: state.elapsed_s,
            };
            eprintln!("resumed from {} at step {} ({} tokens)", dir.display(), state.step, state.tokens);
            MetricsWriter::resume(&metrics_path, state.step)?
        }
        None => MetricsWriter::create(&metrics_path)?,
    };
    let mut tensorboard = if cfg.logging.tensorboard { Some(TensorBoardWriter::create(&run_dir.join("tb"))?) } else { None };

    let stop = StopSignal::install()?;

    print_start(cfg, &model, &device, compute_dtype);
    let total_steps = cfg.total_steps();
    let tokens_per_step = cfg.tokens_per_step();
    let flops_per_token = flops_per_token(&model, cfg.batch.seq_len);
    let progress = TrainProgress::new(total_steps, counters.step, "steps", opts.progress && cfg.logging.progress_bar);
    let started = Instant::now();
    let mut window_start = (Instant::now(), counters.tokens);
    let mut last_checkpoint = resume_from.clone();
    let mut last_loss = None;
    let mut first_loss = None;
    let mut ending = Ending::Completed;

    if cfg.validation.at_start && counters.step == 0 {
        run_validation(cfg, &model, &mut sampler, &counters, &mut metrics, &mut tensorboard, &progress)?;
    }

    let mut masked = false;
    let fault_injection = nan_injection_steps()?;
    let mut peak_memory = PeakMemory::start(&device);
    while counters.step < total_steps {
        apply_freeze(cfg, &model, &mut optimizer, counters.step, &mut masked)?;
        let mut step_out = forward_backward(cfg, &model, &mut sampler)?;
        if fault_injection.contains(&(counters.step + 1)) {
            step_out.loss = f64::NAN;
        }
        let prev_tokens = counters.tokens;
        counters.step += 1;
        counters.tokens += tokens_per_step;

        let mut grads = step_out.grads;
        // Masked (frozen) gradients are dropped first, so the norm counts only what trains.
        optimizer.apply_masks(&mut grads)?;
        let grad_norm = grads.global_norm()?;
        let verdict = guard.assess(step_out.loss, grad_norm);
        let lr = schedule.lr_for(counters.step - 1, prev_tokens);
        let skipped = match verdict {
            Verdict::Accept => {
                if let Some(max) = cfg.optim.grad_clip {
                    grads.clip_global_norm(max)?;
                }
                optimizer.step(&grads, lr)?;
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

        let elapsed = counters.elapsed_before + started.elapsed().as_secs_f64();
        let log_due = counters.step % cfg.logging.every_steps.get().max(1) == 0 || skipped.is_some();
        if log_due {
            let dt = window_start.0.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_s = (counters.tokens - window_start.1) as f64 / dt;
            window_start = (Instant::now(), counters.tokens);
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
                peak_mem_bytes: peak_memory.window_peak(),
                skipped: skipped.clone(),
            };
            metrics.write(&record)?;
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
                run_validation(cfg, &model, &mut sampler, &counters, &mut metrics, &mut tensorboard, &progress)?;
            }
        }

        if let Some(evals) = &evals {
            if counters.step % evals.every == 0 || counters.step == total_steps {
                evals.run(&model, &counters, &mut metrics, &progress)?;
            }
        }

        let interrupted = stop.requested();
        let finished = counters.step >= total_steps || ending == Ending::GuardStopped || interrupted;
        let due = cfg.checkpoint_due(prev_tokens, counters.step, counters.tokens);
        if due || (finished && (cfg.checkpoint.at_end || interrupted || ending == Ending::GuardStopped)) {
            let elapsed = counters.elapsed_before + started.elapsed().as_secs_f64();
            let dir = save_checkpoint(cfg, &checkpoints, &model, &optimizer, &sampler, &guard, &counters, &schedule, elapsed)?;
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
    let summary = RunSummary {
        steps: counters.step,
        tokens: counters.tokens,
        elapsed_s: elapsed,
        first_loss,
        final_loss: last_loss,
        skipped_nonfinite: guard.skipped_nonfinite,
        skipped_spike: guard.skipped_spike,
        last_checkpoint,
        peak_memory: peak_memory.run_peak().map(|b| format!("{:.2} GiB ({})", b as f64 / GIB, peak_memory.what())),
        stop_reason: match ending {
            Ending::Completed => format!("trained {} steps; metrics in {}", counters.step, metrics.path().display()),
            Ending::Interrupted => "interrupted by a signal (checkpoint written)".to_string(),
            Ending::GuardStopped => "stopped by the guard (checkpoint written)".to_string(),
        },
    };
    eprintln!("{}", summary.render());
    match ending {
        Ending::Completed => {
            crate::util::atomic::write_file_atomic(&run_dir.join(DONE_FILE), &serde_json::to_vec_pretty(&outcome)?)?;
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

/// Environment variable naming steps (1-based, comma-separated) whose loss is replaced by
/// NaN: fault injection that lets tests and users check the guard rails end to end.
pub const INJECT_NAN_ENV: &str = "CPT_INJECT_NAN_AT_STEPS";

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

/// Loss, per-source loss and summed gradients of one optimiser step.
struct StepOutput {
    loss: f64,
    source_loss: BTreeMap<String, f64>,
    grads: super::optim::Grads,
}

fn forward_backward(cfg: &TrainConfig, model: &CausalLm, sampler: &mut Sampler) -> Result<StepOutput> {
    let accum = cfg.grad_accum() as usize;
    let seq_len = cfg.batch.seq_len;
    let names: Vec<String> = sampler.source_names().iter().map(|s| s.to_string()).collect();
    let mut acc = GradAccumulator::new();
    let mut loss_sum = 0.0;
    let mut per_source: BTreeMap<usize, (f64, u64)> = BTreeMap::new();
    for _ in 0..accum {
        let windows = (0..cfg.batch.micro_batch).map(|_| sampler.next_window()).collect::<Result<Vec<_>>>()?;
        let batch = MicroBatch::from_windows(&windows, seq_len, model.device())?;
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
        acc.add(model.named_parameters(), &grads, 1.0 / accum as f64)?;
    }
    let source_loss = per_source.into_iter().map(|(i, (s, n))| (names[i].clone(), s / n as f64)).collect();
    Ok(StepOutput { loss: loss_sum / accum as f64, source_loss, grads: acc.finish()? })
}

fn run_validation(
    cfg: &TrainConfig,
    model: &CausalLm,
    sampler: &mut Sampler,
    counters: &Counters,
    metrics: &mut MetricsWriter,
    tensorboard: &mut Option<TensorBoardWriter>,
    progress: &TrainProgress,
) -> Result<()> {
    let (sources, topics) = validation_losses(model, sampler, cfg.batch.micro_batch, cfg.validation.max_windows)?;
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
    metrics.write(&ValRecord::new(counters.step, counters.tokens, sources, topics))?;
    if !topic_losses.is_empty() {
        if let Some(update) = sampler.update_topic_mixing(counters.step, &topic_losses)? {
            let mut record = serde_json::to_value(&update)?;
            record["kind"] = "mixing".into();
            metrics.write(&record)?;
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

    fn run(&self, model: &CausalLm, counters: &Counters, metrics: &mut MetricsWriter, progress: &TrainProgress) -> Result<()> {
        let results = self.tasks.run(&ModelScorer::new(model, None), &self.tokenizer)?;
        progress.println(&format!("step {} eval: {results}", counters.step));
        let mut record = serde_json::json!({"kind": "eval", "step": counters.step, "tokens": counters.tokens});
        if let (Some(obj), serde_json::Value::Object(r)) = (record.as_object_mut(), results) {
            obj.extend(r);
        }
        metrics.write(&record)
    }
}

/// The freeze warm-up after a vocabulary extension: masks on for steps `0..freeze.steps`
/// (set again on a resume inside the warm-up), cleared at `freeze.steps`.
fn apply_freeze(cfg: &TrainConfig, model: &CausalLm, optimizer: &mut Optimizer, step: u64, masked: &mut bool) -> Result<()> {
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
    optimizer: &Optimizer,
    sampler: &Sampler,
    guard: &Guard,
    counters: &Counters,
    schedule: &Schedule,
    elapsed_s: f64,
) -> Result<PathBuf> {
    let state = TrainerState {
        format: STATE_FORMAT,
        step: counters.step,
        tokens: counters.tokens,
        schedule_position: schedule.position(counters.step, counters.tokens),
        lr: counters.lr,
        optimizer_steps: counters.optimizer_steps,
        // Shuffles live in the sampler state; the model draws only adapter dropout masks.
        rng: super::lora::rng_state(cfg, model),
        guard: guard.clone(),
        sampler: serde_json::to_value(sampler.state())?,
        config: serde_json::to_value(cfg)?,
        elapsed_s,
    };
    checkpoints.save(&state, optimizer, |dir| super::lora::save_model(cfg, model, dir))
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

fn select_device(cfg: &TrainConfig) -> Result<Device> {
    use crate::config::schema::DeviceKind;
    let name = match cfg.run.device {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Cuda => "cuda",
    };
    device_info::select(name).context("run.device")
}

/// Tokenizes the configured sources (reusing cached shards) and opens the sampler.
fn open_sampler(cfg: &TrainConfig, model: &CausalLm) -> Result<Sampler> {
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
    let opts = PrepareOptions { cache_dir: cache_dir.clone(), progress: cfg.logging.progress_bar, force: false };
    prepare(data, &tokenizer, &opts)?;
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

fn print_start(cfg: &TrainConfig, model: &CausalLm, device: &Device, dtype: DType) {
    let device_line = device_info::describe(device).unwrap_or_else(|e| format!("{device:?} ({e})"));
    eprintln!(
        "cpt train: {} ({:.1}M parameters) on {}, compute {:?}, {}, kernels {}; {} steps x {} tokens -> {}",
        cfg.model.path.display(),
        model.num_parameters() as f64 / 1e6,
        device_line,
        dtype,
        super::lora::describe(model, dtype),
        model.kernels().describe(),
        cfg.total_steps(),
        cfg.tokens_per_step(),
        cfg.run.out_dir.display()
    );
}
