//! Each prepared source carries a manifest: the tokenizer's hash, the settings that shape
//! its tokens, and the identity (path, size, modification time) of every input file.
//! Unchanged data is reused; changed inputs or settings rebuild it; data made with another
//! tokenizer is rebuilt or refused, as the config says.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{SourceConfig, TokenizerChangePolicy};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_VERSION: u32 = 1;

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
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub dedup: bool,
}

impl TokenSettings {
    pub fn new(source: &SourceConfig, add_bos: bool, add_eos: bool, bos_id: Option<u32>, eos_id: Option<u32>, dedup: bool) -> Self {
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
            bos_id,
            eos_id,
            dedup,
        }
    }
}

/// The snake_case name serde gives a unit enum variant.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceManifest {
    pub version: u32,
    pub source: String,
    pub tokenizer_hash: String,
    pub tokenizer_path: String,
    pub settings: TokenSettings,
    pub inputs: Vec<InputIdentity>,
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
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        match serde_json::from_str(&text) {
            Ok(m) => Ok(Some(m)),
            // An unreadable manifest is treated as no manifest: the source is rebuilt.
            Err(_) => Ok(None),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// Compares what is on disk (`self`) with what is wanted.
    pub fn decide(existing: Option<&SourceManifest>, wanted: &SourceManifest, policy: TokenizerChangePolicy, dir: &Path) -> Result<Decision> {
        let Some(old) = existing else { return Ok(Decision::Build) };
        if old.version != wanted.version {
            return Ok(Decision::Rebuild(format!("manifest version {} -> {}", old.version, wanted.version)));
        }
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

/// The directory holding a source's shards inside the cache.
pub fn source_dir(cache_dir: &Path, source: &str) -> PathBuf {
    cache_dir.join(source)
}
