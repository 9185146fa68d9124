//! Benchmarks and perplexity sets run every `eval.every_steps` steps (and at the end), with
//! the files loaded once at the start so a typo fails before training.
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::run_log::RunLog;
use crate::config::TrainConfig;
use crate::eval::model_adapter::ModelScorer;
use crate::eval::training::{parse_tasks, PreparedEvalTasks};
use crate::model::causal_lm::CausalLm;
use crate::tokenizer::Tokenizer;

pub struct TrainingEvals {
    pub every: u64,
    tasks: PreparedEvalTasks,
    tokenizer: Tokenizer,
}

impl TrainingEvals {
    /// None when the config names no tasks; the tokenizer comes from `model_dir`.
    pub fn prepare(cfg: &TrainConfig, model_dir: &Path) -> Result<Option<Self>> {
        if cfg.eval.tasks.is_empty() {
            return Ok(None);
        }
        let Some(every) = cfg.eval.every_steps.map(|c| c.get()).filter(|&n| n > 0) else {
            bail!("eval.every_steps: needed when eval.tasks are given");
        };
        let tasks = parse_tasks(&cfg.eval.tasks)?;
        let tasks = PreparedEvalTasks::from_tasks(&tasks, cfg.eval.batch_tokens).context("eval.tasks")?;
        let tokenizer = cfg.data.open_tokenizer(model_dir)?;
        Ok(Some(Self { every, tasks, tokenizer }))
    }

    /// Scores every task and writes one `eval` record.
    pub fn run(&self, model: &CausalLm, step: u64, tokens: u64, log: &mut RunLog) -> Result<()> {
        let results = self.tasks.run(&ModelScorer::new(model, None), &self.tokenizer)?;
        log.println(&format!("step {step} eval: {results}"));
        let mut record = serde_json::json!({"kind": "eval", "step": step, "tokens": tokens});
        if let (Some(obj), serde_json::Value::Object(r)) = (record.as_object_mut(), results) {
            obj.extend(r);
        }
        log.record(&record)
    }
}
