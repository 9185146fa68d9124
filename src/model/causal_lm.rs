//! The decoder: embeddings -> N x (RMSNorm, GQA attention with RoPE, RMSNorm, SwiGLU MLP)
//! -> RMSNorm -> lm_head, with f32 master parameters and a selectable compute dtype.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use super::config::ModelConfig;
use crate::util::rng::SplitMix64;
use super::io;
use super::kv_cache::KvCache;
use super::layer::{decoder_layer, layer_with_attention, LayerContext, LayerOps, LayerParams, LayerShape, LayerWeights};
use super::lora::{self, adapter::LoraLinear, dropout::DropoutStream, LinearKind, LoraSettings, LoraSetup, SavedModule, Site};
use super::ops;
use super::packing::Packing;
use super::params::{init_tensor, parameter_specs};
use crate::kernels::dispatch::{self, AttentionMask, Rope};
use crate::kernels::recompute::{recompute, recompute_block, Block, GradSink};
use crate::kernels::KernelSettings;

/// Files copied next to the weights by `save_pretrained` when present in the source dir.
pub const ASSET_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Where and how `save_pretrained` writes.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Stored dtype of the weights (f32, bf16 or f16).
    pub dtype: DType,
    /// Shard the weights above this many bytes (0: one file).
    pub max_shard_bytes: u64,
    /// Directory to copy tokenizer files and generation_config.json from; defaults to the
    /// directory the model was loaded from.
    pub assets_from: Option<PathBuf>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            max_shard_bytes: 5_000_000_000,
            assets_from: None,
        }
    }
}

pub struct CausalLm {
    config: ModelConfig,
    /// The trainable f32 master variables by name, in a stable order: every weight for full
    /// training; the adapters and saved modules with LoRA.
    params: Vec<(String, Var)>,
    embed: Tensor,
    layers: Vec<LayerParams>,
    final_norm: Tensor,
    /// None when tied to the embeddings.
    lm_head: Option<Tensor>,
    /// Adapters, their settings and dropout (None: full training).
    lora: Option<LoraState>,
    compute_dtype: DType,
    device: Device,
    inv_freq: Vec<f32>,
    kernels: KernelSettings,
    source_dir: Option<PathBuf>,
    /// Set when the decoder layers' weights live elsewhere (ZeRO-3): `layers` is then empty
    /// and `params` holds only the other parameters.
    layer_source: Option<Arc<dyn LayerWeights>>,
}

/// The LoRA side of a model: settings, and the dropout stream of training forwards.
struct LoraState {
    settings: LoraSettings,
    dropout: DropoutStream,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("architecture", &self.config.architecture)
            .field("parameters", &self.num_parameters())
            .field("trainable", &self.num_trainable())
            .field("compute_dtype", &self.compute_dtype)
            .field("device", &self.device)
            .field("kernels", &self.kernels.describe())
            .finish()
    }
}

/// What a forward keeps for the backward.
#[derive(Clone, Copy)]
enum Graph<'a> {
    /// Every layer's activations (a plain differentiable forward).
    Keep,
    /// Only each layer's input; layers run again in the backward, parameter gradients go to
    /// the sink.
    Recompute(&'a GradSink),
    /// Nothing (evaluation): layer outputs are detached.
    Discard,
}

/// Checkpoint entries that are buffers, not parameters, and are safe to ignore.
fn is_ignorable_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

impl CausalLm {
    /// Loads `config.json` and the safetensors weights of an HF model directory.
    pub fn from_pretrained(dir: &Path, device: &Device, compute_dtype: DType) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tensors = io::load_safetensors_dir(dir)
            .with_context(|| format!("loading weights from {}", dir.display()))?;
        let mut model = Self::from_tensors(config, tensors, device, compute_dtype)
            .with_context(|| format!("checkpoint {}", dir.display()))?;
        model.source_dir = Some(dir.to_path_buf());
        Ok(model)
    }

    /// Builds the model from named tensors (any float dtype, any device), every weight an
    /// f32 master `Var` (full training). Every parameter must be present with its shape;
    /// anything else is an error naming the tensor.
    pub fn from_tensors(
        config: ModelConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute_dtype: DType,
    ) -> Result<Self> {
        let tensors = checked_tensors(&config, tensors)?;
        let mut params = Vec::new();
        for (name, _, _) in parameter_specs(&config) {
            let t = &tensors[&name];
            let t = t
                .to_dtype(DType::F32)?
                .to_device(device)
                .with_context(|| format!("moving tensor `{name}` to {device:?}"))?;
            params.push((name, Var::from_tensor(&t)?));
        }
        let weights = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        Self::assemble(config, weights, params, HashMap::new(), None, device, compute_dtype)
    }

    /// Loads the base model of `dir` for LoRA training: the adapters (and saved modules) of
    /// `setup` are the only f32 trainable variables; every other weight stays frozen in the
    /// compute dtype, with no master copy and no gradient.
    pub fn from_pretrained_lora(dir: &Path, device: &Device, compute_dtype: DType, setup: &LoraSetup) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tensors = io::load_safetensors_dir(dir)
            .with_context(|| format!("loading weights from {}", dir.display()))?;
        let tensors = checked_tensors(&config, tensors).with_context(|| format!("checkpoint {}", dir.display()))?;
        let parts = lora::build(&config, tensors, setup, device, compute_dtype)?;
        let mut model = Self::assemble(config, parts.weights, parts.params, parts.adapters, parts.head, device, compute_dtype)?;
        model.lora = Some(LoraState { settings: setup.settings.clone(), dropout: DropoutStream::new(setup.settings.dropout, setup.dropout_seed()) });
        model.source_dir = Some(dir.to_path_buf());
        Ok(model)
    }

    /// The model of `base` with the PEFT adapter in `adapter` applied (unmerged), or the
    /// plain model without one: how evaluation, scoring and generation load `--adapter`.
    pub fn from_pretrained_with_adapter(base: &Path, adapter: Option<&Path>, device: &Device, compute_dtype: DType) -> Result<Self> {
        let Some(adapter_dir) = adapter else { return Self::from_pretrained(base, device, compute_dtype) };
        let adapter = lora::peft::read(adapter_dir).with_context(|| format!("loading the adapter {}", adapter_dir.display()))?;
        let setup = LoraSetup { settings: adapter.settings.clone(), adapter: Some(adapter), seed: 0 };
        Self::from_pretrained_lora(base, device, compute_dtype, &setup)
            .with_context(|| format!("applying the adapter {} to {}", adapter_dir.display(), base.display()))
    }

    /// A randomly initialised model (transformers' `_init_weights`: normal(0,
    /// initializer_range) weights, unit norms, zero biases), reproducible from `seed`.
    pub fn new_random(
        config: ModelConfig,
        seed: u64,
        device: &Device,
        compute_dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let mut tensors = HashMap::new();
        for (name, shape, kind) in parameter_specs(&config) {
            tensors.insert(name, init_tensor(&shape, kind, config.initializer_range, &mut rng, device)?);
        }
        Self::from_tensors(config, tensors, device, compute_dtype)
    }

    /// `weights`: every base weight by HF name (trainable ones share their `Var`'s storage);
    /// `head`: an lm_head of its own for a tied config (a saved copy that is no longer tied).
    fn assemble(
        config: ModelConfig,
        weights: HashMap<String, Tensor>,
        params: Vec<(String, Var)>,
        mut adapters: HashMap<Site, LoraLinear>,
        head: Option<Tensor>,
        device: &Device,
        compute_dtype: DType,
    ) -> Result<Self> {
        if !matches!(compute_dtype, DType::F32 | DType::BF16 | DType::F16) {
            bail!("compute dtype {compute_dtype:?} is not supported (use f32, bf16 or f16)");
        }
        let get = |n: &str| -> Tensor { weights.get(n).expect("weight from specs").clone() };
        let opt = |n: &str| -> Option<Tensor> { weights.get(n).cloned() };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let prefix = format!("model.layers.{l}.");
                let trainable = params.iter().filter(|(n, _)| n.starts_with(&prefix)).map(|(_, v)| v.clone()).collect();
                LayerParams::from_lookup(l, opt, &mut adapters, trainable).expect("layer parameters from specs")
            })
            .collect();
        if let Some(site) = adapters.keys().next() {
            bail!("adapter for {} matches no layer of the model", site.path());
        }
        let embed = get("model.embed_tokens.weight");
        let final_norm = get("model.norm.weight");
        let lm_head = head.or_else(|| opt("lm_head.weight"));
        let inv_freq = ops::rope_inv_freq(&config);
        Ok(Self {
            config,
            embed,
            layers,
            final_norm,
            lm_head,
            params,
            lora: None,
            compute_dtype,
            device: device.clone(),
            inv_freq,
            kernels: KernelSettings::default(),
            source_dir: None,
            layer_source: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The directory the model was loaded from, if any.
    pub fn source_dir(&self) -> Option<&Path> {
        self.source_dir.as_deref()
    }

    /// The trainable f32 master Vars by name, in a stable order: what the optimiser sees.
    /// Full training: every weight under its HF name. LoRA: the adapters
    /// (`<module>.lora_A.weight`, `<module>.lora_B.weight`) and saved modules.
    pub fn named_parameters(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Parameters of the base model (adapters not counted), decoder layers held elsewhere
    /// (ZeRO-3) included.
    pub fn num_parameters(&self) -> usize {
        parameter_specs(&self.config).iter().map(|(_, shape, _)| shape.iter().product::<usize>()).sum()
    }

    /// Elements the optimiser updates (over all ranks).
    pub fn num_trainable(&self) -> usize {
        match self.layer_source {
            // Sharded layers: every weight trains (LoRA does not shard its frozen base).
            Some(_) => self.num_parameters(),
            None => self.params.iter().map(|(_, v)| v.elem_count()).sum(),
        }
    }

    /// Hands the decoder layers' weights to `source` (ZeRO-3): the model drops its own
    /// copies, gathers each layer's weights from `source` when it runs (in training, inside
    /// the per-layer recomputation: once for the forward, again for the backward) and hands
    /// the layer's gradients back to it. `named_parameters` then lists the other parameters
    /// only. Needs recomputation for training, and a model without adapters.
    pub fn release_layers(&mut self, source: Arc<dyn LayerWeights>) -> Result<()> {
        if self.lora.is_some() {
            bail!("parallel.zero: 3 shards trainable decoder weights; a LoRA run trains adapters over a frozen base (use zero 0 or 1)");
        }
        self.layers.clear();
        self.params.retain(|(name, _)| !name.starts_with("model.layers."));
        self.layer_source = Some(source);
        Ok(())
    }

    /// Whether the decoder layers' weights are held elsewhere (see `release_layers`).
    pub fn layers_released(&self) -> bool {
        self.layer_source.is_some()
    }

    /// The LoRA settings, for a model with adapters.
    pub fn lora_settings(&self) -> Option<&LoraSettings> {
        self.lora.as_ref().map(|l| &l.settings)
    }

    /// Training forwards that drew adapter dropout masks: the RNG state a checkpoint keeps.
    pub fn lora_dropout_draws(&self) -> u64 {
        self.lora.as_ref().map_or(0, |l| l.dropout.draws())
    }

    pub fn set_lora_dropout_draws(&self, draws: u64) {
        if let Some(l) = &self.lora {
            l.dropout.set_draws(draws);
        }
    }

    /// The implementation of the ops (composed or fused, recomputation): see
    /// `crate::kernels`. The default is the composed reference path.
    pub fn kernels(&self) -> &KernelSettings {
        &self.kernels
    }

    pub fn set_kernels(&mut self, kernels: KernelSettings) -> Result<()> {
        kernels.validate()?;
        self.kernels = kernels;
        Ok(())
    }

    fn w(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.compute_dtype)?)
    }

    /// The lm_head weight in the compute dtype (the embeddings when tied).
    fn head(&self) -> Result<Tensor> {
        self.w(self.lm_head.as_ref().unwrap_or(&self.embed))
    }

    /// input_ids [B, T] (u32) -> logits [B, T, V] (f32) for every position. With `packing`,
    /// tokens attend only within their document and positions restart per document.
    /// Differentiable: every layer's activations stay alive for a `backward`.
    pub fn forward(&self, input_ids: &Tensor, packing: Option<&Packing>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, packing, Graph::Keep)?;
        Ok(ops::linear(&hidden, &self.head()?, None)?.to_dtype(DType::F32)?)
    }

    /// As [`CausalLm::forward`] without the autograd graph (evaluation): each layer's
    /// activations are freed as soon as the next layer has its input.
    pub fn forward_no_grad(&self, input_ids: &Tensor, packing: Option<&Packing>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, packing, Graph::Discard)?;
        Ok(ops::linear(&hidden, &self.head()?.detach(), None)?.to_dtype(DType::F32)?.detach())
    }

    /// Per-token NLL [B, T] (f32) of `targets` [B, T] after `input_ids`: the training loss
    /// before reduction. In fused mode the logits exist one vocabulary chunk at a time.
    ///
    /// With recomputation on, pass a `sink` when you will call `backward`: the recomputed
    /// layers hand their parameters' gradients to it, and `sink.merge_into(&mut grads)`
    /// must follow `backward` (without a sink, nothing is recomputed).
    pub fn token_nll(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        packing: Option<&Packing>,
        sink: Option<&GradSink>,
    ) -> Result<Tensor> {
        let graph = match sink {
            Some(sink) if self.kernels.recompute => Graph::Recompute(sink),
            _ => Graph::Keep,
        };
        let hidden = self.hidden_states(input_ids, packing, graph)?;
        let targets = targets.to_device(&self.device)?;
        dispatch::token_nll_from_hidden(self.kernels.mode, &hidden, &self.head()?, &targets, self.kernels.ce_chunk)
    }

    /// As [`CausalLm::token_nll`] without the autograd graph (validation).
    pub fn token_nll_no_grad(&self, input_ids: &Tensor, targets: &Tensor, packing: Option<&Packing>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, packing, Graph::Discard)?;
        let targets = targets.to_device(&self.device)?;
        let head = self.head()?.detach();
        Ok(dispatch::token_nll_from_hidden(self.kernels.mode, &hidden, &head, &targets, self.kernels.ce_chunk)?.detach())
    }

    /// Runs `input_ids` [B, T] after the tokens already in `cache`, appending their keys and
    /// values to it, and returns the logits of the last new position, [B, V] (f32). `positions`
    /// and `mask` come from [`kv_cache::step_inputs`] (left padding, cached slots). No autograd
    /// graph is kept: generation only.
    pub fn forward_cached(&self, input_ids: &Tensor, positions: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = input_ids.dims2().context("forward_cached: input_ids must be [batch, new tokens]")?;
        let layers = self.config.num_hidden_layers;
        if t == 0 || cache.layers.len() != layers {
            bail!("forward_cached: {t} new tokens, a cache of {} layers for {layers} layers", cache.layers.len());
        }
        self.config.check_seq_len(cache.len() + t)?;
        let ids = self.checked_ids(input_ids)?;
        let mode = self.kernels.mode;
        let rope = Rope::new(mode, &positions.to_device(&self.device)?, &self.inv_freq)?;
        let mask = mask.to_device(&self.device)?;
        let mut x = self.embed_rows(&ids, b, t)?;
        // Generation: no dropout.
        let layer_ops = LayerOps { mode, dtype: self.compute_dtype, shape: LayerShape::of(&self.config), dropout: None };
        for (l, kv) in cache.layers.iter_mut().enumerate() {
            // Sharded layers (ZeRO-3) are gathered for each use, as in the forward.
            let gathered = match &self.layer_source {
                Some(source) => Some(gather_layer(source.as_ref(), l)?.0),
                None => None,
            };
            let layer = gathered.as_ref().unwrap_or_else(|| &self.layers[l]);
            x = layer_with_attention(&layer_ops, &rope, layer, &x, |q, k, v| {
                let (k, v) = kv.append(&k.detach(), &v.detach())?;
                ops::attention(q, &k, &v, &mask)
            })?
            .detach();
        }
        cache.advance(t);
        let last = x.narrow(1, t - 1, 1)?;
        let last = dispatch::rms_norm(mode, &last, &self.w(&self.final_norm)?, self.config.rms_norm_eps)?;
        let logits = ops::linear(&last, &self.head()?.detach(), None)?.to_dtype(DType::F32)?;
        Ok(logits.reshape((b, self.config.vocab_size))?.detach())
    }

    /// `input_ids` as u32 on the model's device, every id checked against the vocabulary.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.to_dtype(DType::U32)?.to_device(&self.device)?;
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max_id as usize >= self.config.vocab_size {
            bail!(
                "forward: token id {max_id} is outside the vocabulary (vocab_size {})",
                self.config.vocab_size
            );
        }
        Ok(ids)
    }

    /// Embedding rows of `ids` as [B, T, H] in the compute dtype. Rows are gathered in f32,
    /// then cast: cheaper than casting the whole table.
    fn embed_rows(&self, ids: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(self.compute_dtype)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    /// The final (normed) hidden states [B, T, H] in the compute dtype.
    fn hidden_states(&self, input_ids: &Tensor, packing: Option<&Packing>, graph: Graph<'_>) -> Result<Tensor> {
        let (b, t) = input_ids
            .dims2()
            .context("forward: input_ids must be [batch, seq_len]")?;
        self.config.check_seq_len(t)?;
        let ids = self.checked_ids(input_ids)?;

        let (positions, segments) = match packing {
            Some(p) => {
                if p.positions.dims() != [b, t] || p.segments.dims() != [b, t] {
                    bail!(
                        "forward: packing tensors are {:?}/{:?}, input_ids are [{b}, {t}]",
                        p.positions.dims(),
                        p.segments.dims()
                    );
                }
                (p.positions.to_device(&self.device)?, Some(p.segments.to_device(&self.device)?))
            }
            None => {
                let pos = Tensor::arange(0u32, t as u32, &self.device)?
                    .unsqueeze(0)?
                    .broadcast_as((b, t))?
                    .contiguous()?;
                (pos, None)
            }
        };
        let mode = self.kernels.mode;
        let ctx = LayerContext {
            ops: LayerOps {
                mode,
                dtype: self.compute_dtype,
                shape: LayerShape::of(&self.config),
                // Dropout acts in training forwards only (those that keep a graph).
                dropout: match graph {
                    Graph::Discard => None,
                    _ => self.lora.as_ref().and_then(|l| l.dropout.next()),
                },
            },
            rope: Arc::new(Rope::new(mode, &positions, &self.inv_freq)?),
            mask: Arc::new(AttentionMask::with_kernel(mode, self.kernels.attention, segments.as_ref(), t, &self.device)?),
        };

        let mut x = self.embed_rows(&ids, b, t)?;
        if let Some(source) = &self.layer_source {
            for l in 0..self.config.num_hidden_layers {
                x = match graph {
                    Graph::Recompute(_) => recompute_block(
                        &x,
                        Arc::new(GatheredLayer { ctx: ctx.clone(), layer: l, source: Arc::clone(source), names: Default::default() }),
                    )?,
                    Graph::Discard => decoder_layer(&ctx, &gather_layer(source.as_ref(), l)?.0, &x)?.detach(),
                    Graph::Keep => bail!("the decoder layers' weights are sharded (ZeRO-3): training needs kernels.recompute: true"),
                };
            }
        }
        for layer in &self.layers {
            x = match graph {
                Graph::Keep => decoder_layer(&ctx, layer, &x)?,
                Graph::Recompute(sink) => {
                    let (ctx, params) = (ctx.clone(), layer.clone());
                    recompute(&x, &layer.trainable, sink, move |x| decoder_layer(&ctx, &params, x))?
                }
                // Detaching drops the layer's graph, and with it its intermediates.
                Graph::Discard => decoder_layer(&ctx, layer, &x)?.detach(),
            };
        }
        let x = dispatch::rms_norm(mode, &x, &self.w(&self.final_norm)?, self.config.rms_norm_eps)?;
        Ok(match graph {
            Graph::Discard => x.detach(),
            _ => x,
        })
    }

    /// Every weight of the model as a plain HF model would hold it, adapters merged in, in
    /// `parameter_specs` order; `true` when a tied config must be
    /// written untied (a saved copy of the embeddings or head now differs from the other).
    pub fn merged_weights(&self) -> Result<(Vec<(String, Tensor)>, bool)> {
        let mut by_name: HashMap<String, Tensor> = HashMap::new();
        by_name.insert("model.embed_tokens.weight".into(), self.embed.clone());
        for (l, layer) in self.layers.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            by_name.insert(p("input_layernorm.weight"), layer.input_norm.clone());
            by_name.insert(p("post_attention_layernorm.weight"), layer.post_norm.clone());
            for kind in LinearKind::ALL {
                let linear = layer.linear(kind);
                by_name.insert(format!("{}.weight", kind.path(l)), linear.merged_weight()?);
                if let Some(b) = &linear.bias {
                    by_name.insert(format!("{}.bias", kind.path(l)), b.clone());
                }
            }
        }
        by_name.insert("model.norm.weight".into(), self.final_norm.clone());
        let untie = self.config.tie_word_embeddings && self.lm_head.is_some();
        let mut names: Vec<String> = parameter_specs(&self.config).into_iter().map(|(n, _, _)| n).collect();
        if let Some(head) = &self.lm_head {
            by_name.insert("lm_head.weight".into(), head.clone());
            if untie {
                names.push("lm_head.weight".into());
            }
        }
        let out = names.into_iter().map(|n| {
            let t = by_name.remove(&n).expect("every spec is built");
            (n, t.detach())
        });
        Ok((out.collect(), untie))
    }

    /// Writes an HF model directory: config.json, safetensors (sharded with an index above
    /// `max_shard_bytes`) in `opts.dtype`, and the tokenizer / generation config files. With
    /// adapters, they are merged into the weights (a plain model transformers loads as is).
    pub fn save_pretrained(&self, dir: &Path, opts: &SaveOptions) -> Result<()> {
        if self.layer_source.is_some() {
            bail!("the decoder layers' weights are sharded (ZeRO-3): gather them and use save_pretrained_tensors");
        }
        let (tensors, untie) = self.merged_weights()?;
        self.write_pretrained(dir, &tensors, untie, opts)
    }

    /// As [`CausalLm::save_pretrained`] with the weights given (every parameter by HF name,
    /// e.g. the f32 master weights gathered from the ranks of a sharded run).
    pub fn save_pretrained_tensors(&self, dir: &Path, tensors: &[(String, Tensor)], opts: &SaveOptions) -> Result<()> {
        if self.lora.is_some() {
            bail!("save_pretrained_tensors writes a model without adapters; save the adapter with save_adapter_tensors");
        }
        self.write_pretrained(dir, tensors, false, opts)
    }

    /// config.json (untied when a tied model gained a head of its own), the weights, and the
    /// tokenizer / generation config files.
    fn write_pretrained(&self, dir: &Path, tensors: &[(String, Tensor)], untie: bool, opts: &SaveOptions) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        io::save_safetensors_dir(dir, tensors, opts.dtype, opts.max_shard_bytes)?;
        let mut config = self.config.clone();
        config.tie_word_embeddings &= !untie;
        let config = config.to_hf_json_with_dtype(io::torch_dtype_name(opts.dtype));
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(src) = opts.assets_from.as_deref().or(self.source_dir.as_deref()) {
            copy_assets(src, dir)?;
        }
        Ok(())
    }

    /// Writes the adapters and saved modules in PEFT's layout (`adapter_config.json`,
    /// `adapter_model.safetensors` in `dtype`), and the tokenizer files of `assets_from`.
    pub fn save_adapter(&self, dir: &Path, dtype: DType, base_model: Option<&Path>, assets_from: Option<&Path>) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
        self.save_adapter_tensors(dir, dtype, &tensors, base_model, assets_from)
    }

    /// As [`CausalLm::save_adapter`] with the trainable tensors given by the names
    /// `named_parameters` lists (e.g. the f32 masters gathered from the ranks of a sharded run).
    pub fn save_adapter_tensors(
        &self,
        dir: &Path,
        dtype: DType,
        tensors: &[(String, Tensor)],
        base_model: Option<&Path>,
        assets_from: Option<&Path>,
    ) -> Result<()> {
        let lora = self.lora.as_ref().context("the model has no LoRA adapters to save")?;
        let mut tensors = tensors.to_vec();
        // One trained copy serving as embeddings and head is saved under both names, as PEFT does.
        let tied_copy = lora.settings.ensure_weight_tying && self.config.tie_word_embeddings && self.lm_head.is_none();
        if tied_copy && !lora.settings.modules_to_save.is_empty() {
            let embed_name = SavedModule::EmbedTokens.weight_name();
            let embed = tensors.iter().find(|(n, _)| n == embed_name).map_or_else(|| self.embed.detach(), |(_, t)| t.clone());
            tensors.push((SavedModule::LmHead.weight_name().to_string(), embed));
        }
        lora::peft::write(dir, &lora.settings, &tensors, dtype, base_model)?;
        if let Some(src) = assets_from.or(self.source_dir.as_deref()) {
            copy_assets(src, dir)?;
        }
        Ok(())
    }
}

/// The tensors of a checkpoint, checked against the config: nothing unexpected (but rotary
/// buffers), nothing missing, every shape right. A tied config drops a stored head.
fn checked_tensors(config: &ModelConfig, mut tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let specs = parameter_specs(config);
    if config.tie_word_embeddings {
        // Some tied checkpoints also store the (identical) head: transformers ignores it.
        tensors.remove("lm_head.weight");
    }
    tensors.retain(|n, _| !is_ignorable_buffer(n));
    let known: HashSet<&str> = specs.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut unexpected: Vec<&String> = tensors.keys().filter(|n| !known.contains(n.as_str())).collect();
    unexpected.sort();
    if let Some(first) = unexpected.first() {
        bail!(
            "unexpected tensor `{first}` in checkpoint ({} unexpected: {})",
            unexpected.len(),
            list_some(&unexpected)
        );
    }
    let missing: Vec<&String> = specs.iter().map(|(n, _, _)| n).filter(|n| !tensors.contains_key(*n)).collect();
    if let Some(first) = missing.first() {
        bail!(
            "missing tensor `{first}` in checkpoint ({} missing: {})",
            missing.len(),
            list_some(&missing)
        );
    }
    for (name, shape, _) in &specs {
        let t = &tensors[name];
        if t.dims() != shape.as_slice() {
            bail!("tensor `{name}` has shape {:?}, expected {:?} from config.json", t.dims(), shape);
        }
    }
    Ok(tensors)
}

/// Layer `l`'s weights from a [`LayerWeights`] source, as fresh variables (each by HF name).
fn gather_layer(source: &dyn LayerWeights, l: usize) -> candle_core::Result<(LayerParams, Vec<(String, Var)>)> {
    let mut named: Vec<(String, Var)> =
        source.gather(l)?.into_iter().map(|(n, t)| Ok((n, Var::from_tensor(&t)?))).collect::<candle_core::Result<_>>()?;
    named.sort_by(|a, b| a.0.cmp(&b.0)); // a fixed order, whatever the source's map
    let by_name: HashMap<&str, &Var> = named.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let trainable = named.iter().map(|(_, v)| v.clone()).collect();
    let params = LayerParams::from_lookup(l, |n| by_name.get(n).map(|v| v.as_tensor().clone()), &mut HashMap::new(), trainable)
        .ok_or_else(|| candle_core::Error::Msg(format!("the weights gathered for layer {l} miss a parameter")))?;
    Ok((params, named))
}

/// A decoder layer whose weights are gathered for each run of it (ZeRO-3): the forward
/// gathers, computes and drops them; the backward's recomputation gathers them again and
/// hands the gradients straight back to the source.
struct GatheredLayer {
    ctx: LayerContext,
    layer: usize,
    source: Arc<dyn LayerWeights>,
    /// The names of the variables of the latest gather (the backward's gradients are
    /// reported by variable).
    names: std::sync::Mutex<Vec<(candle_core::TensorId, String)>>,
}

impl Block for GatheredLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<Var>)> {
        let (params, named) = gather_layer(self.source.as_ref(), self.layer)?;
        if let Ok(mut names) = self.names.lock() {
            *names = named.iter().map(|(n, v)| (v.as_tensor().id(), n.clone())).collect();
        }
        Ok((decoder_layer(&self.ctx, &params, x)?, named.into_iter().map(|(_, v)| v).collect()))
    }

    fn param_grads(&self, grads: Vec<(Var, Tensor)>) -> candle_core::Result<()> {
        let names = self.names.lock().map_err(|_| candle_core::Error::Msg("layer names poisoned".into()))?;
        let named = grads
            .into_iter()
            .map(|(v, g)| {
                let id = v.as_tensor().id();
                let name = names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone());
                name.map(|n| (n, g)).ok_or_else(|| candle_core::Error::Msg(format!("layer {}: a gradient of an unknown variable", self.layer)))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.source.reduce(self.layer, named)
    }
}

/// Copies tokenizer files and generation_config.json that exist in `src` into `dst`.
pub fn copy_assets(src: &Path, dst: &Path) -> Result<()> {
    if same_dir(src, dst) {
        return Ok(());
    }
    for name in ASSET_FILES {
        let from = src.join(name);
        if from.exists() {
            let to = dst.join(name);
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn list_some(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(|s| s.as_str()).collect();
    let more = if names.len() > 5 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}
