//! `cpt topics`: a fastText-style supervised text classifier that gives every document of a
//! raw crawl a topic, so the sampler's topic mixing (Llama-3-SynE's re-weighting) can work
//! on data that carries no labels.
//!
//! - `hashing`: fastText's words, FNV-1a hash and character / word n-gram buckets.
//! - `vocab`, `features`: the word vocabulary and text -> feature rows.
//! - `kernels`, `model`: averaged embeddings -> linear layer -> softmax; prediction.
//! - `hogwild`, `train`: lock-free multi-threaded SGD with a linearly decaying rate.
//! - `data`, `build`, `metrics`: labelled documents, the seeded held-out split, training
//!   and evaluation (accuracy, macro-F1, per-topic precision/recall, confusion matrix).
//! - `io`: the classifier directory (versioned, checked on load).
//! - `label`: JSONL files in and out, or topics written into prepared shards.
pub mod build;
pub mod data;
pub mod features;
pub mod hashing;
mod hogwild;
pub mod io;
mod kernels;
pub mod label;
pub mod metrics;
pub mod model;
pub mod train;
pub mod vocab;
