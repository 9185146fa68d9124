//! PEFT's adapter layout: `adapter_config.json` and `adapter_model.safetensors`, tensors named
//! as `get_peft_model_state_dict` names them (`base_model.model.<module>.lora_A.weight`,
//! `base_model.model.<module>.weight` for modules_to_save), so that
//! `PeftModel.from_pretrained(base, dir)` loads what cpt writes and cpt loads what PEFT writes.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::{json, Map, Value};

use super::config::{LoraSettings, SavedModule, TargetModules, ALL_LINEAR};
use super::targets::{LinearKind, Site};
use crate::model::io;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT's `PeftModelForCausalLM` puts before the base model's own names.
const PREFIX: &str = "base_model.model.";

/// A PEFT adapter read from disk. Tensor names are the base model's (prefix removed):
/// `model.layers.0.self_attn.q_proj.lora_A.weight`, `model.embed_tokens.weight`.
pub struct PeftAdapter {
    pub dir: PathBuf,
    pub settings: LoraSettings,
    pub tensors: HashMap<String, Tensor>,
}

impl PeftAdapter {
    /// The adapted layers found in the file.
    pub fn sites(&self) -> Vec<Site> {
        let mut sites: Vec<Site> = self.tensors.keys().filter_map(|n| lora_tensor_site(n).map(|(s, _)| s)).collect();
        sites.sort();
        sites.dedup();
        sites
    }
}

/// Whether `dir` holds a PEFT adapter.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// The name of a module's A or B tensor.
pub fn lora_tensor_name(site: Site, b: bool) -> String {
    format!("{}.lora_{}.weight", site.path(), if b { "B" } else { "A" })
}

/// Whether a trainable tensor is an adapter's A or B (not a weight of the base model).
pub fn is_adapter_tensor(name: &str) -> bool {
    lora_tensor_site(name).is_some()
}

/// `model.layers.3.self_attn.q_proj.lora_A.weight` -> (site, is B).
fn lora_tensor_site(name: &str) -> Option<(Site, bool)> {
    let (module, b) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
        (m, false)
    } else {
        (name.strip_suffix(".lora_B.weight")?, true)
    };
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let kind = LinearKind::ALL.into_iter().find(|k| k.path(layer) == module)?;
    let _ = rest;
    Some((Site { layer, kind }, b))
}

/// Reads an adapter directory written by PEFT (or by cpt). Anything cpt cannot reproduce
/// exactly (DoRA, bias training, per-module ranks, LoRA on embeddings, ...) is an error naming
/// the field or tensor.
pub fn read(dir: &Path) -> Result<PeftAdapter> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    let obj = value.as_object().with_context(|| format!("{}: expected a JSON object", config_path.display()))?;
    let mut settings = parse_config(obj).with_context(|| format!("{}", config_path.display()))?;

    let weights_path = dir.join(ADAPTER_WEIGHTS);
    if !weights_path.is_file() {
        bail!("{} holds {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (only safetensors adapters are read)", dir.display());
    }
    let mut tensors = HashMap::new();
    for (name, t) in io::load_safetensors_file(&weights_path)? {
        let Some(short) = name.strip_prefix(PREFIX) else {
            bail!("{}: tensor `{name}` does not start with `{PREFIX}` (not a PEFT causal-LM adapter)", weights_path.display());
        };
        let known = lora_tensor_site(short).is_some() || SavedModule::parse_weight(short).is_some();
        if !known {
            bail!(
                "{}: tensor `{name}` is neither a LoRA matrix of a decoder projection nor embed_tokens/lm_head (LoRA on other modules, DoRA and bias training are not supported)",
                weights_path.display()
            );
        }
        tensors.insert(short.to_string(), t);
    }
    let adapter = PeftAdapter { dir: dir.to_path_buf(), settings: settings.clone(), tensors };
    let sites = adapter.sites();
    if sites.is_empty() {
        bail!("{}: no lora_A/lora_B tensors", weights_path.display());
    }
    for site in &sites {
        for b in [false, true] {
            let name = lora_tensor_name(*site, b);
            let t = adapter.tensors.get(&name).with_context(|| format!("{}: `{PREFIX}{name}` is missing", weights_path.display()))?;
            let r = if b { t.dims().get(1) } else { t.dims().first() }.copied();
            if t.rank() != 2 || r != Some(settings.rank) {
                bail!("{}: `{PREFIX}{name}` has shape {:?}, expected rank r = {} from {ADAPTER_CONFIG}", weights_path.display(), t.dims(), settings.rank);
            }
        }
    }
    // The tensors say exactly which layers are adapted (target_modules may be a regex).
    settings.targets = TargetModules::Names(sites.iter().map(|s| s.path()).collect());
    Ok(PeftAdapter { settings, ..adapter })
}

impl SavedModule {
    fn parse_weight(name: &str) -> Option<Self> {
        [Self::EmbedTokens, Self::LmHead].into_iter().find(|m| m.weight_name() == name)
    }
}

fn parse_config(obj: &Map<String, Value>) -> Result<LoraSettings> {
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    if let Some(t) = get("peft_type") {
        if t.as_str() != Some("LORA") {
            bail!("peft_type: {t}; only LORA adapters are supported");
        }
    }
    let flag = |k: &str| -> Result<bool> {
        match get(k) {
            None => Ok(false),
            Some(v) => v.as_bool().with_context(|| format!("{k}: expected true or false, got {v}")),
        }
    };
    for unsupported in ["use_dora", "lora_bias", "fan_in_fan_out", "use_qalora"] {
        if flag(unsupported)? {
            bail!("{unsupported}: true is not supported");
        }
    }
    if let Some(b) = get("bias") {
        if b.as_str() != Some("none") {
            bail!("bias: {b}; only \"none\" is supported");
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if get(pattern).and_then(|v| v.as_object()).is_some_and(|m| !m.is_empty()) {
            bail!("{pattern}: per-module ranks or alphas are not supported");
        }
    }
    for field in ["trainable_token_indices", "layer_replication", "target_parameters"] {
        if get(field).is_some() {
            bail!("{field}: not supported");
        }
    }
    let rank = get("r")
        .context("missing `r`")?
        .as_u64()
        .filter(|r| *r >= 1)
        .with_context(|| format!("r: expected a positive integer, got {}", obj["r"]))? as usize;
    let number = |k: &str, default: f64| -> Result<f64> {
        match get(k) {
            None => Ok(default),
            Some(v) => v.as_f64().with_context(|| format!("{k}: expected a number, got {v}")),
        }
    };
    let mut modules_to_save = Vec::new();
    if let Some(list) = get("modules_to_save") {
        let list = list.as_array().with_context(|| format!("modules_to_save: expected a list, got {list}"))?;
        for item in list {
            let name = item.as_str().with_context(|| format!("modules_to_save: expected names, got {item}"))?;
            let m = SavedModule::parse(name)
                .with_context(|| format!("modules_to_save: `{name}` is not supported (embed_tokens, lm_head)"))?;
            if !modules_to_save.contains(&m) {
                modules_to_save.push(m);
            }
        }
    }
    let settings = LoraSettings {
        rank,
        alpha: number("lora_alpha", 8.0)?,
        dropout: number("lora_dropout", 0.0)?,
        targets: TargetModules::AllLinear,
        rslora: flag("use_rslora")?,
        modules_to_save,
        ensure_weight_tying: flag("ensure_weight_tying")?,
    };
    let problems = settings.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(settings)
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (tensors named as the base
/// model's, in `dtype`) into `dir`. `base_model` is recorded as `base_model_name_or_path`.
pub fn write(dir: &Path, settings: &LoraSettings, tensors: &[(String, Tensor)], dtype: DType, base_model: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let named: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (format!("{PREFIX}{n}"), t.clone())).collect();
    io::save_safetensors_file(&dir.join(ADAPTER_WEIGHTS), &named, dtype)?;
    let targets = match &settings.targets {
        TargetModules::AllLinear => json!(ALL_LINEAR),
        TargetModules::Names(n) => json!(n),
    };
    let saved: Vec<&str> = settings.modules_to_save.iter().map(|m| m.name()).collect();
    // The fields PEFT's LoraConfig reads, with its defaults for what cpt does not use.
    let mut config: BTreeMap<&str, Value> = BTreeMap::from([
        ("peft_type", json!("LORA")),
        ("task_type", json!("CAUSAL_LM")),
        ("base_model_name_or_path", json!(base_model.map(|p| p.display().to_string()))),
        ("r", json!(settings.rank)),
        ("lora_alpha", json!(settings.alpha)),
        ("lora_dropout", json!(settings.dropout)),
        ("target_modules", targets),
        ("use_rslora", json!(settings.rslora)),
        ("modules_to_save", if saved.is_empty() { Value::Null } else { json!(saved) }),
        ("bias", json!("none")),
        ("fan_in_fan_out", json!(false)),
        ("inference_mode", json!(true)),
        ("init_lora_weights", json!(true)),
        ("use_dora", json!(false)),
        ("rank_pattern", json!({})),
        ("alpha_pattern", json!({})),
        ("layers_to_transform", Value::Null),
        ("layers_pattern", Value::Null),
        ("revision", Value::Null),
    ]);
    if settings.ensure_weight_tying {
        config.insert("ensure_weight_tying", json!(true));
    }
    let path = dir.join(ADAPTER_CONFIG);
    std::fs::write(&path, serde_json::to_string_pretty(&config)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
