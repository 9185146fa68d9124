//! The memory planner of `cpt plan`: per-device memory of a training config at a given
//! number of devices, for ZeRO 0, 1 and 3, with and without recomputation, term by term
//! with each term's formula, whether it fits, and the largest micro-batch that does.
//!
//! The terms follow what `cpt train` allocates (not an idealised implementation):
//! - the model keeps a full f32 copy of every weight it holds (compute-dtype values under
//!   ZeRO-1/3, which all-gather them), cast to the compute dtype per use;
//! - gradients are f32; the backward's gradient store and the step's accumulated sum are
//!   alive together while micro-batches accumulate;
//! - ZeRO-1/3 keep f32 master pieces and moments for 1/W of the parameters;
//! - ZeRO-3 holds the other parameters (embeddings, final norm, head) like ZeRO-1, and about
//!   two decoder layers' full weights at a time;
//! - activations are counted from the decoder layer's op graph (see [`layer_activation_bytes`]).
use candle_core::DType;
use serde::Serialize;

use super::config::ZeroStage;
use crate::kernels::{KernelMode, KernelSettings};
use crate::model::params::parameter_specs;
use crate::model::ModelConfig;

pub const GIB: f64 = (1u64 << 30) as f64;

/// What the planner needs of a run.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub model: ModelConfig,
    pub micro_batch: usize,
    pub seq_len: usize,
    /// Micro-batches per optimiser step over all ranks (`batch.grad_accum`).
    pub grad_accum: usize,
    pub compute: DType,
    pub kernels: KernelSettings,
    /// f32 tensors of optimiser state per parameter: 2 (AdamW), 1 (SGD with momentum), 0.
    pub moments: usize,
    pub devices: usize,
    pub device_memory: f64,
    /// Bytes the runtime takes before any tensor (CUDA context and cuBLAS workspaces on a
    /// GPU; the process itself on a CPU).
    pub runtime_bytes: f64,
    pub bucket_elems: usize,
    /// A LoRA run: the frozen base in the compute dtype, only these parameters train.
    pub lora: Option<LoraCounts>,
}

/// What a LoRA run trains (`lora:`; docs/lora.md#memory).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoraCounts {
    /// Adapter parameters: rank x the sum of (in + out) over the adapted layers.
    pub adapters: f64,
    /// Parameters of the saved modules (`modules_to_save`), trained whole.
    pub saved: f64,
    /// The largest trainable tensor (the update's temporaries).
    pub largest: f64,
}

impl LoraCounts {
    /// Trainable parameters in all.
    pub fn trainable(&self) -> f64 {
        self.adapters + self.saved
    }
}

/// One line of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Term {
    pub name: &'static str,
    pub bytes: f64,
    pub formula: String,
}

/// The prediction for one ZeRO stage and recomputation choice.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub zero: ZeroStage,
    pub recompute: bool,
    pub terms: Vec<Term>,
    pub total: f64,
    pub fits: bool,
    /// The largest micro-batch whose total fits the device (None: not even 1).
    pub max_micro_batch: Option<usize>,
}

/// Parameter counts the terms need.
#[derive(Debug, Clone, Copy)]
struct Counts {
    total: f64,
    /// One decoder layer (the largest).
    layer: f64,
    layers: f64,
    /// Embeddings, final norm, head.
    rest: f64,
    /// The largest single tensor (the update's temporaries).
    largest: f64,
    /// The largest unit the reduce-scatter flattens at once.
    largest_unit: f64,
}

fn counts(model: &ModelConfig) -> Counts {
    let specs = parameter_specs(model);
    let numel = |s: &[usize]| s.iter().product::<usize>() as f64;
    let total: f64 = specs.iter().map(|(_, s, _)| numel(s)).sum();
    let layers: f64 = specs.iter().filter(|(n, _, _)| n.starts_with("model.layers.")).map(|(_, s, _)| numel(s)).sum();
    let layer = layers / model.num_hidden_layers.max(1) as f64;
    let largest = specs.iter().map(|(_, s, _)| numel(s)).fold(0.0, f64::max);
    Counts { total, layer, layers, rest: total - layers, largest, largest_unit: layer.max(largest) }
}

fn bytes_of(d: DType) -> f64 {
    d.size_in_bytes() as f64
}

/// Bytes of activations one decoder layer keeps for its backward, per sequence of `t`
/// tokens. Counted from the composed layer's op graph: per token `(20 H + 8 KV + 4 I) x c`
/// (the norms' squares and products, q/k/v and their head-major copies, RoPE's negated
/// half, concatenation and products, the attention output and its transposed copy, the
/// projection and residuals, gate, up, SiLU and product, down); per head and pair of
/// positions, the composed attention's score tensors: the product and its scaled copy in
/// the compute dtype, the masked scores, shifted scores, exponentials and probabilities in
/// f32, and (below f32) the f32 copy of the scores and the compute-dtype copy of the
/// probabilities. The fused attention keeps two f32 statistics per row instead.
pub fn layer_activation_bytes(model: &ModelConfig, t: usize, compute: DType, kernels: &KernelSettings) -> f64 {
    let (h, i) = (model.hidden_size as f64, model.intermediate_size as f64);
    let kv = (model.num_key_value_heads * model.head_dim) as f64;
    let c = bytes_of(compute);
    let per_token = (20.0 * h + 8.0 * kv + 4.0 * i) * c;
    let heads = model.num_attention_heads as f64;
    let t = t as f64;
    let attention = match kernels.mode {
        KernelMode::Composed => {
            let casts = if compute == DType::F32 { 0.0 } else { 4.0 + c };
            heads * t * t * (2.0 * c + 4.0 * 4.0 + casts)
        }
        KernelMode::Fused => 2.0 * heads * t * 4.0,
    };
    per_token * t + attention
}

/// Bytes of the loss head per sequence: the composed path keeps the logits in the compute
/// dtype and three f32 `[t, V]` tensors (logits, shifted, exp); the fused cross-entropy one
/// vocabulary chunk at a time.
fn head_activation_bytes(model: &ModelConfig, t: usize, compute: DType, kernels: &KernelSettings) -> f64 {
    let v = model.vocab_size as f64;
    let t = t as f64;
    match kernels.mode {
        KernelMode::Composed => t * v * (bytes_of(compute) + 3.0 * 4.0),
        KernelMode::Fused => t * (kernels.ce_chunk.min(model.vocab_size) as f64) * 3.0 * 4.0 + t * 8.0,
    }
}

/// Plans for ZeRO 0, 1 and 3 (3 only with recomputation), with and without recomputation.
pub fn plan_all(input: &PlanInput) -> Vec<Plan> {
    let mut out = Vec::new();
    for zero in [ZeroStage::Zero0, ZeroStage::Zero1, ZeroStage::Zero3] {
        for recompute in [false, true] {
            // ZeRO-3 trains with recomputation only, and shards no frozen LoRA base.
            if zero == ZeroStage::Zero3 && (!recompute || input.lora.is_some()) {
                continue;
            }
            out.push(plan_one(input, zero, recompute));
        }
    }
    out
}

/// The plan of one ZeRO stage and recomputation choice.
pub fn plan_one(input: &PlanInput, zero: ZeroStage, recompute: bool) -> Plan {
    let terms = terms(input, zero, recompute, input.micro_batch);
    let total: f64 = terms.iter().map(|t| t.bytes).sum();
    let fits = total <= input.device_memory;
    let mut max_micro_batch = None;
    let mut b = 1;
    while b <= 1 << 16 {
        let t: f64 = self::terms(input, zero, recompute, b).iter().map(|t| t.bytes).sum();
        if t > input.device_memory {
            break;
        }
        max_micro_batch = Some(b);
        b += 1.max(b / 16);
    }
    Plan { zero, recompute, terms, total, fits, max_micro_batch }
}

fn gib(b: f64) -> String {
    format!("{:.2} GiB", b / GIB)
}

fn params_m(n: f64) -> String {
    format!("{:.1}M", n / 1e6)
}

fn terms(input: &PlanInput, zero: ZeroStage, recompute: bool, micro_batch: usize) -> Vec<Term> {
    if let Some(lora) = input.lora {
        return lora_terms(input, &lora, zero, recompute, micro_batch);
    }
    let n = counts(&input.model);
    let c = bytes_of(input.compute);
    let cname = format!("{:?}", input.compute).to_lowercase();
    let mut t = Vec::new();
    let mut term = |name: &'static str, bytes: f64, formula: String| t.push(Term { name, bytes, formula });

    term("runtime", input.runtime_bytes, "CUDA context and workspaces, or the process itself on a CPU".into());
    // Weights the model holds (f32 containers), plus their per-use compute-dtype casts.
    let held = if zero == ZeroStage::Zero3 { n.rest } else { n.total };
    let casts = if input.compute == DType::F32 { 0.0 } else { c };
    match zero {
        ZeroStage::Zero3 => term(
            "weights",
            4.0 * held + 2.0 * n.layer * (4.0 + c),
            format!(
                "4 B x {} (embeddings, norm, head) + 2 layers x {} x (4 B f32 + {c} B gathered {cname})",
                params_m(n.rest),
                params_m(n.layer)
            ),
        ),
        _ => term("weights", 4.0 * held, format!("4 B x {} parameters (f32 copy the model computes from)", params_m(n.total))),
    }
    if casts > 0.0 {
        // ZeRO-3's gathered layers are counted with the weights.
        let kept = n.rest
            + match (zero, recompute) {
                (ZeroStage::Zero3, _) => 0.0,
                (_, true) => n.layer,
                (_, false) => n.layers,
            };
        term("weight casts", casts * kept, format!("{c} B x {} ({cname} copies the graph keeps for the backward)", params_m(kept)));
    }
    let grad_full = if zero == ZeroStage::Zero3 { n.rest + 2.0 * n.layer } else { n.total };
    let sharded = optimizer_terms(input, zero, Trained { gradients: grad_full, params: n.total, largest: n.largest }, &mut term);
    activation_term(input, recompute, micro_batch, &mut term);
    if input.devices > 1 {
        let unit = if sharded { n.largest_unit } else { 0.0 };
        term(
            "communication buffers",
            4.0 * (3.0 * input.bucket_elems as f64).min(3.0 * n.total) + 4.0 * unit,
            format!("3 x 4 B x the bucket ({} elements){}", input.bucket_elems, if sharded { format!(" + 4 B x the largest unit ({})", params_m(unit)) } else { String::new() }),
        );
    }
    t
}

/// Parameter counts behind the gradient and optimiser terms.
struct Trained {
    /// Full gradients alive at once (ZeRO-3: the resident parameters and two layers).
    gradients: f64,
    /// Parameters the optimiser updates (sharded over ranks from ZeRO-1 on).
    params: f64,
    /// The largest of them (the update's temporaries).
    largest: f64,
}

/// Gradients, their shards, master weights, moments and the update's temporaries; returns
/// whether the state is sharded.
fn optimizer_terms(input: &PlanInput, zero: ZeroStage, n: Trained, term: &mut impl FnMut(&'static str, f64, String)) -> bool {
    let w = input.devices.max(1) as f64;
    // Gradients: the backward's store and the accumulated sum.
    let accumulating = input.grad_accum as f64 / w > 1.0 || w > 1.0;
    term(
        "gradients",
        4.0 * n.gradients * if accumulating { 2.0 } else { 1.0 },
        format!(
            "4 B x {}{}",
            params_m(n.gradients),
            if accumulating { " x 2 (the backward's store and the step's sum)" } else { " (f32)" }
        ),
    );
    let sharded = zero != ZeroStage::Zero0;
    if sharded {
        term("gradient shards", 4.0 * n.params / w, format!("4 B x {} / {} ranks (reduce-scattered)", params_m(n.params), w));
        term("master weights", 4.0 * n.params / w, format!("4 B x {} / {} ranks (f32)", params_m(n.params), w));
    }
    let shards = if sharded { w } else { 1.0 };
    if input.moments > 0 {
        term(
            "optimiser moments",
            4.0 * input.moments as f64 * n.params / shards,
            format!("{} x 4 B x {} / {} (f32)", input.moments, params_m(n.params), shards),
        );
    }
    term(
        "update temporaries",
        4.0 * (1 + input.moments) as f64 * n.largest / shards,
        format!("(1 + {}) x 4 B x the largest tensor's {} / {}", input.moments, params_m(n.largest), shards),
    );
    sharded
}

/// The activations a micro-batch keeps for its backward (the same with or without LoRA:
/// `kernels::lora_linear` keeps what a plain linear layer keeps, plus a rank-r product).
fn activation_term(input: &PlanInput, recompute: bool, micro_batch: usize, term: &mut impl FnMut(&'static str, f64, String)) {
    let c = bytes_of(input.compute);
    let layers = input.model.num_hidden_layers as f64;
    let seqs = micro_batch as f64;
    let per_layer = layer_activation_bytes(&input.model, input.seq_len, input.compute, &input.kernels) * seqs;
    let head = head_activation_bytes(&input.model, input.seq_len, input.compute, &input.kernels) * seqs;
    let tokens = seqs * input.seq_len as f64;
    let h = input.model.hidden_size as f64;
    if recompute {
        term(
            "activations",
            layers * tokens * h * c + 2.0 * per_layer + head,
            format!(
                "{layers} layers x {tokens} tokens x {h} x {c} B (saved inputs) + 2 x one layer's {} (its recomputation and gradients) + head {}",
                gib(per_layer),
                gib(head)
            ),
        );
    } else {
        term(
            "activations",
            (layers + 1.0) * per_layer + head,
            format!("({layers} layers + 1 for the backward) x {} + head {}", gib(per_layer), gib(head)),
        );
    }
}

/// A LoRA run: the frozen base in the compute dtype (no f32 master, gradient or moments);
/// the adapters and saved modules as a full run's parameters (docs/lora.md#memory).
fn lora_terms(input: &PlanInput, lora: &LoraCounts, zero: ZeroStage, recompute: bool, micro_batch: usize) -> Vec<Term> {
    let n = counts(&input.model);
    let p = lora.trainable();
    let c = bytes_of(input.compute);
    let cname = format!("{:?}", input.compute).to_lowercase();
    let mut t = Vec::new();
    let mut term = |name: &'static str, bytes: f64, formula: String| t.push(Term { name, bytes, formula });

    term("runtime", input.runtime_bytes, "CUDA context and workspaces, or the process itself on a CPU".into());
    term("frozen base", c * n.total, format!("{c} B x {} parameters ({cname}, no gradient or optimiser state)", params_m(n.total)));
    term(
        "trainable weights",
        4.0 * p,
        format!("4 B x ({} adapter + {} saved-module parameters) (f32)", params_m(lora.adapters), params_m(lora.saved)),
    );
    let sharded = optimizer_terms(input, zero, Trained { gradients: p, params: p, largest: lora.largest }, &mut term);
    activation_term(input, recompute, micro_batch, &mut term);
    if input.devices > 1 {
        let unit = if sharded { lora.largest } else { 0.0 };
        term(
            "communication buffers",
            4.0 * (3.0 * input.bucket_elems as f64).min(3.0 * p) + 4.0 * unit,
            format!("3 x 4 B x the bucket ({} elements, at most the trainable parameters){}", input.bucket_elems, if sharded { format!(" + 4 B x the largest tensor ({})", params_m(unit)) } else { String::new() }),
        );
    }
    t
}

/// A human-readable report of `plans`.
pub fn render(input: &PlanInput, plans: &[Plan]) -> String {
    let n = counts(&input.model);
    let mut out = format!(
        "{} parameters ({} per decoder layer x {}), micro-batch {} x {} tokens, {:?} compute, kernels {}, {} device(s) of {}\n",
        params_m(n.total),
        params_m(n.layer),
        input.model.num_hidden_layers,
        input.micro_batch,
        input.seq_len,
        input.compute,
        input.kernels.describe(),
        input.devices,
        gib(input.device_memory)
    );
    for p in plans {
        out.push_str(&format!(
            "\nZeRO-{} {}: {} per device -> {}; largest micro-batch that fits: {}\n",
            p.zero.number(),
            if p.recompute { "with recomputation" } else { "without recomputation" },
            gib(p.total),
            if p.fits { "fits" } else { "does NOT fit" },
            p.max_micro_batch.map_or("none".to_string(), |b| b.to_string())
        ));
        for t in &p.terms {
            out.push_str(&format!("  {:<22} {:>10}  = {}\n", t.name, gib(t.bytes), t.formula));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(devices: usize) -> PlanInput {
        let model = ModelConfig::from_json(&serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "tie_word_embeddings": false
        }))
        .unwrap();
        PlanInput {
            model,
            micro_batch: 1,
            seq_len: 4096,
            grad_accum: 8,
            compute: DType::BF16,
            kernels: KernelSettings { mode: KernelMode::Fused, recompute: true, ..Default::default() },
            moments: 2,
            devices,
            device_memory: 80.0 * GIB,
            runtime_bytes: 0.5 * GIB,
            bucket_elems: 8 << 20,
            lora: None,
        }
    }

    /// Llama-3-8B, LoRA r 16 on all linear layers (docs/lora.md#memory): the base in bf16
    /// and 16 B per adapter parameter, no ZeRO-3 plan.
    #[test]
    fn a_lora_plan_keeps_the_base_in_the_compute_dtype_and_trains_the_adapters() {
        let mut lora_input = input(1);
        let adapters = 16.0 * 81920.0 * 32.0;
        lora_input.lora = Some(LoraCounts { adapters, saved: 0.0, largest: 16.0 * 14336.0 });
        let plans = plan_all(&lora_input);
        assert!(plans.iter().all(|p| p.zero != ZeroStage::Zero3), "ZeRO-3 shards no frozen base");
        let p = plans.iter().find(|p| p.zero == ZeroStage::Zero0 && p.recompute).unwrap();
        let get = |name: &str| p.terms.iter().find(|t| t.name == name).map(|t| t.bytes).unwrap();
        assert_eq!(get("frozen base"), 2.0 * counts(&lora_input.model).total);
        assert_eq!(get("trainable weights") + get("optimiser moments"), 12.0 * adapters);
        let full = plan_one(&input(1), ZeroStage::Zero0, true);
        let act = |p: &Plan| p.terms.iter().find(|t| t.name == "activations").unwrap().bytes;
        assert_eq!(act(p), act(&full), "the same activations as a full run");
        assert!(p.total < full.total / 4.0, "{} vs {}", p.total, full.total);
    }

    #[test]
    fn sharding_shrinks_the_optimiser_terms_by_the_world_size() {
        let one = plan_one(&input(1), ZeroStage::Zero1, true);
        let eight = plan_one(&input(8), ZeroStage::Zero1, true);
        let moments = |p: &Plan| p.terms.iter().find(|t| t.name == "optimiser moments").unwrap().bytes;
        assert!((moments(&one) / moments(&eight) - 8.0).abs() < 1e-9);
        // Llama-3-8B: 8.03B parameters x 8 B of moments.
        assert!((moments(&one) / 8.0 / 8.03e9 - 1.0).abs() < 0.01, "{}", moments(&one));
        let z3 = plan_one(&input(8), ZeroStage::Zero3, true);
        assert!(z3.total < eight.total, "ZeRO-3 holds fewer weights");
        assert!(!plan_one(&input(1), ZeroStage::Zero0, true).fits, "8B full CPT does not fit one 80 GB device");
    }

    #[test]
    fn the_largest_micro_batch_is_consistent_with_the_totals() {
        let inp = input(8);
        let p = plan_one(&inp, ZeroStage::Zero3, true);
        let b = p.max_micro_batch.expect("something fits");
        let at = |mb| {
            let mut i = inp.clone();
            i.micro_batch = mb;
            plan_one(&i, ZeroStage::Zero3, true).total
        };
        assert!(at(b) <= inp.device_memory);
    }
}
