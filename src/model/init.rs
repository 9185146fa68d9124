//! Fresh models: size presets, seeded random initialisation, and byte-level BPE tokenizers
//! trained with the tokenizers crate (so tests and proxies need nothing from outside).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::causal_lm::{CausalLm, SaveOptions};
use super::config::{Architecture, ModelConfig, RopeScaling};
use crate::tokenizer::Tokenizer;

/// Model sizes by name. Vocabulary size comes from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Vocabulary size for a BPE trained by `cpt init` when none is given.
    pub default_vocab_size: usize,
}

pub const PRESETS: &[Preset] = &[
    // Fast enough for CI: a forward+backward on 2x64 tokens takes milliseconds.
    Preset {
        name: "tiny",
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 2048,
        tie_word_embeddings: true,
        default_vocab_size: 1024,
    },
    // About 10M parameters with a 8k vocabulary: quick proxy runs on CPU.
    Preset {
        name: "small-10m",
        hidden_size: 256,
        intermediate_size: 704,
        num_hidden_layers: 6,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        max_position_embeddings: 2048,
        tie_word_embeddings: true,
        default_vocab_size: 8192,
    },
    // About 100M parameters with a 32k vocabulary (75M non-embedding).
    Preset {
        name: "small-100m",
        hidden_size: 768,
        intermediate_size: 2048,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        num_key_value_heads: 4,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        default_vocab_size: 32000,
    },
];

pub fn preset(name: &str) -> Result<Preset> {
    PRESETS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .with_context(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            format!("unknown preset `{name}` (available: {})", names.join(", "))
        })
}

/// Sizes for `cpt init`: a preset with optional explicit overrides.
#[derive(Debug, Clone, Default)]
pub struct SizeOverrides {
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rope_theta: Option<f64>,
    pub tie_word_embeddings: Option<bool>,
}

/// The config of a fresh model of `arch` with `preset` sizes (and overrides).
pub fn build_config(
    arch: Architecture,
    preset: &Preset,
    o: &SizeOverrides,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<ModelConfig> {
    let hidden_size = o.hidden_size.unwrap_or(preset.hidden_size);
    let heads = o.num_attention_heads.unwrap_or(preset.num_attention_heads);
    let kv = o
        .num_key_value_heads
        .unwrap_or(preset.num_key_value_heads.min(heads));
    if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
        bail!("--num-kv-heads ({kv}) must divide --num-heads ({heads})");
    }
    let head_dim = match o.head_dim {
        Some(d) => d,
        None if hidden_size.is_multiple_of(heads) => hidden_size / heads,
        None => bail!("--hidden-size ({hidden_size}) is not divisible by --num-heads ({heads}); give --head-dim"),
    };
    let max_pos = o
        .max_position_embeddings
        .unwrap_or(preset.max_position_embeddings);
    let config = ModelConfig {
        architecture: arch,
        vocab_size,
        hidden_size,
        intermediate_size: o.intermediate_size.unwrap_or(preset.intermediate_size),
        num_hidden_layers: o.num_hidden_layers.unwrap_or(preset.num_hidden_layers),
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        rms_norm_eps: 1e-5,
        rope_theta: o.rope_theta.unwrap_or(10000.0),
        rope_scaling: RopeScaling::None,
        max_position_embeddings: max_pos,
        tie_word_embeddings: o.tie_word_embeddings.unwrap_or(preset.tie_word_embeddings),
        // Mistral's window equals the context here, so attention is plain causal.
        sliding_window: (arch == Architecture::Mistral).then_some(max_pos),
        bos_token_id: bos,
        eos_token_ids: eos.into_iter().collect(),
        pad_token_id: None,
        initializer_range: 0.02,
    };
    if !head_dim.is_multiple_of(2) {
        bail!("head dim {head_dim} must be even for rotary embeddings");
    }
    config.validate()?;
    Ok(config)
}

/// Special tokens of tokenizers trained by `cpt init`.
pub const BOS_TOKEN: &str = "<|begin_of_text|>";
pub const EOS_TOKEN: &str = "<|end_of_text|>";
pub const PAD_TOKEN: &str = "<|pad|>";
/// BOS/EOS names looked for in a `tokenizer.json` given without its tokenizer_config.json.
const BARE_BOS_NAMES: &[&str] = &["<|begin_of_text|>", "<s>", "<|endoftext|>", "<bos>"];
const BARE_EOS_NAMES: &[&str] = &["<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>", "<|im_end|>"];

/// Trains a byte-level BPE tokenizer (GPT-2 / Llama-3 style) on text files. The result has
/// `BOS_TOKEN`, `EOS_TOKEN`, `PAD_TOKEN` as ids 0, 1, 2 and a post-processor that prepends
/// BOS (as Llama 3's does), so transformers' tokenizer adds it too.
pub fn train_bpe_tokenizer(files: &[PathBuf], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, TokenizerBuilder};

    if files.is_empty() {
        bail!("--train-tokenizer needs at least one text file");
    }
    for f in files {
        if !f.is_file() {
            bail!("tokenizer training file {} does not exist", f.display());
        }
    }
    let specials: Vec<AddedToken> = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let min_vocab = 256 + specials.len();
    if vocab_size < min_vocab {
        bail!("--vocab-size {vocab_size} is too small for a byte-level BPE (at least {min_vocab})");
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, TemplateProcessing, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::default()))
            .with_post_processor(Some(
                TemplateProcessing::builder()
                    .try_single(format!("{BOS_TOKEN}:0 $A:0"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .try_pair(format!("{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .special_tokens(vec![(BOS_TOKEN, 0)])
                    .build()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
            .build()
            .map_err(|e| anyhow::anyhow!("building tokenizer: {e}"))?;
    let paths: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    tokenizer
        .train_from_files(&mut trainer, paths)
        .map_err(|e| anyhow::anyhow!("training BPE on {:?}: {e}", files))?;
    Ok(tokenizer.into())
}

/// Writes `tokenizer_config.json` naming BOS/EOS/PAD for transformers.
pub fn write_tokenizer_config(
    dir: &Path,
    bos: &str,
    eos: &str,
    pad: Option<&str>,
    max_len: usize,
) -> Result<()> {
    let mut v = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(p) = pad {
        v["pad_token"] = serde_json::json!(p);
    }
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `generation_config.json` with the model's BOS/EOS.
pub fn write_generation_config(dir: &Path, config: &ModelConfig) -> Result<()> {
    let mut v = serde_json::json!({ "_from_model_config": true });
    if let Some(b) = config.bos_token_id {
        v["bos_token_id"] = serde_json::json!(b);
    }
    if let Some(&e) = config.eos_token_ids.first() {
        v["eos_token_id"] = serde_json::json!(e);
    }
    let path = dir.join("generation_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Where `cpt init` takes its tokenizer from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// A `tokenizer.json` file, or a directory holding one (its tokenizer_config.json and
    /// special_tokens_map.json are copied too).
    Existing(PathBuf),
    /// Train a byte-level BPE with this many ids on these text files.
    Train {
        files: Vec<PathBuf>,
        vocab_size: usize,
    },
}

/// Everything `cpt init` needs.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub arch: Architecture,
    pub preset: Preset,
    pub sizes: SizeOverrides,
    pub tokenizer: TokenizerSource,
    /// Model vocabulary when larger than the tokenizer's (padding rows, as many models have).
    pub vocab_size: Option<usize>,
    pub out: PathBuf,
    pub seed: u64,
    pub dtype: candle_core::DType,
    /// Allow writing into an existing non-empty directory.
    pub force: bool,
}

/// What `init_model_dir` wrote.
#[derive(Debug, Clone)]
pub struct InitSummary {
    pub config: ModelConfig,
    pub parameters: usize,
    pub non_embedding_parameters: usize,
}

/// Writes a randomly initialised model in HF layout: config.json, model.safetensors,
/// tokenizer.json, tokenizer_config.json, generation_config.json.
pub fn init_model_dir(spec: &InitSpec) -> Result<InitSummary> {
    // Check what can be checked before touching the output directory.
    build_config(spec.arch, &spec.preset, &spec.sizes, 1, None, None)?;
    match &spec.tokenizer {
        TokenizerSource::Existing(src) => {
            let file = if src.is_dir() {
                src.join("tokenizer.json")
            } else {
                src.clone()
            };
            if !file.is_file() {
                bail!("tokenizer file {} does not exist", file.display());
            }
        }
        TokenizerSource::Train { files, .. } => {
            if let Some(f) = files.iter().find(|f| !f.is_file()) {
                bail!("tokenizer training file {} does not exist", f.display());
            }
        }
    }
    let out = &spec.out;
    let existed = out.exists();
    if existed {
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("listing {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !spec.force {
            bail!(
                "output directory {} exists and is not empty (use --force to overwrite)",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let result = write_model_dir(spec);
    if result.is_err() && !existed {
        // Leave nothing half-written behind in a directory we created.
        let _ = std::fs::remove_dir_all(out);
    }
    result
}

fn write_model_dir(spec: &InitSpec) -> Result<InitSummary> {
    let out = &spec.out;
    let max_len = spec
        .sizes
        .max_position_embeddings
        .unwrap_or(spec.preset.max_position_embeddings);

    // Tokenizer first: it fixes the vocabulary and the special ids.
    let tok_path = out.join("tokenizer.json");
    match &spec.tokenizer {
        TokenizerSource::Existing(src) => {
            let (src_file, src_dir) = if src.is_dir() {
                (src.join("tokenizer.json"), Some(src.as_path()))
            } else {
                (src.clone(), None)
            };
            if !src_file.is_file() {
                bail!("tokenizer file {} does not exist", src_file.display());
            }
            std::fs::copy(&src_file, &tok_path).with_context(|| {
                format!("copying {} to {}", src_file.display(), tok_path.display())
            })?;
            if let Some(dir) = src_dir {
                for name in ["tokenizer_config.json", "special_tokens_map.json"] {
                    if dir.join(name).is_file() {
                        std::fs::copy(dir.join(name), out.join(name))
                            .with_context(|| format!("copying {}", dir.join(name).display()))?;
                    }
                }
            }
            if !out.join("tokenizer_config.json").exists() {
                // A bare tokenizer.json names no BOS/EOS: take the usual names it holds and
                // write them down, so every later command reads the same choice.
                let tok = Tokenizer::from_dir(out)?;
                let guess = |names: &[&'static str], what: &str| -> Result<&'static str> {
                    names.iter().find(|n| tok.token_to_id(n).is_some()).copied().with_context(|| {
                        format!(
                            "{}: no {what} token found (none of {names:?}; give a directory with tokenizer_config.json)",
                            src_file.display()
                        )
                    })
                };
                let bos = guess(BARE_BOS_NAMES, "BOS")?;
                let eos = guess(BARE_EOS_NAMES, "EOS")?;
                write_tokenizer_config(out, bos, eos, None, max_len)?;
            }
        }
        TokenizerSource::Train { files, vocab_size } => {
            let tok = train_bpe_tokenizer(files, *vocab_size)?;
            tok.save(&tok_path, false)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", tok_path.display()))?;
            write_tokenizer_config(out, BOS_TOKEN, EOS_TOKEN, Some(PAD_TOKEN), max_len)?;
        }
    }
    // The tokenizer as `cpt` will read it back (tokenizer_config.json decides BOS/EOS).
    let tokenizer = Tokenizer::from_dir(out)?;
    let tok_vocab = tokenizer.vocab_size();
    let vocab_size = match spec.vocab_size {
        Some(v) if v < tok_vocab => {
            bail!("--vocab-size {v} is smaller than the tokenizer's {tok_vocab} ids")
        }
        Some(v) => v,
        None => tok_vocab,
    };

    let config = build_config(
        spec.arch,
        &spec.preset,
        &spec.sizes,
        vocab_size,
        tokenizer.bos_id(),
        tokenizer.eos_id(),
    )?;
    let model = CausalLm::new_random(
        config.clone(),
        spec.seed,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )?;
    model.save_pretrained(
        out,
        &SaveOptions {
            dtype: spec.dtype,
            max_shard_bytes: 0,
            assets_from: None,
        },
    )?;
    write_generation_config(out, &config)?;
    let parameters = model.num_parameters();
    let embedding = vocab_size * config.hidden_size;
    Ok(InitSummary {
        config,
        parameters,
        non_embedding_parameters: parameters - embedding,
    })
}
