//! Prompt templates, byte for byte as the official scripts and lm-evaluation-harness
//! build them.
//!
//! Official (hendrycks/test `evaluate_hf.py`, hkust-nlp/ceval evaluators, haonan-li/CMMLU
//! `mp_utils.py`): a description, then each shot with its answer and "\n\n", then the
//! question. MMLU's `format_subject` puts a space before every word, so its description
//! reads "about  abstract algebra." with two spaces; the fields are what pandas parsed.
//!
//! lm-evaluation-harness (`mmlu/default`, `ceval`, `cmmlu` task YAMLs): the description,
//! shots `doc_to_text + " " + letter` joined by "\n\n", "\n\n", then `doc_to_text`; the
//! question is `.strip()`ed, and every choice is scored as " A", " B", ...
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::benchmarks::{BenchmarkKind, Question, LETTERS};
use super::subjects::display_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    #[default]
    Official,
    LmEval,
}

impl FromStr for PromptStyle {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "official" => Ok(PromptStyle::Official),
            "lm-eval" | "lm_eval" | "harness" => Ok(PromptStyle::LmEval),
            _ => bail!("unknown prompt style {s:?}: expected `official` or `lm-eval`"),
        }
    }
}

/// Renders prompts for one benchmark subject in one style.
#[derive(Debug, Clone)]
pub struct Template {
    pub kind: BenchmarkKind,
    pub style: PromptStyle,
    pub subject: String,
}

impl Template {
    pub fn new(kind: BenchmarkKind, style: PromptStyle, subject: &str) -> Self {
        Template { kind, style, subject: subject.to_string() }
    }

    /// The instruction line that opens every prompt.
    pub fn description(&self) -> String {
        let zh = display_name(self.kind, &self.subject);
        match (self.kind, self.style) {
            (BenchmarkKind::Mmlu, PromptStyle::Official) => {
                // " ".join-with-leading-space, exactly as format_subject() builds it.
                let spaced: String = self.subject.split('_').map(|w| format!(" {w}")).collect();
                format!("The following are multiple choice questions (with answers) about {spaced}.\n\n")
            }
            (BenchmarkKind::Mmlu, PromptStyle::LmEval) => {
                format!("The following are multiple choice questions (with answers) about {zh}.\n\n")
            }
            (BenchmarkKind::Ceval, _) => format!("以下是中国关于{zh}考试的单项选择题，请选出其中的正确答案。\n\n"),
            (BenchmarkKind::Cmmlu, _) => format!("以下是关于{zh}的单项选择题，请直接给出正确答案的选项。\n\n"),
            (BenchmarkKind::Arc | BenchmarkKind::Hellaswag, _) => String::new(),
        }
    }

    /// The question with its options, ending where the answer goes ("\nAnswer:", "\n答案：", ...).
    pub fn question_text(&self, q: &Question) -> String {
        match self.kind {
            BenchmarkKind::Arc => return format!("Question: {}\nAnswer:", q.question),
            BenchmarkKind::Hellaswag => return q.question.clone(),
            _ => {}
        }
        let (stem, choices) = match self.style {
            PromptStyle::Official => (q.official_question.as_str(), &q.official_choices),
            PromptStyle::LmEval => (q.question.trim(), &q.choices),
        };
        let mut s = String::new();
        if self.kind == BenchmarkKind::Cmmlu && self.style == PromptStyle::Official {
            s.push_str("题目：");
        }
        s.push_str(stem);
        for (letter, choice) in LETTERS.iter().zip(choices.iter()) {
            s.push_str(&format!("\n{letter}. {choice}"));
        }
        s.push_str(match (self.kind, self.style) {
            (BenchmarkKind::Mmlu, _) => "\nAnswer:",
            (BenchmarkKind::Ceval, _) | (BenchmarkKind::Cmmlu, PromptStyle::LmEval) => "\n答案：",
            (BenchmarkKind::Cmmlu, PromptStyle::Official) => "\n答案是：",
            (BenchmarkKind::Arc | BenchmarkKind::Hellaswag, _) => "",
        });
        s
    }

    /// The continuation scored for choice `i` of `q`: what follows `question_text` in a shot.
    pub fn continuation(&self, q: &Question, i: usize) -> String {
        if !self.kind.letter_choices() {
            return format!(" {}", q.choices[i]);
        }
        match (self.kind, self.style) {
            (BenchmarkKind::Mmlu, _) | (_, PromptStyle::LmEval) => format!(" {}", LETTERS[i]),
            _ => LETTERS[i].to_string(),
        }
    }

    /// One solved example as it appears in the prompt, including its trailing separator.
    pub fn shot(&self, q: &Question) -> String {
        format!("{}{}\n\n", self.question_text(q), self.continuation(q, q.answer))
    }

    /// The choice as lm-evaluation-harness' `doc_to_choice` names it; `acc_norm` divides by
    /// its length in characters.
    pub fn choice_text(&self, q: &Question, i: usize) -> String {
        if self.kind.letter_choices() {
            LETTERS[i].to_string()
        } else {
            q.choices[i].clone()
        }
    }

    /// The whole context: description, shots, question (no answer).
    pub fn context(&self, shots: &[&Question], q: &Question) -> String {
        let mut s = self.description();
        for shot in shots {
            s.push_str(&self.shot(shot));
        }
        s.push_str(&self.question_text(q));
        s
    }
}
