//! Chat templates: the Jinja template of a model's `tokenizer_config.json` (or
//! `chat_template.jinja`) rendered as transformers' `apply_chat_template` renders it:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, Python's string methods, its
//! `tojson` (no HTML escaping, `json.dumps` spacing), `raise_exception`, `strftime_now`, and
//! the special tokens (`bos_token`, `eos_token`, ...) as variables. The rendered text already
//! holds the template's special tokens, so it is tokenized without adding any.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message (`{"role": "user", "content": "..."}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A model's chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    source: String,
    /// `bos_token`, `eos_token`, ... as strings.
    special: serde_json::Map<String, serde_json::Value>,
}

const SPECIAL_KEYS: &[&str] = &["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

impl ChatTemplate {
    /// Reads `dir/chat_template.jinja` or the `chat_template` of `dir/tokenizer_config.json`
    /// (a string, or a list of `{name, template}` of which `default` is taken).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config_path.display()))?,
            Err(_) => serde_json::Value::Null,
        };
        let jinja_path = dir.join("chat_template.jinja");
        let source = if jinja_path.is_file() {
            std::fs::read_to_string(&jinja_path).with_context(|| format!("reading {}", jinja_path.display()))?
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{}: field `chat_template` is a list without a `default` template", config_path.display()))?,
                Some(other) => bail!("{}: field `chat_template`: expected a string, got {other}", config_path.display()),
                None => bail!(
                    "{} has no chat template (no `chat_template` in {}, no chat_template.jinja): \
                     the model is not a chat model; drop --chat",
                    dir.display(),
                    config_path.display()
                ),
            }
        };
        let mut special = serde_json::Map::new();
        for key in SPECIAL_KEYS {
            let text = match config.get(*key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
                _ => None,
            };
            if let Some(text) = text {
                special.insert(key.to_string(), text.into());
            }
        }
        let template = Self { source, special };
        template.environment().map_err(|e| anyhow!("{}: the chat template does not parse: {e}", dir.display()))?;
        Ok(template)
    }

    /// A template from its source and special tokens (`[("bos_token", "<s>")]`).
    pub fn new(source: &str, special: &[(&str, &str)]) -> Result<Self> {
        let special = special.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let template = Self { source: source.to_string(), special };
        template.environment().map_err(|e| anyhow!("the chat template does not parse: {e}"))?;
        Ok(template)
    }

    fn environment(&self) -> std::result::Result<Environment<'_>, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> std::result::Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template("chat", &self.source)?;
        Ok(env)
    }

    /// The conversation as the model's prompt; `add_generation_prompt` opens the assistant's
    /// turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment().map_err(|e| anyhow!("chat template: {e}"))?;
        let mut ctx = self.special.clone();
        ctx.insert("messages".into(), serde_json::to_value(messages)?);
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        let template = env.get_template("chat").map_err(|e| anyhow!("chat template: {e}"))?;
        template.render(Value::from_serialize(&ctx)).map_err(|e| anyhow!("chat template: {e:#}"))
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=..., separators=...,
/// sort_keys=...)`, not Jinja's HTML-escaping one.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
        // json.dumps: ", " without indent, "," with one.
        None => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    write_json(&json, &PyJson { indent, item_sep, key_sep, sort_keys: sort_keys.unwrap_or(false) }, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(v: &serde_json::Value, f: &PyJson, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = f.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&f.item_sep);
                }
                newline(out, depth + 1);
                write_json(item, f, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            if f.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&f.item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(&f.key_sep);
                write_json(item, f, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        J::Array(_) => out.push_str("[]"),
        J::Object(_) => out.push_str("{}"),
        // serde_json escapes as json.dumps(ensure_ascii=False) does (quotes, backslashes,
        // control characters), and prints integers and floats alike for the values chat
        // messages carry.
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// `strftime_now(format)`: the local time formatted by the C library's `strftime`, as
/// Python's `datetime.now().strftime` does.
fn strftime_now(format: String) -> std::result::Result<Value, Error> {
    let fmt = std::ffi::CString::new(format).map_err(|_| Error::new(ErrorKind::InvalidOperation, "strftime_now: NUL in format"))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `tm` is filled by localtime_r before use; strftime writes at most buf.len()
    // bytes and returns how many it wrote.
    let n = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        libc::strftime(buf.as_mut_ptr() as *mut libc::c_char, buf.len(), fmt.as_ptr(), &tm)
    };
    buf.truncate(n);
    Ok(Value::from(String::from_utf8_lossy(&buf).into_owned()))
}
