//! Training: the loop, the optimiser with saveable state, LR schedules, guard rails, and
//! atomic run checkpoints.
//!
//! - `trainer`: `train` and the loop; each step calls the pieces below in order
//! - `setup`: device, base model, threads, data and sampler, before the first step
//! - `trained_model`: what trains (all weights, or LoRA adapters), how it loads and is checkpointed
//! - `resume`: which checkpoint a run starts from, and restoring its state
//! - `batch`: sampler windows -> micro-batches
//! - `forward_backward`: gradients and losses of a step's micro-batches, reduced to the step's
//! - `freeze`: the masks of a post-extension warm-up
//! - `guard`: NaN / spike skips, stop after too many in a row
//! - `optim`: AdamW / SGD with f32 master weights, clipping, masks, saveable state
//! - `schedule`: the LR as a pure function of tokens or steps
//! - `run_log`: metrics file, TensorBoard, progress bar (`metrics`, `tensorboard`, `memory`)
//! - `validate`: held-out loss per source and topic
//! - `evals`: benchmarks during training
//! - `checkpoint`: atomic run checkpoints
//! - `plot`: charts of a metrics file
pub mod batch;
pub mod checkpoint;
pub mod evals;
pub mod forward_backward;
pub mod freeze;
pub mod guard;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod resume;
pub mod run_log;
pub mod samples;
pub mod schedule;
pub mod setup;
pub mod tensorboard;
pub mod trained_model;
pub mod trainer;
pub mod validate;
