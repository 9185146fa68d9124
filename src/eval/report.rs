//! Outputs: a terminal table, a JSON report, and per-question JSONL for auditing.
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::generative::{GenResult, GenRun};
use super::metrics::QuestionResult;
use super::multiple_choice::McRun;
use super::perplexity::PerplexityReport;

/// Everything `cpt eval` measured, as written to `report.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub benchmarks: Vec<McRun>,
    pub perplexity: Vec<PerplexityReport>,
    /// Generative benchmarks (gsm8k, math, humaneval, mbpp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generative: Vec<GenRun>,
    /// Wall-clock seconds and questions per second per benchmark.
    pub timing: Vec<Timing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub task: String,
    pub seconds: f64,
    pub items: usize,
    pub items_per_s: f64,
}

fn pct(x: f64) -> String {
    format!("{:6.2}", 100.0 * x)
}

/// The table printed after a run: per subject (when `subjects`), per category, overall.
pub fn format_table(report: &EvalReport, subjects: bool) -> String {
    let mut s = String::new();
    for run in &report.benchmarks {
        s.push_str(&format!(
            "\n{} ({} split, {} prompts, {}-shot)\n",
            run.benchmark,
            run.split,
            match run.style {
                super::templates::PromptStyle::Official => "official",
                super::templates::PromptStyle::LmEval => "lm-eval",
            },
            run.shots
        ));
        s.push_str(&format!("{:<44} {:>9} {:>7} {:>8}\n", "group", "questions", "acc %", "norm %"));
        if subjects {
            for (name, a) in &run.report.subjects {
                s.push_str(&format!("  {:<42} {:>9} {} {:>8}\n", name, a.questions, pct(a.acc), pct(a.acc_norm)));
            }
        }
        for (name, c) in &run.report.categories {
            s.push_str(&format!(
                "{:<44} {:>9} {} {:>8}   (macro {} over {} subjects)\n",
                name,
                c.questions,
                pct(c.acc_micro),
                pct(c.acc_norm_micro),
                pct(c.acc_macro).trim(),
                c.subjects
            ));
        }
        let o = &run.report.overall;
        s.push_str(&format!("{:<44} {:>9} {} {:>8}   (micro)\n", "overall", o.questions, pct(o.acc_micro), pct(o.acc_norm_micro)));
        s.push_str(&format!("{:<44} {:>9} {} {:>8}   (macro over {} subjects)\n", "overall", o.questions, pct(o.acc_macro), pct(o.acc_norm_macro), o.subjects));
    }
    for run in &report.generative {
        s.push_str(&format!(
            "\n{} ({} questions, {}-shot, {} sample{} each, {})\n",
            run.benchmark,
            run.questions,
            run.shots,
            run.samples,
            if run.samples == 1 { "" } else { "s" },
            if run.sampling.is_greedy() { "greedy".to_string() } else { format!("temperature {}", run.sampling.temperature) }
        ));
        if subjects {
            for (name, m) in &run.subjects {
                for (metric, v) in m {
                    s.push_str(&format!("  {name:<42} {metric:<30} {}\n", pct(*v)));
                }
            }
        }
        for (metric, v) in &run.metrics {
            s.push_str(&format!("{:<44} {metric:<30} {}\n", "overall", pct(*v)));
        }
    }
    if !report.perplexity.is_empty() {
        s.push_str(&format!(
            "\n{:<40} {:>6} {:>10} {:>9} {:>12} {:>9}\n",
            "perplexity", "docs", "tokens", "loss", "token ppl", "bits/byte"
        ));
        for p in &report.perplexity {
            s.push_str(&format!(
                "{:<40} {:>6} {:>10} {:>9.4} {:>12.3} {:>9.4}\n",
                p.name, p.documents, p.tokens, p.token_loss, p.token_perplexity, p.bits_per_byte
            ));
        }
    }
    for t in &report.timing {
        s.push_str(&format!("{}: {} items in {:.1}s ({:.2}/s)\n", t.task, t.items, t.seconds, t.items_per_s));
    }
    s
}

pub fn write_json(path: &Path, report: &EvalReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

pub fn write_questions_jsonl(path: &Path, results: &[QuestionResult]) -> Result<()> {
    write_jsonl(path, results)
}

/// One line per question of a generative benchmark: outputs, extracted answers, verdicts.
pub fn write_generative_jsonl(path: &Path, results: &[GenResult]) -> Result<()> {
    write_jsonl(path, results)
}

fn write_jsonl<T: Serialize>(path: &Path, results: &[T]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for r in results {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))
}
