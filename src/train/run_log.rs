//! Where a run's numbers go: `metrics.jsonl`, TensorBoard (when on) and the progress bar,
//! with the throughput window and the peak memory that step records carry.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use serde::Serialize;

use super::memory::{PeakMemory, GIB};
use super::metrics::{LossPpl, MetricsWriter, StepRecord, ValRecord};
use super::tensorboard::TensorBoardWriter;
use crate::util::progress::TrainProgress;

/// Throughput and memory since the previous step record.
pub struct Window {
    pub tokens_per_s: f64,
    pub peak_mem_bytes: Option<u64>,
}

pub struct RunLog {
    metrics: MetricsWriter,
    tensorboard: Option<TensorBoardWriter>,
    progress: TrainProgress,
    device: Device,
    /// When the current throughput window started, and the token count then.
    window_start: (Instant, u64),
    peak_memory: PeakMemory,
}

impl RunLog {
    /// `tokens`: the run's token count now (non-zero on a resume).
    pub fn new(
        metrics: MetricsWriter,
        tensorboard: Option<TensorBoardWriter>,
        progress: TrainProgress,
        device: &Device,
        tokens: u64,
    ) -> Self {
        Self {
            metrics,
            tensorboard,
            progress,
            device: device.clone(),
            window_start: (Instant::now(), tokens),
            peak_memory: PeakMemory::start(device),
        }
    }

    /// Restart the peak-memory measurement, so it covers the training steps and not what
    /// ran before the first (the validation at the start).
    pub fn restart_memory(&mut self) {
        self.peak_memory = PeakMemory::start(&self.device);
    }

    /// Tokens/s and peak memory since the previous call; starts the next window.
    pub fn close_window(&mut self, tokens: u64) -> Window {
        let dt = self.window_start.0.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = (tokens - self.window_start.1) as f64 / dt;
        self.window_start = (Instant::now(), tokens);
        Window { tokens_per_s, peak_mem_bytes: self.peak_memory.window_peak() }
    }

    /// A step record to the metrics file, TensorBoard and the progress bar.
    pub fn step(&mut self, record: &StepRecord) -> Result<()> {
        self.metrics.write(record)?;
        if let Some(tb) = self.tensorboard.as_mut() {
            let mut scalars = vec![
                ("train/loss".to_string(), record.loss as f32),
                ("train/lr".to_string(), record.lr as f32),
                ("train/grad_norm".to_string(), record.grad_norm as f32),
                ("train/tokens_per_s".to_string(), record.tokens_per_s as f32),
            ];
            if let Some(bytes) = record.peak_mem_bytes {
                scalars.push(("train/peak_mem_gib".to_string(), (bytes as f64 / GIB) as f32));
            }
            scalars.extend(record.source_loss.iter().map(|(k, v)| (format!("train_source/{k}"), *v as f32)));
            tb.add_scalars(record.step, &scalars)?;
        }
        self.progress.update(record.step, record.step, record.loss, record.tokens_per_s);
        Ok(())
    }

    /// Validation losses per source and topic: a line above the progress bar, TensorBoard
    /// scalars and a `val` record.
    pub fn validation(
        &mut self,
        step: u64,
        tokens: u64,
        sources: BTreeMap<String, LossPpl>,
        topics: BTreeMap<String, LossPpl>,
    ) -> Result<()> {
        let line: Vec<String> = sources.iter().map(|(k, v)| format!("{k} {:.4}", v.loss)).collect();
        self.progress.println(&format!("step {step} validation loss: {}", line.join(", ")));
        if let Some(tb) = self.tensorboard.as_mut() {
            let mut scalars: Vec<(String, f32)> = sources.iter().map(|(k, v)| (format!("val/{k}"), v.loss as f32)).collect();
            scalars.extend(topics.iter().map(|(k, v)| (format!("val_topic/{k}"), v.loss as f32)));
            tb.add_scalars(step, &scalars)?;
        }
        self.metrics.write(&ValRecord::new(step, tokens, sources, topics))
    }

    /// A generated sample (`eval.generate`): a line above the progress bar, a `sample`
    /// record and a TensorBoard text event under `samples/<index>`.
    pub fn sample(&mut self, step: u64, tokens: u64, index: usize, prompt: &str, output: &str) -> Result<()> {
        self.progress.println(&format!("step {step} sample {index}: {prompt}{output}"));
        self.metrics.write(&serde_json::json!({
            "kind": "sample", "step": step, "tokens": tokens, "prompt": prompt, "output": output,
        }))?;
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.add_text(&format!("samples/{index}"), &format!("{prompt}{output}"), step)?;
        }
        Ok(())
    }

    /// Any other record (evaluation results, mixing updates) to the metrics file.
    pub fn record<T: Serialize>(&mut self, record: &T) -> Result<()> {
        self.metrics.write(record)
    }

    /// A line above the progress bar.
    pub fn println(&self, line: &str) {
        self.progress.println(line);
    }

    /// Clears the progress bar; returns the run's peak memory and what it measures.
    pub fn finish(&mut self) -> (Option<u64>, &'static str) {
        self.progress.finish();
        (self.peak_memory.run_peak(), self.peak_memory.what())
    }

    pub fn metrics_path(&self) -> &Path {
        self.metrics.path()
    }
}
