//! The tokenizer as the data pipeline uses it: `tokenizer.json` through the `tokenizers`
//! crate, BOS/EOS ids from the model's config files, and a content hash for the manifest.
//! Every tokenizer use of `data` goes through here.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    vocab_size: usize,
    hash: String,
}

/// Explicit BOS/EOS token strings (from `data.bos_token` / `data.eos_token`).
#[derive(Debug, Clone, Default)]
pub struct SpecialOverrides {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl TextTokenizer {
    /// `path` is a `tokenizer.json` or a directory holding one (a Hugging Face model dir,
    /// where `tokenizer_config.json` and `config.json` name BOS/EOS).
    pub fn load(path: &Path, overrides: &SpecialOverrides) -> Result<Self> {
        let (file, dir) = if path.is_dir() {
            (path.join("tokenizer.json"), Some(path.to_path_buf()))
        } else {
            (path.to_path_buf(), path.parent().map(Path::to_path_buf))
        };
        if !file.is_file() {
            bail!("tokenizer: {} does not exist (give a tokenizer.json or a model directory holding one)", file.display());
        }
        let bytes = std::fs::read(&file).with_context(|| format!("reading tokenizer {}", file.display()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("tokenizer {}: cannot load: {e}", file.display()))?;
        let vocab_size = inner.get_vocab_size(true);
        let mut tok = TextTokenizer { inner, path: file.clone(), bos_id: None, eos_id: None, vocab_size, hash: String::new() };
        let (bos_text, eos_text) = match &dir {
            Some(d) => special_strings(d)?,
            None => (None, None),
        };
        let config_ids = match &dir {
            Some(d) => config_ids(d)?,
            None => (None, None),
        };
        tok.bos_id = tok.resolve("bos_token", overrides.bos_token.as_deref().or(bos_text.as_deref()), config_ids.0)?;
        tok.eos_id = tok.resolve("eos_token", overrides.eos_token.as_deref().or(eos_text.as_deref()), config_ids.1)?;
        let mut h = Sha256::new();
        h.update(&bytes);
        h.update(format!("bos={:?};eos={:?}", tok.bos_id, tok.eos_id).as_bytes());
        tok.hash = format!("{:x}", h.finalize());
        Ok(tok)
    }

    fn resolve(&self, what: &str, text: Option<&str>, id: Option<u32>) -> Result<Option<u32>> {
        if let Some(t) = text {
            return match self.inner.token_to_id(t) {
                Some(id) => Ok(Some(id)),
                None => bail!("tokenizer {}: {what} `{t}` is not in the vocabulary", self.path.display()),
            };
        }
        if let Some(id) = id {
            if (id as usize) >= self.vocab_size {
                bail!("tokenizer {}: {what} id {id} is outside the vocabulary ({})", self.path.display(), self.vocab_size);
            }
        }
        Ok(id)
    }

    /// Token ids of `text` without special tokens (documents get BOS/EOS from the caller).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| anyhow!("decoding: {e}"))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    /// sha256 of `tokenizer.json` and the BOS/EOS ids: what decides whether shards match.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `bos_token` / `eos_token` from `tokenizer_config.json` (a string or `{content: ..}`).
fn special_strings(dir: &Path) -> Result<(Option<String>, Option<String>)> {
    let file = dir.join("tokenizer_config.json");
    if !file.is_file() {
        return Ok((None, None));
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", file.display()))?;
    let get = |key: &str| -> Option<String> {
        match v.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
            _ => None,
        }
    };
    Ok((get("bos_token"), get("eos_token")))
}

/// `bos_token_id` / `eos_token_id` from `config.json` (an integer or a list: the first).
fn config_ids(dir: &Path) -> Result<(Option<u32>, Option<u32>)> {
    let file = dir.join("config.json");
    if !file.is_file() {
        return Ok((None, None));
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", file.display()))?;
    let get = |key: &str| -> Option<u32> {
        match v.get(key)? {
            serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
            serde_json::Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
            _ => None,
        }
    };
    Ok((get("bos_token_id"), get("eos_token_id")))
}
