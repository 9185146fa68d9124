//! Samples during training (`eval.generate`): what the model writes after fixed prompts,
//! every `every_steps` steps and at the end, as `{"kind":"sample","step","tokens","prompt",
//! "output"}` records in the metrics JSONL and as text in TensorBoard (`samples/<i>`).
use std::path::Path;

use anyhow::{Context, Result};

use super::run_log::RunLog;
use crate::config::{SamplesConfig, TrainConfig};
use crate::generate::{eos_ids, generate, GenerationConfig, Request, Sampling, StopStrings, TokenText};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;

pub struct TrainingSamples {
    cfg: SamplesConfig,
    tokenizer: Tokenizer,
}

impl TrainingSamples {
    /// None when the config has no `eval.generate`.
    pub fn prepare(cfg: &TrainConfig, model_dir: &Path) -> Result<Option<Self>> {
        let Some(g) = &cfg.eval.generate else { return Ok(None) };
        let tokenizer = cfg.data.open_tokenizer(model_dir).context("eval.generate: loading the tokenizer")?;
        Ok(Some(Self { cfg: g.clone(), tokenizer }))
    }

    pub fn due(&self, step: u64, last_step: u64) -> bool {
        step % self.cfg.every_steps.0 == 0 || step == last_step
    }

    /// Generates for every prompt and logs each sample.
    pub fn run(&self, model: &CausalLm, step: u64, tokens: u64, log: &mut RunLog) -> Result<()> {
        let requests = self
            .cfg
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Ok(Request { ids: TokenText::encode(&self.tokenizer, p, true)?, seed: self.cfg.seed.wrapping_add(i as u64) }))
            .collect::<Result<Vec<_>>>()?;
        let gen = GenerationConfig {
            max_new_tokens: self.cfg.max_new_tokens,
            sampling: Sampling { temperature: self.cfg.temperature, ..Sampling::greedy() },
            stop: StopStrings::default(),
            eos_ids: eos_ids(model, &self.tokenizer),
            batch_size: requests.len(),
        };
        let (outputs, _) = generate(model, &self.tokenizer, &requests, &gen, &mut |_, _| {}).context("eval.generate")?;
        for (i, (prompt, out)) in self.cfg.prompts.iter().zip(&outputs).enumerate() {
            log.sample(step, tokens, i, prompt, &out.text)?;
        }
        Ok(())
    }
}
