//! One decoder for `LlamaForCausalLM`, `Qwen2ForCausalLM` and `MistralForCausalLM`,
//! built only from ops that record a backward, with Hugging Face checkpoints in and out.
//!
//! - `config`: HF `config.json` (classic and `rope_parameters` forms) -> [`ModelConfig`]
//! - `ops`: differentiable RMSNorm, RoPE (incl. llama3 scaling), GQA attention, SwiGLU
//! - `params`: the parameter table (HF names, shapes, initialisation) of a config
//! - `causal_lm`: [`CausalLm`] (f32 master parameters, selectable compute dtype and kernels)
//! - `layer`: one decoder layer, through `kernels::dispatch` (composed or fused ops)
//! - `kv_cache`: keys/values of past tokens for generation (`CausalLm::forward_cached`)
//! - `packing`: document masks and per-document positions for packed rows
//! - `loss`: per-token NLL
//! - `io`: safetensors in/out (single file or sharded)
//! - `lora`: LoRA adapters (PEFT-compatible), frozen base weights, merge
//! - `init`: presets, seeded random init, byte-level BPE training
pub mod causal_lm;
pub mod config;
pub mod init;
pub mod io;
pub mod kv_cache;
mod layer;
pub mod lora;
pub mod loss;
pub mod ops;
pub mod packing;
pub mod params;

pub use causal_lm::{CausalLm, SaveOptions};
pub use layer::LayerWeights;
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use kv_cache::KvCache;
pub use loss::token_nll;
pub use packing::Packing;
/// The model directory's tokenizer (defined in `crate::tokenizer`).
pub use crate::tokenizer::Tokenizer;
