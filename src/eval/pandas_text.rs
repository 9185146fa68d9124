//! How `pandas.read_csv` turns a CSV column into the text the official MMLU, C-Eval and
//! CMMLU scripts format into prompts. pandas infers one dtype per column and file: a column
//! of integers prints as integers ("007" -> "7"), a column with any decimal or missing
//! value becomes float ("3" -> "3.0"), and its default NA strings ("None", "NA", "null", ...)
//! become NaN and print as "nan". The official prompts inherit all of this, so the
//! `official` template style reproduces it; the lm-evaluation-harness style reads the
//! Hugging Face copies, which keep the text as written.

/// pandas' default `na_values` (pandas/_libs/parsers.pyx `STR_NA_VALUES`), plus "".
const NA_VALUES: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

fn is_na(s: &str) -> bool {
    NA_VALUES.contains(&s)
}

fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i64>().ok()
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            return Some(if lower.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY })
        }
        _ => {}
    }
    // Rust accepts "inf"/"nan" spellings pandas does not; those were handled above.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
        return None;
    }
    if !t.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "True" | "TRUE" | "true" => Some(true),
        "False" | "FALSE" | "false" => Some(false),
        _ => None,
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for 1e-4 <= |x| < 1e16.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Renders one column the way `str.format` prints the values pandas parsed from it.
pub fn render_column(values: &[&str]) -> Vec<String> {
    let present: Vec<&str> = values.iter().copied().filter(|v| !is_na(v)).collect();
    let any_na = present.len() < values.len();
    if present.is_empty() {
        return values.iter().map(|_| "nan".to_string()).collect();
    }
    if !any_na && present.iter().all(|v| parse_bool(v).is_some()) {
        return values
            .iter()
            .map(|v| if parse_bool(v) == Some(true) { "True" } else { "False" }.to_string())
            .collect();
    }
    if !any_na && present.iter().all(|v| parse_int(v).is_some()) {
        return values.iter().map(|v| parse_int(v).map(|i| i.to_string()).unwrap_or_default()).collect();
    }
    if present.iter().all(|v| parse_float(v).is_some()) {
        return values
            .iter()
            .map(|v| match (is_na(v), parse_float(v)) {
                (false, Some(f)) => python_float_repr(f),
                _ => "nan".to_string(),
            })
            .collect();
    }
    // An object (string) column: text as written, NA strings as NaN.
    values.iter().map(|v| if is_na(v) { "nan".to_string() } else { v.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(python_float_repr(3.0), "3.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1.5e-5), "1.5e-05");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(123456.789), "123456.789");
        assert_eq!(python_float_repr(-2.5), "-2.5");
    }

    #[test]
    fn columns_take_pandas_dtypes() {
        assert_eq!(render_column(&["007", "12", "-3"]), vec!["7", "12", "-3"]);
        assert_eq!(render_column(&["3", "2.50", "1e3"]), vec!["3.0", "2.5", "1000.0"]);
        assert_eq!(render_column(&["3", ""]), vec!["3.0", "nan"]);
        assert_eq!(render_column(&["None", "cat", "3"]), vec!["nan", "cat", "3"]);
        assert_eq!(render_column(&["true", "False"]), vec!["True", "False"]);
        assert_eq!(render_column(&["NA", ""]), vec!["nan", "nan"]);
    }
}
