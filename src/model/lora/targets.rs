//! Which linear layers carry an adapter: the seven projections of every decoder layer, named
//! as in Hugging Face (`model.layers.3.self_attn.q_proj`), matched against `target_modules`
//! by PEFT's rule for a list of names (the full name, or a suffix after a dot).
use anyhow::{bail, Result};

use super::config::TargetModules;
use crate::model::ModelConfig;

/// A linear projection inside a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    pub const ALL: [LinearKind; 7] = [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// The module's own name (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    fn block(self) -> &'static str {
        match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            Self::Gate | Self::Up | Self::Down => "mlp",
        }
    }

    /// The full module name in layer `layer` (`model.layers.3.self_attn.q_proj`).
    pub fn path(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}.{}", self.block(), self.name())
    }

    /// `(out_features, in_features)` of the weight.
    pub fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        match self {
            Self::Q => (q, h),
            Self::K | Self::V => (kv, h),
            Self::O => (h, q),
            Self::Gate | Self::Up => (i, h),
            Self::Down => (h, i),
        }
    }

    /// A stable index (dropout streams are keyed by it).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).expect("listed")
    }
}

/// An adapted linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub layer: usize,
    pub kind: LinearKind,
}

impl Site {
    pub fn path(self) -> String {
        self.kind.path(self.layer)
    }

    /// A number unique to the site within a model (dropout key).
    pub fn key(self) -> u64 {
        (self.layer * LinearKind::ALL.len() + self.kind.index()) as u64
    }
}

/// Whether `target` names `path` by PEFT's rule for a list of names.
fn matches(target: &str, path: &str) -> bool {
    path == target || path.ends_with(&format!(".{target}"))
}

/// The adapted layers of a model, in layer order then q, k, v, o, gate, up, down. Every
/// listed name must match at least one layer (error naming `lora.target_modules`).
pub fn resolve(config: &ModelConfig, targets: &TargetModules) -> Result<Vec<Site>> {
    let all: Vec<Site> = (0..config.num_hidden_layers)
        .flat_map(|layer| LinearKind::ALL.into_iter().map(move |kind| Site { layer, kind }))
        .collect();
    let names = match targets {
        TargetModules::AllLinear => return Ok(all),
        TargetModules::Names(names) => names,
    };
    for name in names {
        if !all.iter().any(|s| matches(name, &s.path())) {
            bail!(
                "lora.target_modules: `{name}` matches no linear layer of this model ({} layers; names look like `{}` and match by their last parts)",
                config.num_hidden_layers,
                LinearKind::Q.path(0)
            );
        }
    }
    Ok(all.into_iter().filter(|s| names.iter().any(|n| matches(n, &s.path()))).collect())
}

/// The static check of one target name (before a model is known): its last part must be a
/// linear layer's name. Returns the problem, if any.
pub fn check_name(name: &str) -> Option<String> {
    let last = name.rsplit('.').next().unwrap_or(name);
    if LinearKind::ALL.iter().any(|k| k.name() == last) {
        return None;
    }
    if matches!(last, "embed_tokens" | "lm_head") {
        return Some(format!(
            "`{name}`: LoRA on the embeddings or the head is not supported; list `{last}` in lora.modules_to_save to train it in full"
        ));
    }
    let known: Vec<String> = LinearKind::ALL.iter().map(|k| k.name().to_string()).collect();
    let hint = crate::config::load::nearest(last, &known).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
    Some(format!("`{name}` is not a linear layer of these models (expected one of {}, or all-linear){hint}", known.join(", ")))
}
