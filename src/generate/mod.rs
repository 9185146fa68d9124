//! Text generation with a key/value cache, shared by `cpt generate`, the generative
//! benchmarks of `cpt eval` and the samples written during training.
//!
//! - `decode`: batched prefill of left-padded prompts, then one token per step
//!   ([`generate`]); prefill and decode timed apart
//! - `sampling`: greedy, or temperature / top-k / top-p draws from a seeded stream, and the
//!   repetition penalty, in transformers' order
//! - `stop`: stop strings (cut from the output, held back while streaming)
//! - `chat`: chat templates from `tokenizer_config.json` (Jinja)
//!
//! The model side is `crate::model::kv_cache` and `CausalLm::forward_cached`. The tokenizer
//! is used only through [`TokenText`].
pub mod chat;
pub mod decode;
pub mod sampling;
pub mod stop;

pub use decode::{generate, FinishReason, Generated, GenerationConfig, GenerationStats, Request};
pub use sampling::Sampling;
pub use stop::StopStrings;

use anyhow::Result;

/// What generation needs from a tokenizer.
pub trait TokenText {
    /// Ids of `text`; `add_special` adds what the tokenizer adds by default (BOS for Llama).
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>>;
    /// Text of `ids` with special tokens skipped (transformers' `skip_special_tokens=True`).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Ids that end generation (the tokenizer's stop ids: its EOS, then the model's other
    /// end-of-sequence ids).
    fn eos_ids(&self) -> Vec<u32>;
}

impl TokenText for crate::tokenizer::Tokenizer {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner().encode(text, add_special).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner().decode(ids, true).map_err(|e| anyhow::anyhow!("decoding: {e}"))
    }

    fn eos_ids(&self) -> Vec<u32> {
        self.stop_ids().to_vec()
    }
}

/// The ids that end generation: the tokenizer's stop ids (the special-token rule of
/// `crate::tokenizer`), and the model's `eos_token_id` list where the tokenizer names none.
pub fn eos_ids(model: &crate::model::CausalLm, text: &dyn TokenText) -> Vec<u32> {
    let ids = text.eos_ids();
    if ids.is_empty() {
        model.config().eos_token_ids.clone()
    } else {
        ids
    }
}
