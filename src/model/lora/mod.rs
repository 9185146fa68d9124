//! LoRA (arXiv 2106.09685) as PEFT implements it: which tensors of a model train, and how a
//! linear layer adds its low-rank term.
//!
//! - `config`: the `lora:` config section and the settings it resolves to
//! - `targets`: which linear layers carry an adapter (`target_modules`, `all-linear`)
//! - `adapter`: one adapter (A, B, scaling), its PEFT initialisation and its merged delta
//! - `dropout`: seeded dropout masks that recomputation and resume reproduce
//! - `peft`: `adapter_config.json` + `adapter_model.safetensors` in and out
//! - `merge`: base + adapter -> a plain HF model (`cpt lora merge`)
//!
//! With LoRA the base weights are frozen tensors in the compute dtype (no f32 master, no
//! gradient, no optimiser state); the trainable variables are the adapters' A and B and the
//! `modules_to_save` (f32 masters), and they are all `CausalLm::named_parameters` returns.
pub mod adapter;
pub mod config;
pub mod dropout;
pub mod merge;
pub mod peft;
pub mod targets;

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

pub use config::{LoraConfig, LoraSettings, SavedModule, TargetModules};
pub use targets::{LinearKind, Site};

use crate::model::ModelConfig;
use crate::util::rng::{name_key, SplitMix64};
use adapter::LoraLinear;
use peft::{lora_tensor_name, PeftAdapter};

/// What a LoRA model is built from.
pub struct LoraSetup {
    pub settings: LoraSettings,
    /// Adapter (and saved-module) tensors to start from; fresh PEFT initialisation without.
    pub adapter: Option<PeftAdapter>,
    /// Seeds the initialisation of A and the dropout masks.
    pub seed: u64,
}

impl LoraSetup {
    pub fn dropout_seed(&self) -> u64 {
        SplitMix64::keyed(&[self.seed, name_key("lora-dropout")]).next_u64()
    }
}

/// The pieces `CausalLm` assembles a LoRA model from.
pub(crate) struct Parts {
    /// Every base weight by HF name (trainable saved modules share their `Var`'s storage).
    pub weights: HashMap<String, Tensor>,
    pub params: Vec<(String, Var)>,
    pub adapters: HashMap<Site, LoraLinear>,
    /// A head of its own for a tied config whose embeddings and head are now separate copies.
    pub head: Option<Tensor>,
}

/// Splits checked base tensors into frozen weights (compute dtype, on `device`) and trainable
/// f32 variables (adapters, saved modules), starting from the adapter's tensors if any.
pub(crate) fn build(config: &ModelConfig, mut base: HashMap<String, Tensor>, setup: &LoraSetup, device: &Device, dtype: DType) -> Result<Parts> {
    let s = &setup.settings;
    let origin = setup.adapter.as_ref().map(|a| a.dir.join(peft::ADAPTER_WEIGHTS).display().to_string()).unwrap_or_default();
    let from_adapter = |name: &str| setup.adapter.as_ref().and_then(|a| a.tensors.get(name));
    let vocab_shape = [config.vocab_size, config.hidden_size];
    for module in [SavedModule::EmbedTokens, SavedModule::LmHead] {
        if let Some(t) = from_adapter(module.weight_name()) {
            if t.dims() != vocab_shape {
                bail!("{origin}: `{}` has shape {:?}, the model's is {vocab_shape:?}", module.weight_name(), t.dims());
            }
        }
    }
    let var = |t: &Tensor| -> Result<Var> { Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?) };
    let frozen = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?.to_device(device)?) };

    let embed_name = SavedModule::EmbedTokens.weight_name();
    let head_name = SavedModule::LmHead.weight_name();
    let base_embed = base.remove(embed_name).context("embeddings checked present")?;
    let base_head = base.remove(head_name);
    let adapter_embed = from_adapter(embed_name);
    let adapter_head = from_adapter(head_name);
    let (save_embed, save_head) = (s.saves(SavedModule::EmbedTokens), s.saves(SavedModule::LmHead));

    let mut weights = HashMap::new();
    let mut first: Vec<(String, Var)> = Vec::new();
    let mut last: Vec<(String, Var)> = Vec::new();
    let mut head = None;
    let tied = config.tie_word_embeddings;
    if tied && (s.ensure_weight_tying || !(save_embed || save_head)) {
        // One matrix for embeddings and head, trained when either is saved.
        let src = adapter_embed.or(adapter_head).unwrap_or(&base_embed);
        if save_embed || save_head {
            let v = var(src)?;
            weights.insert(embed_name.to_string(), v.as_tensor().clone());
            first.push((embed_name.to_string(), v));
        } else {
            weights.insert(embed_name.to_string(), frozen(src)?);
        }
    } else {
        // Separate embeddings and head; for a tied config both start from the embeddings.
        let head_base = base_head.as_ref().unwrap_or(&base_embed);
        let embed_src = adapter_embed.unwrap_or(&base_embed);
        let head_src = adapter_head.unwrap_or(head_base);
        // A saved module becomes a trainable variable (listed in `into`), else a frozen tensor.
        let place = |src: &Tensor, save: bool, name: &str, into: &mut Vec<(String, Var)>| -> Result<Tensor> {
            if !save {
                return frozen(src);
            }
            let v = var(src)?;
            let t = v.as_tensor().clone();
            into.push((name.to_string(), v));
            Ok(t)
        };
        let embed_t = place(embed_src, save_embed, embed_name, &mut first)?;
        let head_t = place(head_src, save_head, head_name, &mut last)?;
        weights.insert(embed_name.to_string(), embed_t);
        if tied {
            head = Some(head_t);
        } else {
            weights.insert(head_name.to_string(), head_t);
        }
    }
    for (name, t) in base {
        let t = frozen(&t).with_context(|| format!("moving tensor `{name}` to {device:?}"))?;
        weights.insert(name, t);
    }

    let sites = targets::resolve(config, &s.targets)?;
    let scaling = s.scaling();
    let mut rng = SplitMix64::keyed(&[setup.seed, name_key("lora-init")]);
    let mut adapters = HashMap::new();
    let mut params = first;
    for site in sites {
        let (out_f, in_f) = site.kind.shape(config);
        let lora = match &setup.adapter {
            None => LoraLinear::init(site, in_f, out_f, s.rank, scaling, &mut rng, device)?,
            Some(adapter) => {
                let take = |b: bool, shape: [usize; 2]| -> Result<Var> {
                    let name = lora_tensor_name(site, b);
                    let t = adapter.tensors.get(&name).with_context(|| format!("{origin}: `{name}` is missing"))?;
                    if t.dims() != shape {
                        bail!("{origin}: `{name}` has shape {:?}, the model needs {shape:?}", t.dims());
                    }
                    var(t)
                };
                LoraLinear { site, a: take(false, [s.rank, in_f])?, b: take(true, [out_f, s.rank])?, scaling }
            }
        };
        params.push((lora_tensor_name(site, false), lora.a.clone()));
        params.push((lora_tensor_name(site, true), lora.b.clone()));
        adapters.insert(site, lora);
    }
    if let Some(adapter) = &setup.adapter {
        let extra: Vec<String> = adapter.sites().into_iter().filter(|s| !adapters.contains_key(s)).map(|s| s.path()).collect();
        if let Some(first) = extra.first() {
            bail!("{origin}: adapter for `{first}`, a layer this model does not have ({} such)", extra.len());
        }
    }
    params.extend(last);
    Ok(Parts { weights, params, adapters, head })
}
