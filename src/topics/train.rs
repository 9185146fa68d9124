//! Supervised training as fastText does it: per example, the averaged feature rows go
//! through the output layer and softmax; one SGD step on the cross-entropy updates the
//! output rows and every feature row (the gradient divided by the number of features);
//! the learning rate falls linearly from `lr` to 0 over all epochs' words. Threads share
//! the weights without locks (`hogwild`). Unlike fastText, which reads its file in order,
//! each epoch visits the examples in a seeded random order.
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::hogwild::HogwildMatrix;
use super::kernels::{add_assign, average_rows, axpy, inverse_count, scale, softmax_scores};
use crate::util::rng::SplitMix64;

/// The examples, as feature rows computed once.
#[derive(Debug, Default, Clone)]
pub struct Examples {
    rows: Vec<u32>,
    starts: Vec<usize>,
    labels: Vec<u32>,
    /// Words per example, `</s>` included: the unit of the learning-rate schedule.
    words: Vec<u32>,
}

impl Examples {
    pub fn push(&mut self, rows: &[u32], label: u32, words: usize) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.rows.extend_from_slice(rows);
        self.starts.push(self.rows.len());
        self.labels.push(label);
        self.words.push(words.min(u32::MAX as usize) as u32);
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn rows(&self, i: usize) -> &[u32] {
        &self.rows[self.starts[i]..self.starts[i + 1]]
    }
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    pub fn total_words(&self) -> u64 {
        self.words.iter().map(|&w| w as u64).sum()
    }
}

/// fastText's optimisation knobs (and our seed and thread count).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdOptions {
    pub epoch: u32,
    pub lr: f32,
    pub threads: usize,
    pub seed: u64,
}

/// The trained matrices and the mean training loss of the last epoch.
pub struct Trained {
    pub input: Vec<f32>,
    pub output: Vec<f32>,
    pub last_epoch_loss: f64,
}

/// Rows of the input matrix are drawn from U(-1/dim, 1/dim), in fixed-size chunks seeded
/// by position, so the values do not depend on the number of threads.
fn init_input(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let bound = 1.0 / dim as f64;
    let mut values = vec![0f32; rows * dim];
    values.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut rng = SplitMix64::keyed(&[seed, 0x696e_7075_74, c as u64]);
        for v in chunk {
            *v = ((rng.next_unit() * 2.0 - 1.0) * bound) as f32;
        }
    });
    values
}

/// Per-thread buffers of one SGD step.
struct StepBuffers {
    hidden: Vec<f32>,
    grad: Vec<f32>,
    probs: Vec<f32>,
}

/// One SGD step on one example; returns its loss (fastText's -log(p + 1e-5)).
fn sgd_step(input: &HogwildMatrix, output: &HogwildMatrix, rows: &[u32], target: usize, lr: f32, b: &mut StepBuffers) -> f32 {
    // SAFETY (all `row`/`row_mut` calls here): each slice lives for one vector operation;
    // concurrent updates from other threads are Hogwild's accepted races.
    average_rows(rows, |r| unsafe { input.row(r as usize) }, &mut b.hidden);
    softmax_scores(|i| unsafe { output.row(i) }, &b.hidden, &mut b.probs);
    b.grad.fill(0.0);
    for i in 0..b.probs.len() {
        let truth = if i == target { 1.0 } else { 0.0 };
        let alpha = lr * (truth - b.probs[i]);
        axpy(&mut b.grad, alpha, unsafe { output.row(i) });
        axpy(unsafe { output.row_mut(i) }, alpha, &b.hidden);
    }
    scale(&mut b.grad, inverse_count(rows.len()));
    for &r in rows {
        add_assign(unsafe { input.row_mut(r as usize) }, &b.grad);
    }
    -(b.probs[target] + 1e-5).ln()
}

/// Trains a `rows` x `dim` input matrix and a `labels` x `dim` output matrix on `examples`.
/// `progress(words_done, words_total)` is called now and then from the training threads.
pub fn train(
    examples: &Examples,
    rows: usize,
    labels: usize,
    dim: usize,
    opts: &SgdOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Trained> {
    if examples.is_empty() {
        bail!("no training examples");
    }
    if opts.epoch == 0 || opts.threads == 0 || dim == 0 || !(opts.lr > 0.0 && opts.lr.is_finite()) {
        bail!("epoch, threads and dim must be positive and lr a positive number");
    }
    let input = HogwildMatrix::new(init_input(rows, dim, opts.seed), dim);
    let output = HogwildMatrix::new(vec![0.0; labels * dim], dim);
    let total = examples.total_words() * opts.epoch as u64;
    let done = AtomicU64::new(0);
    let n = examples.len();
    let part = n.div_ceil(opts.threads);
    // Every thread runs all epochs over its own slice of each epoch's order, with no barrier
    // between epochs (a thread descheduled on a busy machine holds nobody up), as fastText's
    // threads do; the learning rate follows the words done by all threads together.
    let last_epoch_losses: Vec<Option<f64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..opts.threads)
            .map(|t| {
                let (input, output, done) = (&input, &output, &done);
                scope.spawn(move || {
                    let mut b = StepBuffers { hidden: vec![0.0; dim], grad: vec![0.0; dim], probs: vec![0.0; labels] };
                    let mut order: Vec<u32> = Vec::with_capacity(n);
                    let mut loss = 0.0f64;
                    for epoch in 0..opts.epoch {
                        order.clear();
                        order.extend(0..n as u32);
                        SplitMix64::keyed(&[opts.seed, epoch as u64]).shuffle(&mut order);
                        let mine = &order[(t * part).min(n)..((t + 1) * part).min(n)];
                        loss = 0.0;
                        for (k, &i) in mine.iter().enumerate() {
                            let i = i as usize;
                            let at = done.load(Ordering::Relaxed);
                            let lr = opts.lr * (1.0 - at as f32 / total as f32);
                            let rows = examples.rows(i);
                            if !rows.is_empty() {
                                loss += sgd_step(input, output, rows, examples.label(i) as usize, lr, &mut b) as f64;
                            }
                            let now = done.fetch_add(examples.words[i] as u64, Ordering::Relaxed);
                            if k % 256 == 0 {
                                progress(now, total);
                            }
                        }
                    }
                    loss
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().ok()).collect()
    });
    let Some(sum) = last_epoch_losses.into_iter().sum::<Option<f64>>() else { bail!("a training thread panicked") };
    let last_epoch_loss = sum / n as f64;
    if !last_epoch_loss.is_finite() {
        bail!("training diverged (last-epoch loss {last_epoch_loss}); lower --lr");
    }
    progress(total, total);
    Ok(Trained { input: input.into_values(), output: output.into_values(), last_epoch_loss })
}
