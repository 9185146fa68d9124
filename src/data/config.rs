//! The `data:` section of a training config: sources, groups, stages, sampler, validation
//! split, curriculum and online mixing. Unknown keys are rejected; `validate` names the
//! offending field's path (`data.stages[1].weights.zh_web`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::tokenizer::{SpecialOverrides, Tokenizer};

/// The `data:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `tokenizer.json` or a model directory holding one. Defaults to the training config's
    /// `model.path`.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Where `cpt prepare` writes token shards (default: `data-cache` beside the run
    /// directory; see `resolve_cache_dir`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Prepend BOS to every document (off by default: most base models' CPT recipes only
    /// separate documents with EOS).
    #[serde(default)]
    pub add_bos: bool,
    /// Append EOS after every document.
    #[serde(default = "default_true")]
    pub add_eos: bool,
    /// Override the BOS/EOS/PAD token strings found in the tokenizer's config files
    /// (`crate::tokenizer::special` has the order).
    #[serde(default)]
    pub bos_token: Option<String>,
    #[serde(default)]
    pub eos_token: Option<String>,
    #[serde(default)]
    pub pad_token: Option<String>,
    /// Drop exact-duplicate documents within a source.
    #[serde(default = "default_true")]
    pub dedup: bool,
    /// What to do with a malformed record: `skip` (count and report) or `fail`.
    #[serde(default)]
    pub on_malformed: MalformedPolicy,
    /// Cached shards made with another tokenizer: `rebuild` them or `refuse` with an error.
    #[serde(default)]
    pub on_tokenizer_change: TokenizerChangePolicy,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Training stages in order; none means one open-ended stage using each source's `weight`
    /// (or, when no source has one, the natural token proportions).
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
    #[serde(default)]
    pub curriculum: Option<CurriculumConfig>,
    #[serde(default)]
    pub mixing: Option<MixingConfig>,
}

fn default_true() -> bool {
    true
}

/// No sources (which `validate` rejects): the value a training config gets when it has no
/// `data:` section.
impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            tokenizer: None,
            cache_dir: None,
            add_bos: false,
            add_eos: true,
            bos_token: None,
            eos_token: None,
            pad_token: None,
            dedup: true,
            on_malformed: MalformedPolicy::default(),
            on_tokenizer_change: TokenizerChangePolicy::default(),
            sources: Vec::new(),
            stages: Vec::new(),
            sampler: SamplerConfig::default(),
            validation: ValidationConfig::default(),
            curriculum: None,
            mixing: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    #[default]
    Skip,
    Fail,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerChangePolicy {
    #[default]
    Rebuild,
    Refuse,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Jsonl,
    Text,
    Parquet,
}

/// How a plain-text file splits into documents.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// The whole file is one document.
    #[default]
    File,
    /// Documents are separated by one or more blank lines.
    BlankLine,
}

/// One corpus source: files of one kind, with the fields that carry text and metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    /// Files, directories (walked recursively) or glob patterns; one string or a list.
    #[serde(deserialize_with = "string_or_list")]
    pub paths: Vec<String>,
    /// Defaults from each file's extension (`.jsonl`/`.json`, `.txt`/`.md`, `.parquet`,
    /// each optionally with `.gz`/`.zst`).
    #[serde(default)]
    pub format: Option<SourceFormat>,
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Optional per-record metadata fields (JSONL and Parquet). A record without the field
    /// simply has no label; a field of the wrong type makes the record malformed.
    #[serde(default = "default_lang_field")]
    pub lang_field: String,
    #[serde(default = "default_topic_field")]
    pub topic_field: String,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default = "default_score_field")]
    pub score_field: String,
    /// A language label for every document of this source (wins over `lang_field`).
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub text_mode: TextMode,
    /// Group name (e.g. a language) for group-level stage weights.
    #[serde(default)]
    pub group: Option<String>,
    /// Weight used when the config has no `stages`.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Most epochs this source may be read (overrides `sampler.max_repeats`).
    #[serde(default)]
    pub max_repeats: Option<f64>,
}

impl SourceConfig {
    /// A source of `paths` with every other setting at its default (the `data:` section's
    /// defaults), for commands that read corpus files outside a training config.
    pub fn from_paths(name: &str, paths: Vec<String>) -> Self {
        SourceConfig {
            name: name.to_string(),
            paths,
            format: None,
            text_field: default_text_field(),
            lang_field: default_lang_field(),
            topic_field: default_topic_field(),
            id_field: default_id_field(),
            score_field: default_score_field(),
            language: None,
            text_mode: TextMode::default(),
            group: None,
            weight: None,
            max_repeats: None,
        }
    }
}

fn default_text_field() -> String {
    "text".into()
}
fn default_lang_field() -> String {
    "lang".into()
}
fn default_topic_field() -> String {
    "topic".into()
}
fn default_id_field() -> String {
    "id".into()
}
fn default_score_field() -> String {
    "score".into()
}

/// A training stage: a token budget and the mixture used inside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Token budget (`92.5B`, `10M`, `65536`); only the last stage may leave it out
    /// (open-ended).
    #[serde(default, deserialize_with = "token_count_opt")]
    pub tokens: Option<u64>,
    /// Group weights (e.g. `{zh: 0.2, en: 0.8}`); each group's share is split among its
    /// sources by `weights` (normalised inside the group; equal when the group has none).
    #[serde(default)]
    pub groups: Option<BTreeMap<String, f64>>,
    /// Source weights: absolute when `groups` is absent, within-group otherwise.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RepeatPolicy {
    /// A plan that needs more epochs of a source than allowed is an error before training.
    #[default]
    Error,
    /// ... or a printed warning, and the source is read beyond its cap.
    Warn,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Shuffle documents within each source (each epoch in a fresh order).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Most epochs any source may be read (`null`: unlimited).
    #[serde(default = "default_max_repeats")]
    pub max_repeats: Option<f64>,
    #[serde(default)]
    pub on_repeat_excess: RepeatPolicy,
}

fn default_max_repeats() -> Option<f64> {
    Some(4.0)
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { shuffle: true, max_repeats: default_max_repeats(), on_repeat_excess: RepeatPolicy::Error }
    }
}

/// Documents held out of training, per source, for per-source and per-topic validation loss.
/// The choice depends only on each document's content hash, so it is stable across seeds,
/// re-preparations and mixture changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Share of each source's documents held out.
    #[serde(default = "default_val_fraction")]
    pub fraction: f64,
    /// Cap on held-out documents per source.
    #[serde(default = "default_val_max_docs")]
    pub max_docs: usize,
}

fn default_val_fraction() -> f64 {
    0.01
}
fn default_val_max_docs() -> usize {
    1000
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { fraction: default_val_fraction(), max_docs: default_val_max_docs() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CurriculumOrder {
    /// Low score (perplexity) first, as in Llama-3-SynE.
    #[default]
    EasyToHard,
    HardToEasy,
}

/// Order each source's documents by score in buckets, shuffled within a bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CurriculumConfig {
    #[serde(default)]
    pub order: CurriculumOrder,
    #[serde(default = "default_buckets")]
    pub buckets: usize,
    /// Sources it applies to (default: every source whose documents carry scores).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

fn default_buckets() -> usize {
    10
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MixingRule {
    /// Llama-3-SynE's multiplicative rule on per-topic perplexity changes.
    Syne,
    /// DoReMi-style exponentiated excess loss.
    Doremi,
}

/// Online topic re-weighting inside each source from per-topic validation results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixingConfig {
    pub rule: MixingRule,
    /// SynE step size alpha.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// SynE prior weight w_i per topic (default 1).
    #[serde(default)]
    pub priors: BTreeMap<String, f64>,
    /// DoReMi step size eta.
    #[serde(default = "default_eta")]
    pub eta: f64,
    /// DoReMi smoothing c: weights <- (1 - c) * weights + c / k.
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
    /// DoReMi reference loss per topic (default: the first validation loss seen).
    #[serde(default)]
    pub reference_losses: BTreeMap<String, f64>,
    /// No topic weight falls below this share.
    #[serde(default = "default_min_weight")]
    pub min_weight: f64,
    /// Sources whose topics are re-weighted (default: every source with topic labels).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

fn default_alpha() -> f64 {
    0.5
}
fn default_eta() -> f64 {
    1.0
}
fn default_smoothing() -> f64 {
    1e-3
}
fn default_min_weight() -> f64 {
    1e-3
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom("expected a path string or a list of path strings")),
    }
}

fn token_count_opt<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }
    let raw = Option::<Raw>::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(Raw::Int(n)) => Ok(Some(n)),
        Some(Raw::Float(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        Some(Raw::Float(f)) => Err(serde::de::Error::custom(format!("token count {f} is not a whole number"))),
        Some(Raw::Text(s)) => parse_token_count(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Parses `92.5B`, `10M`, `64k`, `1_000_000` into a token count.
pub fn parse_token_count(text: &str) -> std::result::Result<u64, String> {
    let clean: String = text.trim().chars().filter(|c| *c != '_' && *c != ',').collect();
    let (number, scale) = match clean.chars().last() {
        Some('k' | 'K') => (&clean[..clean.len() - 1], 1e3),
        Some('m' | 'M') => (&clean[..clean.len() - 1], 1e6),
        Some('b' | 'B' | 'g' | 'G') => (&clean[..clean.len() - 1], 1e9),
        Some('t' | 'T') => (&clean[..clean.len() - 1], 1e12),
        _ => (clean.as_str(), 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a token count (examples: 65536, 10M, 92.5B)"))?;
    let tokens = value * scale;
    if !(tokens >= 0.0 && tokens.is_finite()) || (tokens - tokens.round()).abs() > 1e-6 {
        return Err(format!("`{text}` is not a whole, non-negative token count"));
    }
    Ok(tokens.round() as u64)
}

/// Deserialises YAML with the failing field's path in the error (`data.sources[0].format`).
pub(crate) fn from_yaml_with_path<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{what}: {inner}")
        } else {
            anyhow::anyhow!("{what}: field `{path}`: {inner}")
        }
    })
}

/// A config file read for its `model.path` and `data:` section only; every other top-level
/// key belongs to other parts of `cpt` and is ignored here.
#[derive(Debug, Clone, Deserialize)]
struct TrainingView {
    #[serde(default)]
    model: Option<ModelView>,
    #[serde(default)]
    run: Option<RunView>,
    #[serde(default)]
    batch: Option<BatchView>,
    data: DataConfig,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelView {
    #[serde(default)]
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct RunView {
    #[serde(default)]
    out_dir: Option<PathBuf>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct BatchView {
    #[serde(default)]
    seq_len: Option<usize>,
}

/// What `cpt prepare` / `cpt data inspect` read from `--config`.
#[derive(Debug, Clone, Default)]
pub struct LoadedDataConfig {
    pub data: DataConfig,
    /// `model.path` of a training config, when there is one.
    pub model_path: Option<PathBuf>,
    /// `run.out_dir`, `run.seed` and `batch.seq_len` of a training config.
    pub run_dir: Option<PathBuf>,
    pub seed: Option<u64>,
    pub seq_len: Option<usize>,
}

impl LoadedDataConfig {
    /// Tokenizer location: `data.tokenizer`, else `model.path`.
    pub fn tokenizer_path(&self) -> Option<&Path> {
        self.data.tokenizer.as_deref().or(self.model_path.as_deref())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data.resolve_cache_dir(self.run_dir.as_deref())
    }
}

impl DataConfig {
    /// `data.bos_token`, `data.eos_token` and `data.pad_token`.
    pub fn special_overrides(&self) -> SpecialOverrides {
        SpecialOverrides { bos_token: self.bos_token.clone(), eos_token: self.eos_token.clone(), pad_token: self.pad_token.clone() }
    }

    /// The tokenizer this section names: `data.tokenizer`, else `model_path` (a model
    /// directory or `tokenizer.json`), with the section's special-token overrides.
    pub fn open_tokenizer(&self, model_path: &Path) -> Result<Tokenizer> {
        Tokenizer::load(self.tokenizer.as_deref().unwrap_or(model_path), &self.special_overrides())
    }

    /// Reads a training YAML (its `data:` section) or a standalone data YAML.
    pub fn load(path: &Path) -> Result<LoadedDataConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::load_str(&text, &path.display().to_string())
    }

    /// As `load`, from text; `origin` names it in errors.
    pub fn load_str(text: &str, origin: &str) -> Result<LoadedDataConfig> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).with_context(|| format!("{origin}: not valid YAML"))?;
        let is_training = value.as_mapping().is_some_and(|m| m.contains_key("data"));
        let loaded = if is_training {
            let view: TrainingView = from_yaml_with_path(text, origin)?;
            LoadedDataConfig {
                data: view.data,
                model_path: view.model.and_then(|m| m.path),
                run_dir: view.run.as_ref().and_then(|r| r.out_dir.clone()),
                seed: view.run.as_ref().and_then(|r| r.seed),
                seq_len: view.batch.and_then(|b| b.seq_len),
            }
        } else {
            let data: DataConfig = from_yaml_with_path(text, origin).map_err(|e| {
                e.context("(a standalone data config; a training config has a top-level `data:` key)")
            })?;
            LoadedDataConfig { data, ..Default::default() }
        };
        loaded.data.validate().with_context(|| format!("invalid config {origin}"))?;
        Ok(loaded)
    }

    /// `cache_dir`, else `data-cache` beside the run directory (shared by the runs there),
    /// else `data-cache` in the working directory.
    pub fn resolve_cache_dir(&self, run_dir: Option<&Path>) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        match run_dir.and_then(Path::parent) {
            Some(parent) => parent.join("data-cache"),
            None => PathBuf::from("data-cache"),
        }
    }

    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    /// Group names in order of first appearance.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.sources {
            if let Some(g) = &s.group {
                if !out.contains(g) {
                    out.push(g.clone());
                }
            }
        }
        out
    }

    /// Checks everything that does not need the data itself; errors name the field path.
    pub fn validate(&self) -> Result<()> {
        if self.sources.is_empty() {
            bail!("data.sources: at least one source is required");
        }
        let names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("data.sources[{i}]");
            if s.name.is_empty()
                || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                bail!("{at}.name: `{}` must be non-empty and use only letters, digits, `_`, `-`, `.`", s.name);
            }
            if names[..i].contains(&s.name.as_str()) {
                bail!("{at}.name: `{}` is used by two sources", s.name);
            }
            if s.paths.is_empty() {
                bail!("{at}.paths: give at least one file, directory or glob");
            }
            if let Some(w) = s.weight {
                check_weight(w, &format!("{at}.weight"))?;
            }
            if let Some(r) = s.max_repeats {
                if !(r > 0.0 && r.is_finite()) {
                    bail!("{at}.max_repeats: must be a positive number, got {r}");
                }
            }
        }
        if let Some(r) = self.sampler.max_repeats {
            if !(r > 0.0 && r.is_finite()) {
                bail!("data.sampler.max_repeats: must be a positive number or null, got {r}");
            }
        }
        let groups = self.groups();
        for (i, st) in self.stages.iter().enumerate() {
            let at = format!("data.stages[{i}]");
            match st.tokens {
                None if i + 1 != self.stages.len() => {
                    bail!("{at}.tokens: only the last stage may leave its token budget open")
                }
                Some(0) => bail!("{at}.tokens: a stage needs a positive token budget"),
                _ => {}
            }
            if let Some(gw) = &st.groups {
                for (g, w) in gw {
                    if !groups.contains(g) {
                        bail!("{at}.groups.{g}: no source has group `{g}`{}", suggest(g, groups.iter().map(|s| s.as_str())));
                    }
                    check_weight(*w, &format!("{at}.groups.{g}"))?;
                }
            }
            if let Some(ws) = &st.weights {
                for (name, w) in ws {
                    if !names.contains(&name.as_str()) {
                        bail!("{at}.weights.{name}: no source named `{name}`{}", suggest(name, names.iter().copied()));
                    }
                    check_weight(*w, &format!("{at}.weights.{name}"))?;
                    if st.groups.is_some() && self.sources[self.source_index(name).unwrap_or(0)].group.is_none() {
                        bail!("{at}.weights.{name}: the stage weighs groups, but source `{name}` has no `group`");
                    }
                }
            }
            if st.groups.is_none() && st.weights.is_none() {
                bail!("{at}: give `weights` (per source) and/or `groups` (per group)");
            }
            // A stage must give some source a positive weight.
            let w = self.stage_weights_by_name(i, None).with_context(|| at.clone())?;
            if w.iter().all(|x| *x <= 0.0) {
                bail!("{at}: every source has weight 0");
            }
        }
        if self.stages.is_empty() {
            let with = self.sources.iter().filter(|s| s.weight.is_some()).count();
            if with != 0 && with != self.sources.len() {
                bail!("data.sources: give every source a `weight` or none (then the natural token proportions are used)");
            }
        }
        let v = &self.validation;
        if !(0.0..1.0).contains(&v.fraction) {
            bail!("data.validation.fraction: must be in [0, 1), got {}", v.fraction);
        }
        if let Some(c) = &self.curriculum {
            if c.buckets == 0 {
                bail!("data.curriculum.buckets: must be at least 1");
            }
            for (i, n) in c.sources.iter().flatten().enumerate() {
                if !names.contains(&n.as_str()) {
                    bail!("data.curriculum.sources[{i}]: no source named `{n}`{}", suggest(n, names.iter().copied()));
                }
            }
        }
        if let Some(m) = &self.mixing {
            for (i, n) in m.sources.iter().flatten().enumerate() {
                if !names.contains(&n.as_str()) {
                    bail!("data.mixing.sources[{i}]: no source named `{n}`{}", suggest(n, names.iter().copied()));
                }
            }
            if !(m.alpha >= 0.0 && m.alpha.is_finite()) {
                bail!("data.mixing.alpha: must be a non-negative number");
            }
            if !(m.eta >= 0.0 && m.eta.is_finite()) {
                bail!("data.mixing.eta: must be a non-negative number");
            }
            if !(0.0..=1.0).contains(&m.smoothing) {
                bail!("data.mixing.smoothing: must be in [0, 1]");
            }
            if !(0.0..1.0).contains(&m.min_weight) {
                bail!("data.mixing.min_weight: must be in [0, 1)");
            }
            for (t, w) in &m.priors {
                check_weight(*w, &format!("data.mixing.priors.{t}"))?;
            }
        }
        Ok(())
    }

    /// Normalised per-source weights of stage `stage`. `natural` gives each source's token
    /// count, used when there are no stages and no source weights.
    pub fn stage_weights_by_name(&self, stage: usize, natural: Option<&[u64]>) -> Result<Vec<f64>> {
        let n = self.sources.len();
        let mut w = vec![0.0; n];
        if self.stages.is_empty() {
            if self.sources.iter().all(|s| s.weight.is_some()) {
                for (i, s) in self.sources.iter().enumerate() {
                    w[i] = s.weight.unwrap_or(0.0);
                }
            } else if let Some(tokens) = natural {
                for (i, x) in w.iter_mut().enumerate() {
                    *x = tokens.get(i).copied().unwrap_or(0) as f64;
                }
            } else {
                w = vec![1.0; n];
            }
            return normalise(w, "data.sources[*].weight");
        }
        let st = self.stages.get(stage).with_context(|| format!("no stage {stage}"))?;
        match &st.groups {
            None => {
                let ws = st.weights.as_ref().context("weights missing")?;
                for (name, x) in ws {
                    if let Some(i) = self.source_index(name) {
                        w[i] = *x;
                    }
                }
            }
            Some(gw) => {
                for (group, gweight) in gw {
                    let members: Vec<usize> =
                        (0..n).filter(|&i| self.sources[i].group.as_deref() == Some(group.as_str())).collect();
                    let listed: Vec<f64> = members
                        .iter()
                        .map(|&i| st.weights.as_ref().and_then(|m| m.get(&self.sources[i].name)).copied())
                        .map(|x| x.unwrap_or(f64::NAN))
                        .collect();
                    let any_listed = listed.iter().any(|x| !x.is_nan());
                    let inner: Vec<f64> = listed
                        .iter()
                        .map(|x| if any_listed { if x.is_nan() { 0.0 } else { *x } } else { 1.0 })
                        .collect();
                    let total: f64 = inner.iter().sum();
                    if total <= 0.0 && *gweight > 0.0 {
                        bail!("group `{group}` has weight {gweight} but all its sources have weight 0");
                    }
                    for (k, &i) in members.iter().enumerate() {
                        if total > 0.0 {
                            w[i] = gweight * inner[k] / total;
                        }
                    }
                }
            }
        }
        normalise(w, "weights")
    }
}

fn normalise(mut w: Vec<f64>, what: &str) -> Result<Vec<f64>> {
    let total: f64 = w.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        bail!("{what}: weights must sum to a positive number");
    }
    for x in &mut w {
        *x /= total;
    }
    Ok(w)
}

fn check_weight(w: f64, at: &str) -> Result<()> {
    if !(w >= 0.0 && w.is_finite()) {
        bail!("{at}: a weight must be a non-negative number, got {w}");
    }
    Ok(())
}

/// ` (did you mean `x`?)` for the closest candidate, or nothing.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}
