//! The decoding options `cpt generate` and the generative benchmarks of `cpt eval` share.
use anyhow::Result;

use cpt::generate::Sampling;

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// 0: greedy decoding; otherwise sample at this temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens that make up this probability (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalise tokens already in the prompt or output (1: off; transformers' definition).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the sampling streams (each prompt or sample gets its own stream).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn sampling(&self) -> Result<Sampling> {
        let s = Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
        };
        s.validate()?;
        Ok(s)
    }
}
