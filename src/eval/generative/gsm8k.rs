//! GSM8K as lm-evaluation-harness' `gsm8k` (5 shots drawn from the train split by its
//! seeded sampler) and `gsm8k_cot` (the 8 chain-of-thought exemplars of Wei et al.), with
//! its two answer extractions (`strict-match`, `flexible-extract`) and its `exact_match`
//! (case-insensitive, after removing `,`, `$`, everything up to `#### `, and a final `.`).
//!
//! Files: the released JSONL (`{"question", "answer"}` per line, openai/grade-school-math);
//! `gsm8k` draws its shots from `train.jsonl` beside the evaluated file.
use std::path::Path;

use anyhow::{bail, Result};
use fancy_regex::Regex;

use super::pyrandom::PyRandom;
use crate::util::jsonl::{read_records, string_field};

#[derive(Debug, Clone)]
pub struct Problem {
    pub question: String,
    pub answer: String,
    pub line: usize,
}

/// Reads a GSM8K JSONL file, naming file and line in every error.
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    read_records(path)?
        .into_iter()
        .map(|(line, v)| Ok(Problem { question: string_field(&v, "question", path, line)?, answer: string_field(&v, "answer", path, line)?, line }))
        .collect()
}

/// The harness' `fewshot_random_seed` default.
pub const FEWSHOT_SEED: u32 = 1234;

/// `gsm8k` prompts: for each test problem in order, 5 (or `shots`) train problems drawn by
/// `random.Random(1234).sample(train, shots)` (one draw per problem, in order), each as
/// `Question: q\nAnswer: a\n\n`, then `Question: q\nAnswer:`.
pub fn prompts(test: &[Problem], train: &[Problem], shots: usize) -> Result<Vec<String>> {
    if shots > train.len() {
        bail!("gsm8k: {shots} shots asked, the train split has {} problems", train.len());
    }
    let mut rng = PyRandom::new(FEWSHOT_SEED);
    Ok(test
        .iter()
        .map(|p| {
            let mut s = String::new();
            if shots > 0 {
                for i in rng.sample(train.len(), shots) {
                    s.push_str(&format!("Question: {}\nAnswer: {}\n\n", train[i].question, train[i].answer));
                }
            }
            s.push_str(&format!("Question: {}\nAnswer:", p.question));
            s
        })
        .collect())
}

/// The chain-of-thought exemplars of `gsm8k-cot.yaml` (question, target).
const COT_SHOTS: [(&str, &str); 8] = [
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."),
];

/// `gsm8k_cot` prompt: the first `shots` (8) exemplars as `Q: q\nA: a\n\n`, then `Q: q\nA:`.
pub fn cot_prompt(p: &Problem, shots: usize) -> String {
    let mut s = String::new();
    for (q, a) in COT_SHOTS.iter().take(shots) {
        s.push_str(&format!("Q: {q}\nA: {a}\n\n"));
    }
    s.push_str(&format!("Q: {}\nA:", p.question));
    s
}

pub fn max_cot_shots() -> usize {
    COT_SHOTS.len()
}

/// Stop strings of each variant (the harness adds the tokenizer's EOS, which ends
/// generation here anyway).
pub fn stop_strings(cot: bool) -> Vec<String> {
    let first = if cot { "Q:" } else { "Question:" };
    vec![first.into(), "</s>".into(), "<|im_end|>".into()]
}

/// The harness' `RegexFilter` + `take_first`: the `group_select`-th match (negative counts
/// from the end); with several groups, the first non-empty one; stripped; `[invalid]` when
/// nothing matches.
fn regex_filter(pattern: &Regex, group_select: isize, text: &str) -> String {
    let matches: Vec<fancy_regex::Captures> = pattern.captures_iter(text).filter_map(|m| m.ok()).collect();
    if matches.is_empty() {
        return "[invalid]".into();
    }
    let i = if group_select < 0 { matches.len() as isize + group_select } else { group_select };
    let Some(caps) = usize::try_from(i).ok().and_then(|i| matches.get(i)) else { return "[invalid]".into() };
    let picked = if caps.len() <= 2 {
        // findall returns the group itself (or the whole match without groups).
        caps.get(caps.len() - 1).map(|m| m.as_str()).unwrap_or("")
    } else {
        match (1..caps.len()).filter_map(|g| caps.get(g)).map(|m| m.as_str()).find(|s| !s.is_empty()) {
            Some(s) => s,
            None => return "[invalid]".into(),
        }
    };
    picked.trim().to_string()
}

/// Answer extractions: (`strict-match`, `flexible-extract`) of one output.
pub fn extract(output: &str, cot: bool) -> (String, String) {
    let strict = if cot { r"The answer is (\-?[0-9\.\,]+)." } else { r"#### (\-?[0-9\.\,]+)" };
    let strict = Regex::new(strict).expect("valid pattern");
    let flexible = Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").expect("valid pattern");
    (regex_filter(&strict, 0, output), regex_filter(&flexible, -1, output))
}

/// The harness' `exact_match` with gsm8k's settings, against the reference answer text.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    // Python's `$` (no MULTILINE) also matches before a final newline.
    let ignore = [",", r"\$", r"(?s).*#### ", r"\.(?=\n?\z)"];
    let clean = |s: &str| -> String {
        let mut s = s.to_string();
        for pattern in ignore {
            s = Regex::new(pattern).expect("valid pattern").replace_all(&s, "").into_owned();
        }
        s.to_lowercase()
    };
    clean(prediction) == clean(reference)
}
