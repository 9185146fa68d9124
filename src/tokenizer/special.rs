//! Which ids are BOS, EOS and PAD, decided the same way for every command (rule
//! [`SPECIAL_TOKEN_RULE`], documented in docs/data.md "Special tokens"). For each of the three,
//! the first of these that names it decides:
//!
//! 1. the config's override (`data.bos_token`, `data.eos_token`, `data.pad_token`);
//! 2. `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`: a string, `{content: ..}`,
//!    or `null`, which means "none" as it does for transformers' `AutoTokenizer`);
//! 3. `config.json` (`bos_token_id`, `eos_token_id`, `pad_token_id`: an id or a list of ids,
//!    of which the first).
//!
//! The EOS that ends documents is one id. The ids that end generation ([`SpecialTokens::stop_ids`])
//! are that EOS, then every id of `generation_config.json`'s `eos_token_id` (else
//! `config.json`'s), as transformers' `generate` stops on all of them.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the rule above. Token shards record it, so shards made under another rule
/// are rebuilt (rule 1 was the data pipeline's old order, where `config.json` could disagree
/// with evaluation's choice).
pub const SPECIAL_TOKEN_RULE: u32 = 2;

/// Token strings given in the config (`data.bos_token`, `data.eos_token`, `data.pad_token`);
/// each wins over the tokenizer's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialOverrides {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
}

/// One resolved special token: its id, its text, and which file or config field named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialToken {
    pub id: u32,
    pub token: String,
    pub from: String,
}

impl std::fmt::Display for SpecialToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}` (from {})", self.id, self.token, self.from)
    }
}

/// BOS, EOS and PAD of one tokenizer, and the ids that end generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<SpecialToken>,
    pub eos: Option<SpecialToken>,
    pub pad: Option<SpecialToken>,
    /// EOS first, then the model's other end-of-sequence ids, without repeats.
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Display for SpecialTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (what, t)) in [("BOS", &self.bos), ("EOS", &self.eos), ("PAD", &self.pad)].into_iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            match t {
                Some(t) => write!(f, "{sep}{what} {t}")?,
                None => write!(f, "{sep}{what} none")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Bos,
    Eos,
    Pad,
}

impl Kind {
    fn override_field(self) -> &'static str {
        match self {
            Kind::Bos => "data.bos_token",
            Kind::Eos => "data.eos_token",
            Kind::Pad => "data.pad_token",
        }
    }
    fn token_key(self) -> &'static str {
        match self {
            Kind::Bos => "bos_token",
            Kind::Eos => "eos_token",
            Kind::Pad => "pad_token",
        }
    }
    fn id_key(self) -> &'static str {
        match self {
            Kind::Bos => "bos_token_id",
            Kind::Eos => "eos_token_id",
            Kind::Pad => "pad_token_id",
        }
    }
}

/// The vocabulary the names and ids are checked against.
pub(super) struct Vocab<'a> {
    pub tokenizer: &'a tokenizers::Tokenizer,
    pub file: &'a Path,
}

impl Vocab<'_> {
    fn size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// A JSON file beside `tokenizer.json` (None when the directory has none).
struct SideFile {
    path: PathBuf,
    value: Value,
}

impl SideFile {
    fn read(dir: Option<&Path>, name: &str) -> Result<Option<Self>> {
        let Some(path) = dir.map(|d| d.join(name)) else { return Ok(None) };
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Ok(Some(SideFile { path, value }))
    }

    fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Resolves BOS, EOS and PAD for the tokenizer in `dir` (the directory of `tokenizer.json`;
/// None reads no side files).
pub(super) fn resolve(vocab: &Vocab<'_>, dir: Option<&Path>, overrides: &SpecialOverrides) -> Result<SpecialTokens> {
    let tokenizer_config = SideFile::read(dir, "tokenizer_config.json")?;
    let model_config = SideFile::read(dir, "config.json")?;
    let generation_config = SideFile::read(dir, "generation_config.json")?;
    let pick = |kind: Kind, given: &Option<String>| -> Result<Option<SpecialToken>> {
        if let Some(token) = given {
            return named(vocab, token, kind.override_field()).map(Some);
        }
        if let Some(file) = &tokenizer_config {
            if let Some(v) = file.value.get(kind.token_key()) {
                return from_tokenizer_config(vocab, file, kind.token_key(), v);
            }
        }
        if let Some(file) = &model_config {
            if let Some(v) = file.value.get(kind.id_key()) {
                let ids = ids_of(vocab, file, kind.id_key(), v)?;
                return Ok(ids.first().map(|&id| SpecialToken {
                    id,
                    token: vocab.tokenizer.id_to_token(id).unwrap_or_default(),
                    from: format!("{} `{}`", file.name(), kind.id_key()),
                }));
            }
        }
        Ok(None)
    };
    let bos = pick(Kind::Bos, &overrides.bos_token)?;
    let eos = pick(Kind::Eos, &overrides.eos_token)?;
    let pad = pick(Kind::Pad, &overrides.pad_token)?;

    // Generation stops on the model's own list: generation_config.json, else config.json.
    let mut stop_ids: Vec<u32> = eos.iter().map(|t| t.id).collect();
    let listed = [&generation_config, &model_config]
        .into_iter()
        .flatten()
        .find_map(|file| file.value.get("eos_token_id").map(|v| (file, v)));
    if let Some((file, v)) = listed {
        for id in ids_of(vocab, file, "eos_token_id", v)? {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
    }
    Ok(SpecialTokens { bos, eos, pad, stop_ids })
}

/// A token named by its text, which must be in the vocabulary.
fn named(vocab: &Vocab<'_>, token: &str, field: &str) -> Result<SpecialToken> {
    match vocab.tokenizer.token_to_id(token) {
        Some(id) => Ok(SpecialToken { id, token: token.to_string(), from: field.to_string() }),
        None => bail!("{field}: `{token}` is not in the vocabulary of {}", vocab.file.display()),
    }
}

/// `tokenizer_config.json`'s `bos_token` etc.: a string, `{"content": ..}`, or null (none).
fn from_tokenizer_config(vocab: &Vocab<'_>, file: &SideFile, key: &str, v: &Value) -> Result<Option<SpecialToken>> {
    let field = format!("{} `{key}`", file.name());
    let token = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.as_str(),
        Value::Object(o) => match o.get("content").and_then(Value::as_str) {
            Some(s) => s,
            None => bail!("{}: field `{key}` has no string `content`", file.path.display()),
        },
        other => bail!("{}: field `{key}`: expected a token string, got {other}", file.path.display()),
    };
    match vocab.tokenizer.token_to_id(token) {
        Some(id) => Ok(Some(SpecialToken { id, token: token.to_string(), from: field })),
        None => bail!("{}: field `{key}` names `{token}`, which is not in {}", file.path.display(), vocab.file.display()),
    }
}

/// `config.json`'s `eos_token_id` etc.: an id, a list of ids, or null; each inside the
/// vocabulary.
fn ids_of(vocab: &Vocab<'_>, file: &SideFile, key: &str, v: &Value) -> Result<Vec<u32>> {
    let items: Vec<&Value> = match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| {
            let id = item
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .with_context(|| format!("{}: field `{key}`: expected a token id or a list of ids, got {v}", file.path.display()))?;
            if id as usize >= vocab.size() {
                bail!(
                    "{}: field `{key}`: id {id} is outside the vocabulary of {} ({} ids)",
                    file.path.display(),
                    vocab.file.display(),
                    vocab.size()
                );
            }
            Ok(id)
        })
        .collect()
}
