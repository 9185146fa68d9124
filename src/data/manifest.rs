//! Each prepared source carries a manifest: the tokenizer's hash, the special tokens in its
//! shards and the rule that chose them, the settings that shape its tokens, and the identity
//! (path, size, modification time) of every input file. Unchanged data is reused; changed
//! inputs or settings rebuild it; data made with another tokenizer or other special tokens is
//! rebuilt or refused, as the config says; a manifest of an older format is rebuilt.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{SourceConfig, TokenizerChangePolicy};
use crate::tokenizer::{SpecialToken, Tokenizer, SPECIAL_TOKEN_RULE};

pub const MANIFEST_FILE: &str = "manifest.json";
/// 2: the special tokens and their rule are recorded (`special_tokens`); version 1 shards
/// may hold BOS/EOS chosen by the old rule.
pub const MANIFEST_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputIdentity {
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (0 where the filesystem has none).
    pub modified_ns: u128,
}

impl InputIdentity {
    pub fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(InputIdentity { path: path.display().to_string(), size: meta.len(), modified_ns })
    }
}

/// The settings that decide a source's tokens (not its weights: those are the sampler's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSettings {
    pub format: Option<String>,
    pub text_field: String,
    pub lang_field: String,
    pub topic_field: String,
    pub id_field: String,
    pub score_field: String,
    pub language: Option<String>,
    pub text_mode: String,
    pub add_bos: bool,
    pub add_eos: bool,
    pub dedup: bool,
}

impl TokenSettings {
    pub fn new(source: &SourceConfig, add_bos: bool, add_eos: bool, dedup: bool) -> Self {
        TokenSettings {
            format: source.format.map(|f| name(&f)),
            text_field: source.text_field.clone(),
            lang_field: source.lang_field.clone(),
            topic_field: source.topic_field.clone(),
            id_field: source.id_field.clone(),
            score_field: source.score_field.clone(),
            language: source.language.clone(),
            text_mode: name(&source.text_mode),
            add_bos,
            add_eos,
            dedup,
        }
    }
}

/// The snake_case name serde gives a unit enum variant.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The special tokens written into a source's shards (BOS only with `add_bos`, EOS only
/// with `add_eos`) and the version of the rule that chose them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpecialTokens {
    pub rule: u32,
    pub bos: Option<SpecialToken>,
    pub eos: Option<SpecialToken>,
}

impl ShardSpecialTokens {
    pub fn new(tokenizer: &Tokenizer, add_bos: bool, add_eos: bool) -> Self {
        let special = tokenizer.special_tokens();
        ShardSpecialTokens {
            rule: SPECIAL_TOKEN_RULE,
            bos: special.bos.clone().filter(|_| add_bos),
            eos: special.eos.clone().filter(|_| add_eos),
        }
    }

    /// Whether shards made with `self` hold the same special tokens as shards made with
    /// `other` (where each was named does not matter, the ids and the rule do).
    pub fn same_as(&self, other: &ShardSpecialTokens) -> bool {
        let ids = |s: &ShardSpecialTokens| (s.rule, s.bos.as_ref().map(|t| t.id), s.eos.as_ref().map(|t| t.id));
        ids(self) == ids(other)
    }

    /// What differs from `old` to `self`, in words.
    pub fn changes_from(&self, old: &ShardSpecialTokens) -> String {
        let show = |t: &Option<SpecialToken>| t.as_ref().map_or("none".to_string(), |t| t.to_string());
        let mut parts = Vec::new();
        if old.rule != self.rule {
            parts.push(format!("special-token rule {} -> {}", old.rule, self.rule));
        }
        for (what, a, b) in [("BOS", &old.bos, &self.bos), ("EOS", &old.eos, &self.eos)] {
            if a.as_ref().map(|t| t.id) != b.as_ref().map(|t| t.id) {
                parts.push(format!("{what} {} -> {}", show(a), show(b)));
            }
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceManifest {
    pub version: u32,
    pub source: String,
    /// sha256 of `tokenizer.json`.
    pub tokenizer_hash: String,
    pub tokenizer_path: String,
    pub special_tokens: ShardSpecialTokens,
    pub settings: TokenSettings,
    pub inputs: Vec<InputIdentity>,
}

/// A manifest as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredManifest {
    Current(SourceManifest),
    /// Written by an older `cpt` (the reason says which format and what it means).
    Outdated(String),
    /// Not a manifest `cpt` can read (the parse error).
    Unreadable(String),
}

/// What `cpt prepare` does with one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "reason", rename_all = "snake_case")]
pub enum Decision {
    Reuse,
    Build,
    Rebuild(String),
}

impl SourceManifest {
    pub fn read(dir: &Path) -> Result<Option<StoredManifest>> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return Ok(Some(StoredManifest::Unreadable(e.to_string()))),
        };
        let version = value.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if version != MANIFEST_VERSION as u64 {
            return Ok(Some(StoredManifest::Outdated(outdated_reason(version, &value))));
        }
        Ok(Some(match serde_json::from_value(value) {
            Ok(m) => StoredManifest::Current(m),
            Err(e) => StoredManifest::Unreadable(e.to_string()),
        }))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// Compares what is on disk (`self`) with what is wanted.
    pub fn decide(existing: Option<&StoredManifest>, wanted: &SourceManifest, policy: TokenizerChangePolicy, dir: &Path) -> Result<Decision> {
        let old = match existing {
            None => return Ok(Decision::Build),
            Some(StoredManifest::Outdated(why)) => return Ok(Decision::Rebuild(why.clone())),
            Some(StoredManifest::Unreadable(e)) => return Ok(Decision::Rebuild(format!("its manifest is unreadable ({e})"))),
            Some(StoredManifest::Current(m)) => m,
        };
        if old.tokenizer_hash != wanted.tokenizer_hash {
            if policy == TokenizerChangePolicy::Refuse {
                bail!(
                    "{}: source `{}` was prepared with another tokenizer (hash {}.., from {}); the configured tokenizer {} has hash {}..; \
                     set `data.on_tokenizer_change: rebuild` or use another `data.cache_dir`",
                    dir.display(),
                    wanted.source,
                    &old.tokenizer_hash[..old.tokenizer_hash.len().min(12)],
                    old.tokenizer_path,
                    wanted.tokenizer_path,
                    &wanted.tokenizer_hash[..wanted.tokenizer_hash.len().min(12)]
                );
            }
            return Ok(Decision::Rebuild("the tokenizer changed".into()));
        }
        if old.settings != wanted.settings {
            return Ok(Decision::Rebuild("its token settings changed".into()));
        }
        // Same settings, other ids: the tokenizer's files (or the overrides) now name others.
        if !old.special_tokens.same_as(&wanted.special_tokens) {
            let change = wanted.special_tokens.changes_from(&old.special_tokens);
            if policy == TokenizerChangePolicy::Refuse {
                bail!(
                    "{}: source `{}` was prepared with other special tokens ({change}); \
                     set `data.on_tokenizer_change: rebuild` or use another `data.cache_dir`",
                    dir.display(),
                    wanted.source
                );
            }
            return Ok(Decision::Rebuild(format!("its special tokens changed: {change}")));
        }
        if old.inputs != wanted.inputs {
            let old_paths: Vec<&str> = old.inputs.iter().map(|i| i.path.as_str()).collect();
            let changed = wanted
                .inputs
                .iter()
                .find(|i| !old.inputs.contains(i))
                .map(|i| {
                    if old_paths.contains(&i.path.as_str()) {
                        format!("{} changed", i.path)
                    } else {
                        format!("{} is new", i.path)
                    }
                })
                .or_else(|| {
                    old.inputs.iter().find(|i| !wanted.inputs.contains(i)).map(|i| format!("{} is gone", i.path))
                })
                .unwrap_or_else(|| "the input files changed order".into());
            return Ok(Decision::Rebuild(changed));
        }
        Ok(Decision::Reuse)
    }
}

/// Why a manifest of format `version` is rebuilt. Version 1 recorded the BOS/EOS ids in its
/// settings; they are named when present so the message shows what the old rule chose.
fn outdated_reason(version: u64, value: &serde_json::Value) -> String {
    let old_id = |key: &str| value.pointer(&format!("/settings/{key}")).and_then(serde_json::Value::as_u64);
    let ids = match (old_id("bos_id"), old_id("eos_id")) {
        (None, None) => String::new(),
        (bos, eos) => {
            let show = |id: Option<u64>| id.map_or("none".into(), |i| i.to_string());
            format!(" (its shards hold BOS {}, EOS {})", show(bos), show(eos))
        }
    };
    format!(
        "made by an older cpt (manifest version {version}){ids}, before special tokens followed rule {SPECIAL_TOKEN_RULE} \
         (config override, then tokenizer_config.json, then config.json); rebuilding so that training and evaluation \
         agree on BOS/EOS"
    )
}

/// The directory holding a source's shards inside the cache.
pub fn source_dir(cache_dir: &Path, source: &str) -> PathBuf {
    cache_dir.join(source)
}
