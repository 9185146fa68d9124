//! `tokenizer.json` through the tokenizers crate, with BOS/EOS taken from
//! `tokenizer_config.json` and the model's `config.json` when present.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// sha256 over tokenizer.json bytes and the resolved special ids.
    hash: String,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`, reading BOS/EOS from `dir/tokenizer_config.json` and
    /// `dir/config.json` (the model config wins when both name ids).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut tok = Self::from_file(&dir.join("tokenizer.json"))?;
        let tc = dir.join("tokenizer_config.json");
        if tc.exists() {
            let v = read_json(&tc)?;
            if let Some(id) = special_id(&tok.inner, v.get("bos_token"), &tc, "bos_token")? {
                tok.bos_id = Some(id);
            }
            if let Some(id) = special_id(&tok.inner, v.get("eos_token"), &tc, "eos_token")? {
                tok.eos_id = Some(id);
            }
        }
        let mc = dir.join("config.json");
        if mc.exists() {
            let v = read_json(&mc)?;
            if let Some(id) = v.get("bos_token_id").and_then(first_id) {
                tok.bos_id = Some(id);
            }
            if let Some(id) = v.get("eos_token_id").and_then(first_id) {
                tok.eos_id = Some(id);
            }
        }
        tok.rehash()?;
        Ok(tok)
    }

    /// Loads a `tokenizer.json` alone; BOS/EOS are guessed from common special-token names.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("loading tokenizer {}: {e}", path.display()))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos_id = find(&["<|begin_of_text|>", "<s>", "<|endoftext|>", "<bos>"]);
        let eos_id = find(&[
            "<|end_of_text|>",
            "</s>",
            "<|endoftext|>",
            "<eos>",
            "<|im_end|>",
        ]);
        let mut tok = Self {
            inner,
            bos_id,
            eos_id,
            hash: String::new(),
            path: path.to_path_buf(),
        };
        tok.rehash()?;
        Ok(tok)
    }

    fn rehash(&mut self) -> Result<()> {
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut h = Sha256::new();
        h.update(&bytes);
        h.update(format!("bos={:?};eos={:?}", self.bos_id, self.eos_id).as_bytes());
        self.hash = format!("{:x}", h.finalize());
        Ok(())
    }

    /// Token ids of `text` without the tokenizer's own special tokens; `add_bos` prepends BOS
    /// (when the tokenizer has one).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing with {}: {e}", self.path.display()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("decoding with {}: {e}", self.path.display()))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Number of ids including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Stable hash of the tokenizer's content (for caches of tokenized data).
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn first_id(v: &Value) -> Option<u32> {
    match v {
        Value::Array(a) => a.first().and_then(first_id),
        other => other.as_u64().map(|x| x as u32),
    }
}

/// `bos_token` may be a string or `{"content": ...}`; it must exist in the vocabulary.
fn special_id(
    tok: &tokenizers::Tokenizer,
    v: Option<&Value>,
    file: &Path,
    field: &str,
) -> Result<Option<u32>> {
    let content = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("content").and_then(|c| c.as_str()) {
            Some(s) => s.to_string(),
            None => anyhow::bail!(
                "{}: field `{field}` has no string `content`",
                file.display()
            ),
        },
        Some(other) => anyhow::bail!(
            "{}: field `{field}`: expected a string, got {other}",
            file.display()
        ),
    };
    match tok.token_to_id(&content) {
        Some(id) => Ok(Some(id)),
        None => anyhow::bail!(
            "{}: field `{field}` names `{content}`, which is not in tokenizer.json",
            file.display()
        ),
    }
}
