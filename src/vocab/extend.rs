//! `cpt vocab extend`: learn new tokens, extend `tokenizer.json`, resize the checkpoint,
//! and write a complete Hugging Face model directory (atomically: a temporary sibling
//! directory renamed when complete).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::corpus;
use super::learn::{learn_tokens, LearnOptions, LearnedToken};
use super::resize::{pad_to_multiple, resize_checkpoint, InitMethod, ResizePlan};
use super::tokenizer_file::{Flavor, NewEntry, TokenizerFile};
use crate::model::config::ModelConfig;
use crate::tokenizer::Tokenizer;

/// Written next to the model: what was added, for reports and for the freeze warm-up.
pub const EXTENSION_FILE: &str = "vocab_extension.json";

#[derive(Debug, Clone)]
pub struct ExtendOptions {
    pub model: PathBuf,
    pub corpus: Vec<PathBuf>,
    pub add: usize,
    pub min_count: u64,
    pub init: InitMethod,
    pub pad_to_multiple: usize,
    pub out: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AddedToken {
    pub id: u32,
    #[serde(flatten)]
    pub learned: LearnedToken,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtendReport {
    pub flavor: Flavor,
    /// Ids the old tokenizer used (0..old_id_space); new rows start here.
    pub old_id_space: u32,
    pub new_id_space: u32,
    pub old_vocab_size: usize,
    pub new_vocab_size: usize,
    pub tied_embeddings: bool,
    pub init: InitMethod,
    /// Files of the source directory that could not be kept consistent and were left out.
    pub skipped_files: Vec<String>,
    pub tokens: Vec<AddedToken>,
}

/// Files that describe the old vocabulary in a form we do not rewrite: copying them would
/// leave a tokenizer that disagrees with `tokenizer.json`.
const STALE_TOKENIZER_FILES: &[&str] = &["tokenizer.model", "spiece.model"];

pub fn extend(opts: &ExtendOptions) -> Result<ExtendReport> {
    if opts.add == 0 {
        bail!("--add must be at least 1");
    }
    check_output_dir(&opts.out, &opts.model)?;
    let tokenizer_path = opts.model.join("tokenizer.json");
    let mut file = TokenizerFile::open(&tokenizer_path)?;
    let old_tokenizer = Tokenizer::from_dir(&opts.model)?;
    let config = ModelConfig::from_file(&opts.model.join("config.json"))?;
    let old_id_space = file.id_space();
    if config.vocab_size < old_id_space as usize {
        bail!(
            "model and tokenizer disagree: {} has vocab_size {} but {} uses ids up to {}",
            opts.model.join("config.json").display(),
            config.vocab_size,
            tokenizer_path.display(),
            old_id_space - 1
        );
    }

    let files = corpus::expand_paths(&opts.corpus)?;
    let docs = corpus::read_documents(&files)?;
    if docs.is_empty() {
        bail!("the corpus ({} files) holds no documents", files.len());
    }
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let learned = learn_tokens(
        &file,
        old_tokenizer.inner(),
        &texts,
        &LearnOptions { add: opts.add, min_count: opts.min_count },
    )?;
    let entries: Vec<NewEntry> = learned.iter().map(|t| t.entry.clone()).collect();
    let ids = file.append(&entries)?;
    file.to_tokenizer().context("the extended tokenizer does not load")?;

    let new_id_space = file.id_space();
    let new_vocab_size = pad_to_multiple(config.vocab_size.max(new_id_space as usize), opts.pad_to_multiple);
    let tokens: Vec<AddedToken> =
        ids.iter().zip(learned).map(|(id, learned)| AddedToken { id: *id, learned }).collect();
    let new_tokens: Vec<(u32, Vec<u32>)> = tokens.iter().map(|t| (t.id, t.learned.old_pieces.clone())).collect();

    let tmp = temporary_sibling(&opts.out)?;
    let result = (|| -> Result<ExtendReport> {
        let plan = ResizePlan {
            old_id_space: old_id_space as usize,
            new_rows: new_vocab_size,
            new_tokens: &new_tokens,
            init: opts.init,
        };
        let tied = resize_checkpoint(&opts.model, &tmp, &plan)?;
        file.write(&tmp.join("tokenizer.json"))?;
        let skipped_files = copy_side_files(&opts.model, &tmp, &file)?;
        check_special_tokens_kept(&old_tokenizer, &tmp)?;
        let report = ExtendReport {
            flavor: file.flavor,
            old_id_space,
            new_id_space,
            old_vocab_size: config.vocab_size,
            new_vocab_size,
            tied_embeddings: tied,
            init: opts.init,
            skipped_files,
            tokens,
        };
        let path = tmp.join(EXTENSION_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(report)
    })();
    match result {
        Ok(report) => {
            if opts.out.exists() {
                std::fs::remove_dir(&opts.out).with_context(|| format!("replacing empty {}", opts.out.display()))?;
            }
            std::fs::rename(&tmp, &opts.out)
                .with_context(|| format!("moving {} to {}", tmp.display(), opts.out.display()))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Appending tokens must leave BOS, EOS and PAD where they were: training and evaluation of
/// the extended model read them from the written directory.
fn check_special_tokens_kept(old: &Tokenizer, new_dir: &Path) -> Result<()> {
    let new = Tokenizer::from_dir(new_dir).context("the extended model's tokenizer does not load")?;
    let ids = |t: &Tokenizer| (t.bos_id(), t.eos_id(), t.pad_id());
    if ids(old) != ids(&new) {
        bail!(
            "the extended tokenizer resolves BOS/EOS/PAD to {:?}, the original to {:?}",
            ids(&new),
            ids(old)
        );
    }
    Ok(())
}

/// The output must be new (or an empty directory) and not the source.
fn check_output_dir(out: &Path, model: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (out.canonicalize(), model.canonicalize()) {
        if a == b {
            bail!("--out {} is the source model directory; write the extended model elsewhere", out.display());
        }
    }
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_none();
        if !empty {
            bail!("--out {} already exists and is not an empty directory", out.display());
        }
    }
    Ok(())
}

fn temporary_sibling(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().with_context(|| format!("--out {} has no directory name", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// Copies the other files of the model directory (tokenizer_config.json, generation
/// config, ...). GPT-2 style `vocab.json`/`merges.txt` are regenerated from the extended
/// tokenizer; SentencePiece `.model` files are left out (returned) since they cannot hold
/// the new tokens.
fn copy_side_files(src: &Path, dst: &Path, file: &TokenizerFile) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("listing {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let is_weights = name.ends_with(".safetensors") || name == crate::model::io::INDEX_FILE;
        if is_weights || name == "config.json" || name == "tokenizer.json" || name == EXTENSION_FILE {
            continue;
        }
        if STALE_TOKENIZER_FILES.contains(&name.as_str()) {
            skipped.push(name);
            continue;
        }
        match name.as_str() {
            "vocab.json" => write_vocab_json(file, &dst.join(&name))?,
            "merges.txt" => write_merges_txt(file, &dst.join(&name))?,
            _ => {
                std::fs::copy(&path, dst.join(&name))
                    .with_context(|| format!("copying {} to {}", path.display(), dst.display()))?;
            }
        }
    }
    Ok(skipped)
}

fn write_vocab_json(file: &TokenizerFile, path: &Path) -> Result<()> {
    let json: serde_json::Value = serde_json::from_str(&file.to_json_string()?)?;
    std::fs::write(path, serde_json::to_string(&json["model"]["vocab"])?)
        .with_context(|| format!("writing {}", path.display()))
}

fn write_merges_txt(file: &TokenizerFile, path: &Path) -> Result<()> {
    let json: serde_json::Value = serde_json::from_str(&file.to_json_string()?)?;
    let mut out = String::from("#version: 0.2\n");
    for (i, m) in json["model"]["merges"].as_array().into_iter().flatten().enumerate() {
        let line = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(parts) if parts.len() == 2 => {
                format!("{} {}", parts[0].as_str().unwrap_or(""), parts[1].as_str().unwrap_or(""))
            }
            other => bail!("model.merges[{i}] = {other} is not a merge"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// The old id space recorded by `cpt vocab extend` in a model directory, if any.
pub fn recorded_old_id_space(model_dir: &Path) -> Result<Option<usize>> {
    let path = model_dir.join(EXTENSION_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let n = value
        .get("old_id_space")
        .and_then(|v| v.as_u64())
        .with_context(|| format!("{}: field old_id_space missing", path.display()))?;
    Ok(Some(n as usize))
}
