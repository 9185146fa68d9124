//! Hugging Face `config.json` -> [`ModelConfig`], in the classic form (`rope_theta`,
//! `rope_scaling`) and the newer transformers form (`rope_parameters`).
//!
//! Anything that would make our decoder compute something different from the
//! transformers implementation is rejected with an error naming the field.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// The decoder families we implement. They differ only in biases and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
}

impl Architecture {
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
        }
    }

    /// Parses `llama`, `qwen2`, `mistral` (the `model_type` names) or the HF class names.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" | "LlamaForCausalLM" => Ok(Architecture::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
            "mistral" | "MistralForCausalLM" => Ok(Architecture::Mistral),
            other => bail!(
                "unsupported architecture `{other}`: supported are LlamaForCausalLM (llama), \
                 Qwen2ForCausalLM (qwen2), MistralForCausalLM (mistral)"
            ),
        }
    }

    /// Qwen2 has biases on the q/k/v projections (not on o_proj).
    pub fn qkv_bias(self) -> bool {
        matches!(self, Architecture::Qwen2)
    }
}

/// RoPE frequency scaling. `Llama3` is the scheme of Llama 3.1/3.2.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (transformers `rope_type: "linear"`).
    Linear {
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent scaling (transformers `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Attention is limited to this many previous tokens when set (Mistral; Qwen2 with
    /// `use_sliding_window`). We do not implement the window: forward rejects sequences
    /// longer than it, the only case where it would change results.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    /// All end-of-sequence ids (`eos_token_id` may be a list in HF configs).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub initializer_range: f64,
}

/// Reads typed fields out of the JSON object, naming the field in every error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        match self.get(key) {
            None => bail!("missing required field `{key}`"),
            Some(v) => as_usize(v).with_context(|| format!("field `{key}`")),
        }
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| as_usize(v).with_context(|| format!("field `{key}`")))
            .transpose()
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .with_context(|| format!("field `{key}`: expected a number, got {v}"))
            })
            .transpose()
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .with_context(|| format!("field `{key}`: expected true/false, got {v}"))
            })
            .transpose()
    }

    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .with_context(|| format!("field `{key}`: expected a string, got {v}"))
            })
            .transpose()
    }
}

fn as_usize(v: &Value) -> Result<usize> {
    v.as_u64()
        .map(|x| x as usize)
        .with_context(|| format!("expected a non-negative integer, got {v}"))
}

fn token_ids(v: Option<&Value>, key: &str) -> Result<Vec<u32>> {
    let parse_one = |x: &Value| -> Result<u32> {
        x.as_u64()
            .filter(|&id| id <= u32::MAX as u64)
            .map(|id| id as u32)
            .with_context(|| format!("field `{key}`: expected a token id, got {x}"))
    };
    match v {
        None => Ok(vec![]),
        Some(Value::Array(items)) => items.iter().map(parse_one).collect(),
        Some(x) => Ok(vec![parse_one(x)?]),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        Self::from_json(&value)
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .context("config.json: expected a JSON object")?;
        let f = Fields { obj };

        let architecture = match (f.get("architectures"), f.str_opt("model_type")?) {
            (Some(list), _) => {
                let names = list
                    .as_array()
                    .context("field `architectures`: expected a list")?;
                if names.len() != 1 {
                    bail!("field `architectures`: expected exactly one entry, got {list}");
                }
                let name = names[0]
                    .as_str()
                    .context("field `architectures`: expected strings")?;
                Architecture::parse(name).context("field `architectures`")?
            }
            (None, Some(model_type)) => {
                Architecture::parse(model_type).context("field `model_type`")?
            }
            (None, None) => bail!("missing field `architectures` (and no `model_type`)"),
        };

        let hidden_act = f.str_opt("hidden_act")?.unwrap_or("silu");
        if hidden_act != "silu" {
            bail!("field `hidden_act`: `{hidden_act}` is not supported (only `silu`)");
        }
        if architecture == Architecture::Llama {
            for key in ["attention_bias", "mlp_bias"] {
                if f.bool_opt(key)? == Some(true) {
                    bail!("field `{key}`: biases in Llama attention/MLP are not supported");
                }
            }
        }
        if let Some(p) = f.f64_opt("attention_dropout")? {
            if p != 0.0 {
                bail!("field `attention_dropout`: {p} is not supported (only 0.0)");
            }
        }

        let hidden_size = f.usize_req("hidden_size")?;
        let num_attention_heads = f.usize_req("num_attention_heads")?;
        if num_attention_heads == 0 {
            bail!("field `num_attention_heads` must be positive");
        }
        let num_key_value_heads = f
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
            bail!(
                "field `num_key_value_heads`: {num_key_value_heads} must divide \
                 num_attention_heads ({num_attention_heads})"
            );
        }
        let head_dim = match f.usize_opt("head_dim")? {
            Some(d) => d,
            None => {
                if !hidden_size.is_multiple_of(num_attention_heads) {
                    bail!(
                        "field `hidden_size`: {hidden_size} is not divisible by num_attention_heads \
                         ({num_attention_heads}) and no `head_dim` is given"
                    );
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            bail!("field `head_dim`: {head_dim} must be even and positive for rotary embeddings");
        }

        // `rope_parameters` (transformers >= 5) holds rope_theta and the scaling together.
        let (rope_theta, rope_scaling) = match f.get("rope_parameters") {
            Some(params) => {
                let p = params
                    .as_object()
                    .context("field `rope_parameters`: expected an object")?;
                let theta = Fields { obj: p }
                    .f64_opt("rope_theta")
                    .context("field `rope_parameters`")?
                    .or(f.f64_opt("rope_theta")?)
                    .unwrap_or(10000.0);
                (
                    theta,
                    parse_rope_scaling(p).context("field `rope_parameters`")?,
                )
            }
            None => {
                let theta = f.f64_opt("rope_theta")?.unwrap_or(10000.0);
                let scaling = match f.get("rope_scaling") {
                    None => RopeScaling::None,
                    Some(s) => parse_rope_scaling(
                        s.as_object()
                            .context("field `rope_scaling`: expected an object")?,
                    )
                    .context("field `rope_scaling`")?,
                };
                (theta, scaling)
            }
        };

        // Qwen2 carries a `sliding_window` value that only applies with `use_sliding_window`
        // (transformers 5 spells the same thing as "sliding_attention" in `layer_types`).
        let any_sliding_layer = match f.get("layer_types") {
            None => false,
            Some(v) => v
                .as_array()
                .context("field `layer_types`: expected a list")?
                .iter()
                .any(|t| t.as_str() == Some("sliding_attention")),
        };
        let sliding_window = match architecture {
            Architecture::Qwen2
                if f.bool_opt("use_sliding_window")? != Some(true) && !any_sliding_layer =>
            {
                None
            }
            // LlamaForCausalLM has no sliding window; transformers ignores the key there.
            Architecture::Llama => None,
            _ => f.usize_opt("sliding_window")?,
        };

        let config = ModelConfig {
            architecture,
            vocab_size: f.usize_req("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize_req("intermediate_size")?,
            num_hidden_layers: f.usize_req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: f.usize_opt("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            sliding_window,
            bos_token_id: token_ids(f.get("bos_token_id"), "bos_token_id")?
                .first()
                .copied(),
            eos_token_ids: token_ids(f.get("eos_token_id"), "eos_token_id")?,
            pad_token_id: token_ids(f.get("pad_token_id"), "pad_token_id")?
                .first()
                .copied(),
            initializer_range: f.f64_opt("initializer_range")?.unwrap_or(0.02),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks sizes that the JSON reader cannot check field by field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
        ] {
            if v == 0 {
                bail!("field `{name}` must be positive");
            }
        }
        if self.rms_norm_eps <= 0.0 || self.rope_theta <= 0.0 {
            bail!("fields `rms_norm_eps` and `rope_theta` must be positive");
        }
        Ok(())
    }

    /// Query heads per key/value head (grouped-query attention).
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Errors when a sequence of `seq_len` tokens would need the sliding window.
    pub fn check_seq_len(&self, seq_len: usize) -> Result<()> {
        if let Some(w) = self.sliding_window {
            // Token i sees j iff i - j < w; within seq_len tokens the largest gap is
            // seq_len - 1, so full causal attention is exact while seq_len <= w.
            if seq_len > w {
                bail!(
                    "sequence length {seq_len} exceeds the model's `sliding_window` ({w}); \
                     sliding-window attention is not implemented"
                );
            }
        }
        Ok(())
    }

    /// The config as a transformers `config.json` (classic form, which transformers 4 and 5
    /// both read). `dtype` is the stored weights' dtype name, e.g. "bfloat16".
    pub fn to_hf_json(&self) -> Value {
        self.to_hf_json_with_dtype("float32")
    }

    pub fn to_hf_json_with_dtype(&self, dtype: &str) -> Value {
        let a = self.architecture;
        let mut v = json!({
            "architectures": [a.hf_class()],
            "model_type": a.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "use_cache": true,
            "torch_dtype": dtype,
        });
        let m = v.as_object_mut().expect("json! object");
        match a {
            Architecture::Llama => {
                m.insert("attention_bias".into(), json!(false));
                m.insert("mlp_bias".into(), json!(false));
            }
            Architecture::Qwen2 => {
                m.insert(
                    "use_sliding_window".into(),
                    json!(self.sliding_window.is_some()),
                );
                m.insert("sliding_window".into(), json!(self.sliding_window));
            }
            Architecture::Mistral => {
                m.insert("sliding_window".into(), json!(self.sliding_window));
            }
        }
        m.insert(
            "rope_scaling".into(),
            match &self.rope_scaling {
                RopeScaling::None => Value::Null,
                RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                } => json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings,
                }),
            },
        );
        if let Some(id) = self.bos_token_id {
            m.insert("bos_token_id".into(), json!(id));
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                m.insert("eos_token_id".into(), json!(one));
            }
            many => {
                m.insert("eos_token_id".into(), json!(many));
            }
        }
        if let Some(id) = self.pad_token_id {
            m.insert("pad_token_id".into(), json!(id));
        }
        v
    }
}

fn parse_rope_scaling(obj: &Map<String, Value>) -> Result<RopeScaling> {
    let f = Fields { obj };
    // transformers accepts the legacy key `type` as well as `rope_type`.
    let kind = f
        .str_opt("rope_type")?
        .or(f.str_opt("type")?)
        .unwrap_or("default");
    let factor = || -> Result<f64> {
        let v = f.f64_opt("factor")?.context("missing field `factor`")?;
        if v <= 0.0 {
            bail!("field `factor` must be positive, got {v}");
        }
        Ok(v)
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
        "llama3" => {
            let low = f
                .f64_opt("low_freq_factor")?
                .context("missing field `low_freq_factor`")?;
            let high = f
                .f64_opt("high_freq_factor")?
                .context("missing field `high_freq_factor`")?;
            if high <= low {
                bail!("field `high_freq_factor` ({high}) must exceed `low_freq_factor` ({low})");
            }
            Ok(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: f
                    .usize_req("original_max_position_embeddings")?,
            })
        }
        other => bail!(
            "field `rope_type`: `{other}` is not supported (supported: default, linear, llama3)"
        ),
    }
}
