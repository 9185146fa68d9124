//! `cpt`: continual pre-training of Llama-family language models.
//!
//! The path of a token: `data` (sources -> token shards -> sampler windows) feeds
//! `train` (loop, optimiser, schedule, checkpoints), which drives `model` (one decoder for
//! Llama/Qwen2/Mistral with a backward for every op). `eval` scores checkpoints with the
//! same forward path; `tokenizer` is the one tokenizer all of them share (BOS/EOS/PAD by one
//! rule); `vocab` extends tokenizers; `sweep` runs and fits proxy grids; `topics` labels
//! documents by topic for the sampler's topic mixing.

pub mod chart;
pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod sweep;
pub mod tokenizer;
pub mod topics;
pub mod train;
pub mod util;
pub mod vocab;
