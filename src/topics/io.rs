//! A trained classifier on disk, one directory written atomically:
//! - `model.safetensors`: the input and output matrices (f32) and the vocabulary (UTF-8
//!   words joined by `\n`, which no word contains), with the format version, the label set
//!   and the settings in its metadata: everything prediction needs;
//! - `classifier.json`: the same label set and settings, the training options and data,
//!   and the held-out scores, for people and scripts;
//! - `evaluation.json`: the full held-out evaluation.
//!
//! Loading checks the format version, that the file is whole, that the shapes agree with
//! the settings, and that `classifier.json` lists the label set the weights were trained on.
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use super::features::Featurizer;
use super::hashing::NgramSettings;
use super::metrics::Evaluation;
use super::model::{Classifier, ModelSettings};
use super::train::SgdOptions;
use super::vocab::Vocabulary;
use crate::util::atomic::AtomicDir;

pub const MODEL_FILE: &str = "model.safetensors";
pub const INFO_FILE: &str = "classifier.json";
pub const EVALUATION_FILE: &str = "evaluation.json";
/// Bumped whenever the features or the file layout change meaning.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "cpt-topics";

/// How the classifier was trained, and how well it did on held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub data: Vec<String>,
    pub text_field: String,
    pub label_field: String,
    pub examples: u64,
    pub held_out: u64,
    /// Where the held-out examples came from: `fraction 0.1 (seed 1)` or a file.
    pub held_out_from: String,
    pub words: u64,
    pub sgd: SgdOptions,
    pub last_epoch_loss: f64,
    pub seconds: f64,
}

/// `classifier.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub format_version: u32,
    pub labels: Vec<String>,
    pub settings: ModelSettings,
    pub vocabulary: usize,
    pub training: Option<TrainingInfo>,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
}

struct Bytes<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl View for &Bytes<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data[..])
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn f32_bytes(values: &[f32], rows: usize, cols: usize) -> Bytes<'_> {
    // safetensors stores little-endian values: on such a machine the f32s are their own
    // bytes, and a matrix of hundreds of megabytes is written without a copy.
    #[cfg(target_endian = "little")]
    // SAFETY: any f32 is 4 initialised bytes and u8 has no alignment requirement; the
    // byte slice borrows `values` for its lifetime.
    let data = Cow::Borrowed(unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) });
    #[cfg(not(target_endian = "little"))]
    let data = Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    Bytes { dtype: Dtype::F32, shape: vec![rows, cols], data }
}

/// Writes `dir` (replacing an existing classifier there only once the new one is complete).
pub fn save(dir: &Path, clf: &Classifier, settings: &ModelSettings, training: Option<TrainingInfo>, evaluation: Option<&Evaluation>) -> Result<PathBuf> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // Only an earlier classifier is replaced; any other folder is left alone.
    let occupied = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied && !dir.join(INFO_FILE).is_file() {
        bail!("{}: exists and is not a `cpt topics` classifier; choose another --out", dir.display());
    }
    let out = AtomicDir::create(dir)?;
    let words = clf.featurizer.vocabulary().words();
    let vocab = words.join("\n").into_bytes();
    let tensors = [
        ("input", f32_bytes(&clf.input, clf.featurizer.rows(), clf.dim)),
        ("output", f32_bytes(&clf.output, clf.labels.len(), clf.dim)),
        ("vocabulary", Bytes { dtype: Dtype::U8, shape: vec![vocab.len()], data: Cow::Owned(vocab) }),
    ];
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("labels".to_string(), serde_json::to_string(&clf.labels)?),
        ("settings".to_string(), serde_json::to_string(settings)?),
        ("vocabulary_words".to_string(), words.len().to_string()),
    ]);
    let model_path = out.path().join(MODEL_FILE);
    safetensors::serialize_to_file(tensors.iter().map(|(n, b)| (*n, b)), Some(metadata), &model_path)
        .with_context(|| format!("writing {}", model_path.display()))?;
    let info = ClassifierInfo {
        format_version: FORMAT_VERSION,
        labels: clf.labels.clone(),
        settings: settings.clone(),
        vocabulary: words.len(),
        training,
        accuracy: evaluation.map(|e| e.accuracy),
        macro_f1: evaluation.map(|e| e.macro_f1),
    };
    std::fs::write(out.path().join(INFO_FILE), serde_json::to_string_pretty(&info)? + "\n")?;
    if let Some(e) = evaluation {
        std::fs::write(out.path().join(EVALUATION_FILE), serde_json::to_string_pretty(e)? + "\n")?;
    }
    out.commit()
}

/// Reads a classifier directory written by `save`.
pub fn load(dir: &Path) -> Result<(Classifier, ClassifierInfo)> {
    let info_path = dir.join(INFO_FILE);
    let text = std::fs::read_to_string(&info_path)
        .with_context(|| format!("reading {} (is {} a `cpt topics train` output?)", info_path.display(), dir.display()))?;
    let version: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON (truncated?)", info_path.display()))?;
    check_version(&info_path, version.get("format_version").and_then(|v| v.as_u64()))?;
    let info: ClassifierInfo =
        serde_json::from_value(version).with_context(|| format!("{}: not a classifier description", info_path.display()))?;

    let model_path = dir.join(MODEL_FILE);
    let file = std::fs::File::open(&model_path).with_context(|| format!("opening {}", model_path.display()))?;
    // SAFETY: read-only map, dropped before returning; the file is not expected to change.
    let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", model_path.display()))?;
    let damaged = || format!("{}: not a complete safetensors file (truncated or damaged)", model_path.display());
    let (_, header) = SafeTensors::read_metadata(&map).with_context(damaged)?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT_NAME) {
        bail!("{}: not a `cpt topics` model (no `format: {FORMAT_NAME}` in its metadata)", model_path.display());
    }
    check_version(&model_path, meta.get("format_version").and_then(|v| v.parse().ok()))?;
    let st = SafeTensors::deserialize(&map).with_context(damaged)?;
    let field = |key: &str| meta.get(key).with_context(|| format!("{}: metadata has no `{key}`", model_path.display()));
    let labels: Vec<String> = serde_json::from_str(field("labels")?).with_context(|| format!("{}: bad `labels` metadata", model_path.display()))?;
    let settings: ModelSettings =
        serde_json::from_str(field("settings")?).with_context(|| format!("{}: bad `settings` metadata", model_path.display()))?;
    if labels != info.labels {
        bail!(
            "{} lists the topics {:?}, but {} was trained on {:?}: the two files come from different trainings (train again, or restore the original {})",
            info_path.display(), info.labels, model_path.display(), labels, INFO_FILE
        );
    }
    if settings != info.settings {
        bail!("{}: its settings differ from those {} was trained with", info_path.display(), model_path.display());
    }
    let vocab_bytes = st.tensor("vocabulary").with_context(damaged)?;
    let vocab_text = std::str::from_utf8(vocab_bytes.data()).with_context(|| format!("{}: vocabulary is not UTF-8", model_path.display()))?;
    let words: Vec<String> = if vocab_text.is_empty() { Vec::new() } else { vocab_text.split('\n').map(str::to_string).collect() };
    let ngrams = NgramSettings { word_ngrams: settings.word_ngrams, minn: settings.minn, maxn: settings.maxn, bucket: settings.bucket };
    let featurizer = Featurizer::new(Vocabulary::from_words(words), ngrams);
    let dim = settings.dim;
    let matrix = |name: &str, rows: usize| -> Result<Vec<f32>> {
        let view = st.tensor(name).with_context(damaged)?;
        if view.dtype() != Dtype::F32 || view.shape() != [rows, dim] {
            bail!("{}: tensor `{name}` is {:?} {:?}, expected F32 [{rows}, {dim}]", model_path.display(), view.dtype(), view.shape());
        }
        Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let input = matrix("input", featurizer.rows())?;
    let output = matrix("output", labels.len())?;
    Ok((Classifier { featurizer, labels, dim, input, output }, info))
}

fn check_version(path: &Path, found: Option<u64>) -> Result<()> {
    match found {
        Some(v) if v == FORMAT_VERSION as u64 => Ok(()),
        Some(v) => bail!("{}: classifier format {v}, but this cpt reads format {FORMAT_VERSION}; train the classifier again with this cpt", path.display()),
        None => bail!("{}: no format version: not a `cpt topics` classifier", path.display()),
    }
}
