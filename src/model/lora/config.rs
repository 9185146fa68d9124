//! The `lora:` section of a training config, and the settings it resolves to once the
//! adapter to continue (if any) is known. Defaults are PEFT's `LoraConfig` defaults for these
//! architectures (r 8, alpha 8, dropout 0, `q_proj` and `v_proj`).
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::targets::check_name;
use crate::model::ModelConfig;

/// Which linear layers get an adapter: `all-linear` or a list of module names (a name
/// matches a module whose full name equals it or ends with `.name`, as in PEFT).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    AllLinear,
    Names(Vec<String>),
}

pub const ALL_LINEAR: &str = "all-linear";

impl Default for TargetModules {
    fn default() -> Self {
        // PEFT's default target modules for Llama, Qwen2 and Mistral.
        Self::Names(vec!["q_proj".into(), "v_proj".into()])
    }
}

impl Serialize for TargetModules {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::AllLinear => s.serialize_str(ALL_LINEAR),
            Self::Names(names) => names.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetModules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "`{ALL_LINEAR}` or a list of module names such as [q_proj, v_proj]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<TargetModules, E> {
                if v == ALL_LINEAR {
                    Ok(TargetModules::AllLinear)
                } else {
                    Err(E::custom(format!("`{v}`: expected `{ALL_LINEAR}` or a list of module names such as [q_proj, v_proj]")))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<TargetModules, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                if names.len() == 1 && names[0] == ALL_LINEAR {
                    return Ok(TargetModules::AllLinear);
                }
                Ok(TargetModules::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A module trained in full beside the adapters (PEFT's `modules_to_save`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedModule {
    EmbedTokens,
    LmHead,
}

impl SavedModule {
    pub fn name(self) -> &'static str {
        match self {
            Self::EmbedTokens => "embed_tokens",
            Self::LmHead => "lm_head",
        }
    }

    /// The weight's Hugging Face name.
    pub fn weight_name(self) -> &'static str {
        match self {
            Self::EmbedTokens => "model.embed_tokens.weight",
            Self::LmHead => "lm_head.weight",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.rsplit('.').next().unwrap_or(name) {
            "embed_tokens" => Some(Self::EmbedTokens),
            "lm_head" => Some(Self::LmHead),
            _ => None,
        }
    }
}

/// The `lora:` section. Unset fields take PEFT's defaults, or, with `init_from`, the values
/// of the adapter being continued (a set field must then agree with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of the update B·A (PEFT `r`; default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// The update is scaled by alpha / r (PEFT `lora_alpha`; default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Dropout on the adapter's input during training (PEFT `lora_dropout`; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// `all-linear` or a list of module names (default [q_proj, v_proj]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<TargetModules>,
    /// Scale by alpha / sqrt(r) instead (rsLoRA; PEFT `use_rslora`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rslora: Option<bool>,
    /// Modules trained in full beside the adapters: `embed_tokens`, `lm_head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_to_save: Option<Vec<SavedModule>>,
    /// With tied embeddings, one trained copy serves as both embeddings and head (PEFT
    /// `ensure_weight_tying`); otherwise each saved module is its own copy, as in PEFT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_weight_tying: Option<bool>,
    /// A PEFT adapter directory (adapter_config.json, adapter_model.safetensors) to continue
    /// training from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

/// Settings of a LoRA model once everything is known.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: TargetModules,
    pub rslora: bool,
    pub modules_to_save: Vec<SavedModule>,
    pub ensure_weight_tying: bool,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 8.0,
            dropout: 0.0,
            targets: TargetModules::default(),
            rslora: false,
            modules_to_save: Vec::new(),
            ensure_weight_tying: false,
        }
    }
}

impl LoraSettings {
    /// The factor of the update: alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT's `scaling`).
    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub fn saves(&self, module: SavedModule) -> bool {
        self.modules_to_save.contains(&module)
    }

    /// Every problem with the values, as `lora.<field>: problem`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rank == 0 {
            out.push("lora.rank: must be >= 1".to_string());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            out.push("lora.alpha: must be > 0".to_string());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            out.push("lora.dropout: must be in [0, 1)".to_string());
        }
        if let TargetModules::Names(names) = &self.targets {
            if names.is_empty() {
                out.push(format!("lora.target_modules: empty; list module names or write {ALL_LINEAR}"));
            }
            for (i, name) in names.iter().enumerate() {
                if let Some(p) = check_name(name) {
                    out.push(format!("lora.target_modules[{i}]: {p}"));
                }
            }
        }
        for (i, m) in self.modules_to_save.iter().enumerate() {
            if self.modules_to_save[..i].contains(m) {
                out.push(format!("lora.modules_to_save[{i}]: `{}` is listed twice", m.name()));
            }
        }
        out
    }
}

impl LoraConfig {
    /// The settings for `model`: the adapter's (`base`, from `init_from` or a checkpoint) or
    /// PEFT's defaults, overridden by the fields set here. A set field that disagrees with an
    /// adapter's shape (rank, adapted layers, saved modules) is an error naming it.
    pub fn resolve(&self, base: Option<&LoraSettings>, model: &ModelConfig) -> Result<LoraSettings> {
        let mut s = base.cloned().unwrap_or_default();
        if let Some(adapter) = base {
            let mut conflicts = Vec::new();
            if let Some(r) = self.rank.filter(|r| *r != adapter.rank) {
                conflicts.push(format!("lora.rank: {r}, but the adapter has r {}", adapter.rank));
            }
            let differs = |t: &TargetModules| -> Result<bool> {
                Ok(super::targets::resolve(model, t)? != super::targets::resolve(model, &adapter.targets)?)
            };
            if let Some(t) = self.target_modules.as_ref().filter(|t| differs(t).unwrap_or(true)) {
                conflicts.push(format!(
                    "lora.target_modules: {}, but the adapter targets {}",
                    describe_targets(t),
                    describe_targets(&adapter.targets)
                ));
            }
            if let Some(m) = self.modules_to_save.as_ref().filter(|m| !same_set(m, &adapter.modules_to_save)) {
                conflicts.push(format!(
                    "lora.modules_to_save: {:?}, but the adapter saves {:?}",
                    m.iter().map(|x| x.name()).collect::<Vec<_>>(),
                    adapter.modules_to_save.iter().map(|x| x.name()).collect::<Vec<_>>()
                ));
            }
            if !conflicts.is_empty() {
                bail!("{}", conflicts.join("\n"));
            }
        }
        if let Some(r) = self.rank {
            s.rank = r;
        }
        if let Some(a) = self.alpha {
            s.alpha = a;
        }
        if let Some(d) = self.dropout {
            s.dropout = d;
        }
        if let (Some(t), None) = (&self.target_modules, base) {
            s.targets = t.clone();
        }
        if let Some(r) = self.rslora {
            s.rslora = r;
        }
        if let Some(m) = &self.modules_to_save {
            s.modules_to_save = m.clone();
        }
        if let Some(t) = self.ensure_weight_tying {
            s.ensure_weight_tying = t;
        }
        let problems = s.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        super::targets::resolve(model, &s.targets)?;
        Ok(s)
    }

    /// Problems visible without a model or adapter (config validation).
    pub fn problems(&self) -> Vec<String> {
        let probe = LoraSettings {
            rank: self.rank.unwrap_or(8),
            alpha: self.alpha.unwrap_or(8.0),
            dropout: self.dropout.unwrap_or(0.0),
            targets: self.target_modules.clone().unwrap_or_default(),
            modules_to_save: self.modules_to_save.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut out = probe.problems();
        if let Some(p) = &self.init_from {
            if p.as_os_str().is_empty() {
                out.push("lora.init_from: must not be empty".to_string());
            }
        }
        out
    }
}

fn same_set(a: &[SavedModule], b: &[SavedModule]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

fn describe_targets(t: &TargetModules) -> String {
    match t {
        TargetModules::AllLinear => ALL_LINEAR.to_string(),
        TargetModules::Names(n) => format!("[{}]", n.join(", ")),
    }
}
