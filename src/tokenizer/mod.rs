//! The one tokenizer of `cpt`: `tokenizer.json` through the `tokenizers` crate, with BOS, EOS
//! and PAD resolved by one rule ([`special`]). Data preparation, training, evaluation,
//! scoring, `cpt init` and vocabulary extension all load it here, so they agree on what
//! starts and ends a document.
pub mod special;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

pub use special::{SpecialOverrides, SpecialToken, SpecialTokens, SPECIAL_TOKEN_RULE};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` it was read from.
    path: PathBuf,
    special: SpecialTokens,
    /// sha256 of the `tokenizer.json` bytes.
    hash: String,
}

impl Tokenizer {
    /// `path` is a `tokenizer.json` or a directory holding one (a Hugging Face model
    /// directory). The side files (`tokenizer_config.json`, `config.json`,
    /// `generation_config.json`) are read from the same directory.
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
        let special = special::resolve(&special::Vocab { tokenizer: &inner, file: &file }, dir.as_deref(), overrides)?;
        let hash = format!("{:x}", Sha256::digest(&bytes));
        Ok(Tokenizer { inner, path: file, special, hash })
    }

    /// The tokenizer of a model directory, without config overrides.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::load(dir, &SpecialOverrides::default())
    }

    /// Token ids of `text` without the tokenizer's own special tokens; `add_bos` prepends BOS
    /// (when the tokenizer has one).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing with {}: {e}", self.path.display()))?;
        let bos = self.bos_id().filter(|_| add_bos);
        let mut ids = Vec::with_capacity(enc.len() + bos.is_some() as usize);
        ids.extend(bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| anyhow!("decoding with {}: {e}", self.path.display()))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos.as_ref().map(|t| t.id)
    }

    /// The EOS that ends a document.
    pub fn eos_id(&self) -> Option<u32> {
        self.special.eos.as_ref().map(|t| t.id)
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.special.pad.as_ref().map(|t| t.id)
    }

    /// Every id that ends generation: EOS first, then the model's other end-of-sequence ids.
    pub fn stop_ids(&self) -> &[u32] {
        &self.special.stop_ids
    }

    /// BOS, EOS and PAD with where each came from.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Number of ids including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// sha256 of `tokenizer.json` (the vocabulary and how text becomes ids; the special
    /// tokens are compared on their own).
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    /// The `tokenizer.json` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `tokenizers` tokenizer, for what this type does not wrap (its pre-tokenizer,
    /// encodings with offsets).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
