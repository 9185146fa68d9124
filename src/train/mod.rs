//! Training: the loop, the optimiser with saveable state, LR schedules, guard rails, and
//! atomic run checkpoints.
pub mod checkpoint;
pub mod guard;
pub mod lora;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod tensorboard;
pub mod batch;
pub mod setup;
pub mod trainer;
pub mod validate;
