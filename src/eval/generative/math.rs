//! MATH (Hendrycks et al.) as lm-evaluation-harness' `minerva_math`: the Minerva 4-shot
//! prompt, the answer after "Final Answer: The final answer is", the Minerva normalisation
//! (`normalize_final_answer`, ported line by line) and equivalence.
//!
//! Equivalence: the harness calls two strings equal when they are identical or when sympy's
//! `simplify(parse_latex(a) - parse_latex(b)) == 0`. Here a small LaTeX expression reader
//! (numbers, + - * / ^, `\frac`, `\dfrac`, `\tfrac`, `\sqrt`, `\sqrt[n]`, `\pi`, `\cdot`,
//! `\times`, `\left`/`\right`, braces and parentheses, implicit products, one-letter
//! variables) evaluates both sides at several random points; anything it cannot read is
//! not equivalent, as sympy's parse failures are. Where sympy would simplify something
//! beyond that grammar (e.g. `\sin`, `\log`), the two can disagree: docs/eval.md.
//!
//! Files: the released layout, `DIR/{test,train}/<subject>/<id>.json` (or `DIR/<subject>/`)
//! with `problem`, `level`, `type`, `solution`.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use fancy_regex::Regex;

use crate::util::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct Problem {
    pub subject: String,
    pub id: String,
    pub problem: String,
    pub solution: String,
    /// The normalised boxed answer of the solution (the harness' `process_docs`).
    pub answer: String,
    pub file: PathBuf,
}

/// The harness' subject tasks, as the release names the folders.
pub const SUBJECTS: [&str; 7] =
    ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus"];

/// Reads every problem of `dir` (the `test` split when `dir/test` exists), subjects in the
/// harness' order, problems by file name.
pub fn read_problems(dir: &Path) -> Result<Vec<Problem>> {
    let root = if dir.join("test").is_dir() { dir.join("test") } else { dir.to_path_buf() };
    let mut out = Vec::new();
    for subject in SUBJECTS {
        let sub = root.join(subject);
        if !sub.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
            .with_context(|| format!("listing {}", sub.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort_by_key(|p| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
        });
        for file in files {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: bad JSON: {e}", file.display()))?;
            let field = |name: &str| -> Result<String> {
                v.get(name).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| anyhow!("{}: missing string field `{name}`", file.display()))
            };
            let solution = field("solution")?;
            let boxed = last_boxed_only_string(&solution)
                .and_then(|b| remove_boxed(&b))
                .ok_or_else(|| anyhow!("{}: the solution has no \\boxed{{...}} answer", file.display()))?;
            out.push(Problem {
                subject: subject.to_string(),
                id: file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
                problem: field("problem")?,
                answer: normalize_final_answer(&boxed),
                solution,
                file,
            });
        }
    }
    if out.is_empty() {
        bail!("{}: no MATH problems (expected {{test/}}<subject>/<n>.json for subjects {})", dir.display(), SUBJECTS.join(", "));
    }
    Ok(out)
}

/// The four Minerva exemplars of the harness' `list_fewshot_samples` (problem, solution).
const SHOTS: [(&str, &str); 4] = [
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it is correct."),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."),
];

pub fn max_shots() -> usize {
    SHOTS.len()
}

/// `Problem:\n{p}\n\nSolution: {solution}\n\n` per exemplar, then `Problem:\n{p}\n\nSolution:`.
pub fn prompt(p: &Problem, shots: usize) -> String {
    let mut s = String::new();
    for (q, a) in SHOTS.iter().take(shots) {
        s.push_str(&format!("Problem:\n{q}\n\nSolution: {a}\n\n"));
    }
    s.push_str(&format!("Problem:\n{}\n\nSolution:", p.problem));
    s
}

pub fn stop_strings() -> Vec<String> {
    vec!["Problem:".into()]
}

/// The harness' `last_boxed_only_string`.
pub fn last_boxed_only_string(s: &str) -> Option<String> {
    if s.contains("\\boxed ") {
        let tail = s.split("\\boxed ").last().unwrap_or("");
        return Some(format!("\\boxed {}", tail.split('$').next().unwrap_or("")));
    }
    let idx = s.rfind("\\boxed").or_else(|| s.rfind("\\fbox"))?;
    let mut open = 0i32;
    for (i, c) in s[idx..].char_indices() {
        if c == '{' {
            open += 1;
        }
        if c == '}' {
            open -= 1;
            if open == 0 {
                return Some(s[idx..idx + i + 1].to_string());
            }
        }
    }
    None
}

/// The harness' `remove_boxed` (None where its assertions would fail).
pub fn remove_boxed(s: &str) -> Option<String> {
    if s.contains("\\boxed ") {
        return s.strip_prefix("\\boxed ").map(str::to_string);
    }
    s.strip_prefix("\\boxed{")?.strip_suffix('}').map(str::to_string)
}

/// The harness' `get_unnormalized_answer`.
pub fn get_unnormalized_answer(text: &str) -> String {
    let text = format!("{text}I hope it is correct.");
    let re = Regex::new(r"Final Answer: The final answer is(.*?). I hope it is correct.").expect("valid pattern");
    match re.captures(&text).ok().flatten().and_then(|c| c.get(1)) {
        Some(m) => m.as_str().trim().to_string(),
        None => "[invalidanswer]".into(),
    }
}

const SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

const REMOVED_EXPRESSIONS: [&str; 42] = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue", "points", "feet",
    "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students", "childrentickets",
    "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}",
    "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", "\"", "\\dots",
];

fn is_alpha(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphabetic())
}

fn re_sub(pattern: &str, replacement: &str, text: &str) -> String {
    Regex::new(pattern).expect("valid pattern").replace_all(text, replacement).into_owned()
}

/// The harness' `normalize_final_answer` (Minerva, appendix D, with the harness' fixes).
pub fn normalize_final_answer(final_answer: &str) -> String {
    let mut s = final_answer.split('=').next_back().unwrap_or("").to_string();
    let removed = &REMOVED_EXPRESSIONS;
    for expr in removed.iter().filter(|e| is_alpha(e)) {
        s = re_sub(&format!(r"(?<!\\)\b{expr}\b"), "", &s);
    }
    for (before, after) in SUBSTITUTIONS {
        s = s.replace(before, after);
    }
    let command = Regex::new(r"(\\[a-zA-Z]+)").expect("valid pattern");
    for expr in removed {
        if is_alpha(expr) {
            // re.split with a group keeps the commands at odd positions; replace in the rest.
            let mut out = String::new();
            let mut last = 0;
            for m in command.find_iter(&s).filter_map(|m| m.ok()) {
                out.push_str(&s[last..m.start()].replace(expr, ""));
                out.push_str(m.as_str());
                last = m.end();
            }
            out.push_str(&s[last..].replace(expr, ""));
            s = out;
        } else {
            s = s.replace(expr, "");
        }
    }
    s = re_sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$$$3$$", &s);
    s = re_sub(r"(\\text\{)(.*?)(\})", "$2", &s);
    s = re_sub(r"(\\textbf\{)(.*?)(\})", "$2", &s);
    s = re_sub(r"(\\overline\{)(.*?)(\})", "$2", &s);
    s = re_sub(r"(\\boxed\{)(.*)(\})", "$2", &s);
    s = re_sub(r"(frac)([^{])(.)", "frac{$2}{$3}", &s);
    s = re_sub(r"(sqrt)(\[[^\]]*\])(\w)", "$1$2{$3}", &s);
    s = re_sub(r"(sqrt)(?!\[)([^{])", "sqrt{$2}", &s);
    s = s.replace('$', "");
    if Regex::new(r"^-?\d{1,3}(,\d{3})+$").expect("valid pattern").is_match(&s).unwrap_or(false) {
        s = s.replace(',', "");
    }
    s
}

/// The harness' `is_equiv` on two normalised answers (see the module comment).
pub fn is_equiv(a: &str, b: &str) -> bool {
    if !a.is_empty() && a == b {
        return true;
    }
    let (Some(x), Some(y)) = (latex::parse(a), latex::parse(b)) else { return false };
    let mut vars: Vec<char> = Vec::new();
    x.variables(&mut vars);
    y.variables(&mut vars);
    let mut rng = SplitMix64::new(0x5eed);
    for _ in 0..6 {
        let point: Vec<(char, f64)> = vars.iter().map(|&v| (v, 0.5 + 2.5 * rng.next_unit())).collect();
        let (Some(p), Some(q)) = (x.eval(&point), y.eval(&point)) else { return false };
        if !p.is_finite() || !q.is_finite() || (p - q).abs() > 1e-9 * p.abs().max(q.abs()).max(1.0) {
            return false;
        }
    }
    true
}

/// A small reader of LaTeX arithmetic, for equivalence by evaluation.
mod latex {
    #[derive(Debug, Clone)]
    pub enum Expr {
        Num(f64),
        Var(char),
        Neg(Box<Expr>),
        Add(Box<Expr>, Box<Expr>),
        Sub(Box<Expr>, Box<Expr>),
        Mul(Box<Expr>, Box<Expr>),
        Div(Box<Expr>, Box<Expr>),
        Pow(Box<Expr>, Box<Expr>),
        Root(Box<Expr>, Box<Expr>),
    }

    impl Expr {
        pub fn variables(&self, out: &mut Vec<char>) {
            match self {
                Expr::Var(c) => {
                    if !out.contains(c) {
                        out.push(*c)
                    }
                }
                Expr::Num(_) => {}
                Expr::Neg(a) => a.variables(out),
                Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) | Expr::Pow(a, b) | Expr::Root(a, b) => {
                    a.variables(out);
                    b.variables(out);
                }
            }
        }

        pub fn eval(&self, at: &[(char, f64)]) -> Option<f64> {
            Some(match self {
                Expr::Num(x) => *x,
                Expr::Var(c) => at.iter().find(|(v, _)| v == c)?.1,
                Expr::Neg(a) => -a.eval(at)?,
                Expr::Add(a, b) => a.eval(at)? + b.eval(at)?,
                Expr::Sub(a, b) => a.eval(at)? - b.eval(at)?,
                Expr::Mul(a, b) => a.eval(at)? * b.eval(at)?,
                Expr::Div(a, b) => a.eval(at)? / b.eval(at)?,
                Expr::Pow(a, b) => a.eval(at)?.powf(b.eval(at)?),
                Expr::Root(n, a) => a.eval(at)?.powf(1.0 / n.eval(at)?),
            })
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Num(f64),
        Var(char),
        Op(char),
        Open(char),
        Close(char),
        Cmd(String),
    }

    fn lex(s: &str) -> Option<Vec<Tok>> {
        let c: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            if ch.is_whitespace() {
                i += 1;
            } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
                let start = i;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(c[start..i].iter().collect::<String>().parse().ok()?));
            } else if ch.is_ascii_alphabetic() {
                out.push(Tok::Var(ch));
                i += 1;
            } else if ch == '\\' {
                let start = i + 1;
                i += 1;
                while i < c.len() && c[i].is_ascii_alphabetic() {
                    i += 1;
                }
                if i == start {
                    // `\!`, `\,`: spacing.
                    i += 1;
                    continue;
                }
                let name: String = c[start..i].iter().collect();
                match name.as_str() {
                    "left" | "right" => {}
                    "cdot" | "times" => out.push(Tok::Op('*')),
                    "div" => out.push(Tok::Op('/')),
                    _ => out.push(Tok::Cmd(name)),
                }
            } else if "+-*/^".contains(ch) {
                out.push(Tok::Op(ch));
                i += 1;
            } else if "({[".contains(ch) {
                out.push(Tok::Open(ch));
                i += 1;
            } else if ")}]".contains(ch) {
                out.push(Tok::Close(ch));
                i += 1;
            } else {
                return None;
            }
        }
        Some(out)
    }

    struct Parser {
        toks: Vec<Tok>,
        at: usize,
    }

    fn closing(open: char) -> char {
        match open {
            '(' => ')',
            '{' => '}',
            _ => ']',
        }
    }

    impl Parser {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.at)
        }
        fn next(&mut self) -> Option<Tok> {
            let t = self.toks.get(self.at).cloned();
            self.at += 1;
            t
        }
        fn expect_close(&mut self, open: char) -> Option<()> {
            (self.next()? == Tok::Close(closing(open))).then_some(())
        }
        fn sum(&mut self) -> Option<Expr> {
            let mut e = self.product()?;
            while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek().cloned() {
                self.at += 1;
                let r = self.product()?;
                e = if op == '+' { Expr::Add(Box::new(e), Box::new(r)) } else { Expr::Sub(Box::new(e), Box::new(r)) };
            }
            Some(e)
        }
        fn product(&mut self) -> Option<Expr> {
            let mut e = self.unary()?;
            loop {
                match self.peek().cloned() {
                    Some(Tok::Op(op @ ('*' | '/'))) => {
                        self.at += 1;
                        let r = self.unary()?;
                        e = if op == '*' { Expr::Mul(Box::new(e), Box::new(r)) } else { Expr::Div(Box::new(e), Box::new(r)) };
                    }
                    // Implicit product: 2x, 2\pi, (a)(b), 3\sqrt{2}.
                    Some(Tok::Num(_) | Tok::Var(_) | Tok::Open('(' | '{') | Tok::Cmd(_)) => {
                        let r = self.power()?;
                        e = Expr::Mul(Box::new(e), Box::new(r));
                    }
                    _ => return Some(e),
                }
            }
        }
        fn unary(&mut self) -> Option<Expr> {
            match self.peek() {
                Some(Tok::Op('-')) => {
                    self.at += 1;
                    Some(Expr::Neg(Box::new(self.unary()?)))
                }
                Some(Tok::Op('+')) => {
                    self.at += 1;
                    self.unary()
                }
                _ => self.power(),
            }
        }
        fn power(&mut self) -> Option<Expr> {
            let base = self.atom()?;
            if let Some(Tok::Op('^')) = self.peek() {
                self.at += 1;
                let exp = match self.peek() {
                    Some(Tok::Open('{')) => self.atom()?,
                    Some(Tok::Op('-')) => self.unary()?,
                    _ => self.atom()?,
                };
                return Some(Expr::Pow(Box::new(base), Box::new(exp)));
            }
            Some(base)
        }
        fn group(&mut self) -> Option<Expr> {
            match self.next()? {
                Tok::Open('{') => {
                    let e = self.sum()?;
                    self.expect_close('{')?;
                    Some(e)
                }
                Tok::Num(x) => Some(Expr::Num(x)),
                Tok::Var(v) => Some(Expr::Var(v)),
                _ => None,
            }
        }
        fn atom(&mut self) -> Option<Expr> {
            match self.next()? {
                Tok::Num(x) => Some(Expr::Num(x)),
                Tok::Var(v) => Some(Expr::Var(v)),
                Tok::Open(o) if o != '[' => {
                    let e = self.sum()?;
                    self.expect_close(o)?;
                    Some(e)
                }
                Tok::Cmd(name) => match name.as_str() {
                    "frac" | "dfrac" | "tfrac" => {
                        let a = self.group()?;
                        let b = self.group()?;
                        Some(Expr::Div(Box::new(a), Box::new(b)))
                    }
                    "sqrt" => {
                        let n = if self.peek() == Some(&Tok::Open('[')) {
                            self.at += 1;
                            let n = self.sum()?;
                            self.expect_close('[')?;
                            n
                        } else {
                            Expr::Num(2.0)
                        };
                        let a = self.group()?;
                        Some(Expr::Root(Box::new(n), Box::new(a)))
                    }
                    "pi" => Some(Expr::Num(std::f64::consts::PI)),
                    _ => None,
                },
                _ => None,
            }
        }
    }

    pub fn parse(s: &str) -> Option<Expr> {
        let toks = lex(s)?;
        if toks.is_empty() {
            return None;
        }
        let mut p = Parser { toks, at: 0 };
        let e = p.sum()?;
        (p.at == p.toks.len()).then_some(e)
    }
}
