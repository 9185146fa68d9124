//! Evaluation: multiple-choice benchmarks (MMLU, C-Eval, CMMLU) with the official and
//! lm-evaluation-harness prompts, generative benchmarks (GSM8K, MATH, HumanEval, MBPP in
//! `generative`, generated code run by `sandbox`), perplexity / bits per byte,
//! per-document scores for curricula, and MindLLM's data-entropy selection.
//!
//! Everything scores through one small trait, `loglik::LogitsModel` (a batched forward
//! that answers "log p(token | prefix)" queries); `model_adapter` implements it for
//! `crate::model::CausalLm`.
pub mod benchmarks;
pub mod documents;
pub mod entropy;
pub mod generative;
pub mod loglik;
pub mod metrics;
pub mod model_adapter;
pub mod multiple_choice;
pub mod pandas_text;
pub mod perplexity;
pub mod report;
pub mod requests;
pub mod sandbox;
pub mod score;
pub mod subjects;
pub mod templates;
pub mod testing;
pub mod training;

pub use benchmarks::{load_benchmark, Benchmark, BenchmarkKind};
pub use loglik::{LogitsModel, TokenQuery, TokenScore};
pub use multiple_choice::{evaluate_benchmark, McOptions};
pub use requests::TextEncoder;
pub use templates::PromptStyle;
pub use training::{EvalTask, PreparedEvalTasks};
