//! The fused ops' CPU versions against PyTorch (fixture from scripts/kernels_fixtures.py) and
//! against the composed candle ops, values and gradients, in f32 and bf16.

mod kernels_common;

use candle_core::{DType, Device, Tensor, Var};
use cpt::kernels::adamw::{adamw_step, AdamWSlot, AdamWStep};
use cpt::kernels::attention::flash_attention;
use cpt::kernels::cross_entropy::chunked_cross_entropy;
use cpt::kernels::lora_linear::{lora_linear, Adapter};
use cpt::kernels::recompute::{recompute, GradSink};
use cpt::kernels::rms_norm::rms_norm;
use cpt::kernels::rope::{half_tables, rope, RopeTable};
use cpt::kernels::swiglu::swiglu;
use cpt::kernels::KernelMode;
use cpt::model::lora::dropout::DropoutStream;
use cpt::model::ops;
use kernels_common as common;
use kernels_common::{assert_close, fixture, get, randn, value_and_grads};

fn to_u32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

#[test]
fn attention_matches_torch() {
    let f = fixture();
    let (q, k, v, seg) = (get(&f, "attn.q"), get(&f, "attn.k"), get(&f, "attn.v"), to_u32(&get(&f, "attn.segments")));
    let scale = 1.0 / (q.dim(3).unwrap() as f32).sqrt();
    let (o, g) = value_and_grads(&[&q, &k, &v], &get(&f, "attn.dout"), |x| {
        flash_attention(&x[0], &x[1], &x[2], Some(&seg), scale)
    });
    assert_close(&o, &get(&f, "attn.out"), 1e-5, "attention output");
    assert_close(&g[0], &get(&f, "attn.dq"), 1e-5, "attention dq");
    assert_close(&g[1], &get(&f, "attn.dk"), 1e-5, "attention dk");
    assert_close(&g[2], &get(&f, "attn.dv"), 1e-5, "attention dv");
    // the composed reference agrees with torch too, so the comparisons below mean something
    let (oc, gc) = value_and_grads(&[&q, &k, &v], &get(&f, "attn.dout"), |x| {
        common::attention(&x[0], &x[1], &x[2], &seg, scale as f64)
    });
    assert_close(&oc, &get(&f, "attn.out"), 1e-5, "composed attention output");
    assert_close(&gc[1], &get(&f, "attn.dk"), 1e-5, "composed attention dk");
}

/// Several key tiles (T > 64), GQA 4:1, two packed documents, each dtype.
#[test]
fn attention_matches_composed() {
    let (b, hq, hkv, t, d) = (2, 4, 1, 150, 32);
    let mut seg = vec![0u32; b * t];
    seg[t * 0 + 90..t].iter_mut().for_each(|s| *s = 1); // batch 0: documents of 90 and 60 tokens
    seg[t + 7..].iter_mut().for_each(|s| *s = 3); // batch 1: 7 and 143
    let seg = Tensor::from_vec(seg, (b, t), &Device::Cpu).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    for (dtype, tol) in [(DType::F32, 2e-5), (DType::BF16, 3e-2)] {
        let q = randn(&[b, hq, t, d], 1, dtype);
        let k = randn(&[b, hkv, t, d], 2, dtype);
        let v = randn(&[b, hkv, t, d], 3, dtype);
        let g = randn(&[b, hq, t, d], 4, DType::F32);
        let (of, gf) = value_and_grads(&[&q, &k, &v], &g, |x| flash_attention(&x[0], &x[1], &x[2], Some(&seg), scale));
        let (oc, gc) = value_and_grads(&[&q, &k, &v], &g, |x| common::attention(&x[0], &x[1], &x[2], &seg, scale as f64));
        assert_eq!(of.dtype(), dtype);
        assert_close(&of, &oc, tol, &format!("{dtype:?} attention output"));
        for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
            assert_eq!(gf[i].dtype(), dtype);
            assert_close(&gf[i], &gc[i], tol, &format!("{dtype:?} attention {name}"));
        }
    }
    // without segments: plain causal
    let q = randn(&[1, 2, 70, 32], 5, DType::F32);
    let k = randn(&[1, 2, 70, 32], 6, DType::F32);
    let zeros = Tensor::zeros((1, 70), DType::U32, &Device::Cpu).unwrap();
    let a = flash_attention(&q, &k, &k, None, 0.3).unwrap();
    let c = common::attention(&q, &k, &k, &zeros, 0.3).unwrap();
    assert_close(&a, &c, 2e-5, "causal attention without segments");
}

#[test]
fn blocked_attention_matches_torch_and_composed() {
    use cpt::kernels::attention_blocked::blocked_attention;
    let f = fixture();
    let (q, k, v, seg) = (get(&f, "attn.q"), get(&f, "attn.k"), get(&f, "attn.v"), to_u32(&get(&f, "attn.segments")));
    let scale = 0.25;
    for q_block in [1, 4, 13, 100] {
        let (o, g) = value_and_grads(&[&q, &k, &v], &get(&f, "attn.dout"), |x| {
            blocked_attention(&x[0], &x[1], &x[2], Some(&seg), scale, q_block)
        });
        assert_close(&o, &get(&f, "attn.out"), 1e-5, &format!("q_block {q_block}: output"));
        assert_close(&g[0], &get(&f, "attn.dq"), 1e-5, &format!("q_block {q_block}: dq"));
        assert_close(&g[1], &get(&f, "attn.dk"), 1e-5, &format!("q_block {q_block}: dk"));
        assert_close(&g[2], &get(&f, "attn.dv"), 1e-5, &format!("q_block {q_block}: dv"));
    }
    let (b, hq, hkv, t, d) = (2, 4, 2, 90, 32);
    let mut seg = vec![0u32; b * t];
    seg[50..t].iter_mut().for_each(|s| *s = 1);
    let seg = Tensor::from_vec(seg, (b, t), &Device::Cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 2e-5), (DType::BF16, 3e-2)] {
        let q = randn(&[b, hq, t, d], 21, dtype);
        let k = randn(&[b, hkv, t, d], 22, dtype);
        let v = randn(&[b, hkv, t, d], 23, dtype);
        let g = randn(&[b, hq, t, d], 24, DType::F32);
        let s = 1.0 / (d as f32).sqrt();
        let (ob, gb) = value_and_grads(&[&q, &k, &v], &g, |x| blocked_attention(&x[0], &x[1], &x[2], Some(&seg), s, 32));
        let (oc, gc) = value_and_grads(&[&q, &k, &v], &g, |x| common::attention(&x[0], &x[1], &x[2], &seg, s as f64));
        assert_close(&ob, &oc, tol, &format!("{dtype:?} blocked output"));
        for i in 0..3 {
            assert_eq!(gb[i].dtype(), dtype);
            assert_close(&gb[i], &gc[i], tol, &format!("{dtype:?} blocked gradient {i}"));
        }
    }
}

#[test]
fn fused_attention_kind_parses() {
    use cpt::kernels::dispatch::FusedAttention;
    assert_eq!("flash".parse::<FusedAttention>().unwrap(), FusedAttention::Flash);
    assert_eq!("blocked:256".parse::<FusedAttention>().unwrap(), FusedAttention::Blocked { q_block: 256 });
    assert!("blocked:0".parse::<FusedAttention>().is_err());
    assert!("fast".parse::<FusedAttention>().unwrap_err().to_string().contains("flash"));
}

#[test]
fn attention_rejects_bad_shapes() {
    let q = Tensor::zeros((1, 3, 4, 8), DType::F32, &Device::Cpu).unwrap();
    let k = Tensor::zeros((1, 2, 4, 8), DType::F32, &Device::Cpu).unwrap();
    let err = flash_attention(&q, &k, &k, None, 1.0).unwrap_err().to_string();
    assert!(err.contains("not a multiple"), "{err}");
    let seg = Tensor::zeros((1, 5), DType::U32, &Device::Cpu).unwrap();
    let err = flash_attention(&q, &q, &q, Some(&seg), 1.0).unwrap_err().to_string();
    assert!(err.contains("segments"), "{err}");
}

#[test]
fn rms_norm_matches_torch_and_composed() {
    let f = fixture();
    let (x, w) = (get(&f, "rms.x"), get(&f, "rms.weight"));
    let (y, g) = value_and_grads(&[&x, &w], &get(&f, "rms.g"), |t| rms_norm(&t[0], &t[1], 1e-5));
    assert_close(&y, &get(&f, "rms.y"), 1e-6, "rms_norm y");
    assert_close(&g[0], &get(&f, "rms.dx"), 1e-5, "rms_norm dx");
    assert_close(&g[1], &get(&f, "rms.dweight"), 1e-5, "rms_norm dweight");
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let x = (randn(&[4, 9, 200], 7, DType::F32) * 3.0).unwrap().to_dtype(dtype).unwrap();
        let w = randn(&[200], 8, DType::F32).affine(0.2, 1.0).unwrap().to_dtype(dtype).unwrap();
        let g = randn(&[4, 9, 200], 9, DType::F32);
        let (yf, gf) = value_and_grads(&[&x, &w], &g, |t| rms_norm(&t[0], &t[1], 1e-6));
        let (yc, gc) = value_and_grads(&[&x, &w], &g, |t| common::rms_norm(&t[0], &t[1], 1e-6));
        assert_close(&yf, &yc, tol, &format!("{dtype:?} rms_norm y"));
        assert_close(&gf[0], &gc[0], tol, &format!("{dtype:?} rms_norm dx"));
        assert_close(&gf[1], &gc[1], tol, &format!("{dtype:?} rms_norm dweight"));
    }
    let bad = rms_norm(&x, &Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(), 1e-5);
    assert!(bad.unwrap_err().to_string().contains("weight shape"));
}

const LLAMA3_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 50,
  "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
  "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
  "max_position_embeddings": 64, "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
}"#;

#[test]
fn rope_matches_transformers() {
    let f = fixture();
    let cfg = cpt::model::config::ModelConfig::from_json_str(LLAMA3_CONFIG).unwrap();
    let from_cfg = RopeTable::for_config(&cfg, 64, &Device::Cpu).unwrap();
    let inv: Vec<f32> = get(&f, "rope.inv_freq").to_vec1().unwrap();
    let table = RopeTable::new(&inv, 64, 1.0, &Device::Cpu).unwrap();
    let inv_cfg = Tensor::new(cpt::model::ops::rope_inv_freq(&cfg).as_slice(), &Device::Cpu).unwrap();
    assert_close(&inv_cfg, &get(&f, "rope.inv_freq"), 1e-6, "llama3 inv_freq");
    // positions up to 63 multiply the last-ulp differences of inv_freq
    assert_close(&from_cfg.cos, &table.cos, 1e-5, "table from the model config");
    let (cos, sin) = table.gather(&to_u32(&get(&f, "rope.positions"))).unwrap();
    let x = get(&f, "rope.x");
    let (y, g) = value_and_grads(&[&x], &get(&f, "rope.g"), |t| rope(&t[0], &cos, &sin));
    assert_close(&y, &get(&f, "rope.y"), 1e-6, "rope y");
    assert_close(&g[0], &get(&f, "rope.dx"), 1e-6, "rope dx");
    // the model's own [B, 1, T, D] tables give the same rotation
    let (mcos, msin) = cpt::model::ops::rope_tables(&to_u32(&get(&f, "rope.positions")), &inv, &Device::Cpu).unwrap();
    let (hcos, hsin) = half_tables(&mcos, &msin).unwrap();
    assert_close(&rope(&x, &hcos, &hsin).unwrap(), &get(&f, "rope.y"), 1e-6, "rope from model tables");
    // beyond the table: a clear error
    let far = Tensor::new(&[[0u32, 64]], &Device::Cpu).unwrap();
    assert!(table.gather(&far).unwrap_err().to_string().contains("beyond"));
}

#[test]
fn rope_matches_composed() {
    let inv: Vec<f32> = (0..16).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / 32.0)).collect();
    let table = RopeTable::new(&inv, 40, 1.0, &Device::Cpu).unwrap();
    let (cos, sin) = table.prefix(33).unwrap(); // shared by the batch
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
        let x = randn(&[3, 2, 33, 32], 10, dtype);
        let g = randn(&[3, 2, 33, 32], 11, DType::F32);
        let (yf, gf) = value_and_grads(&[&x], &g, |t| rope(&t[0], &cos, &sin));
        let (yc, gc) = value_and_grads(&[&x], &g, |t| common::rope(&t[0], &cos, &sin));
        assert_close(&yf, &yc, tol, &format!("{dtype:?} rope y"));
        assert_close(&gf[0], &gc[0], tol, &format!("{dtype:?} rope dx"));
    }
}

#[test]
fn swiglu_matches_torch_and_composed() {
    let f = fixture();
    let (a, b) = (get(&f, "swiglu.gate"), get(&f, "swiglu.up"));
    let (y, g) = value_and_grads(&[&a, &b], &get(&f, "swiglu.g"), |t| swiglu(&t[0], &t[1]));
    assert_close(&y, &get(&f, "swiglu.y"), 1e-6, "swiglu y");
    assert_close(&g[0], &get(&f, "swiglu.dgate"), 1e-6, "swiglu dgate");
    assert_close(&g[1], &get(&f, "swiglu.dup"), 1e-6, "swiglu dup");
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
        let a = (randn(&[5, 64], 12, DType::F32) * 3.0).unwrap().to_dtype(dtype).unwrap();
        let b = randn(&[5, 64], 13, dtype);
        let g = randn(&[5, 64], 14, DType::F32);
        let (yf, gf) = value_and_grads(&[&a, &b], &g, |t| swiglu(&t[0], &t[1]));
        let (yc, gc) = value_and_grads(&[&a, &b], &g, |t| common::swiglu(&t[0], &t[1]));
        assert_close(&yf, &yc, tol, &format!("{dtype:?} swiglu y"));
        assert_close(&gf[0], &gc[0], tol, &format!("{dtype:?} swiglu dgate"));
        assert_close(&gf[1], &gc[1], tol, &format!("{dtype:?} swiglu dup"));
    }
}

#[test]
fn cross_entropy_matches_torch_for_any_chunking() {
    let f = fixture();
    let (h, w, tg) = (get(&f, "ce.hidden"), get(&f, "ce.weight"), to_u32(&get(&f, "ce.targets")));
    for chunk in [5, 16, 37, 1000] {
        let (loss, g) = value_and_grads(&[&h, &w], &get(&f, "ce.g"), |t| chunked_cross_entropy(&t[0], &t[1], &tg, chunk));
        assert_eq!(loss.dtype(), DType::F32);
        assert_close(&loss, &get(&f, "ce.loss"), 1e-6, &format!("chunk {chunk}: loss"));
        assert_close(&g[0], &get(&f, "ce.dhidden"), 1e-5, &format!("chunk {chunk}: dhidden"));
        assert_close(&g[1], &get(&f, "ce.dweight"), 1e-5, &format!("chunk {chunk}: dweight"));
    }
}

#[test]
fn cross_entropy_matches_composed_in_bf16() {
    let (n, hd, vocab) = (24, 32, 300);
    let h = randn(&[n, hd], 15, DType::BF16);
    let w = (randn(&[vocab, hd], 16, DType::F32) * 0.3).unwrap().to_dtype(DType::BF16).unwrap();
    let tg: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 11) % vocab as u32).collect();
    let tg = Tensor::new(tg.as_slice(), &Device::Cpu).unwrap();
    let g = randn(&[n], 17, DType::F32).abs().unwrap();
    let (lf, gf) = value_and_grads(&[&h, &w], &g, |t| chunked_cross_entropy(&t[0], &t[1], &tg, 64));
    let (lc, gc) = value_and_grads(&[&h, &w], &g, |t| common::cross_entropy(&t[0], &t[1], &tg));
    assert_close(&lf, &lc, 1e-5, "bf16 loss"); // same bf16 logits, f32 reductions
    assert_eq!(gf[0].dtype(), DType::BF16);
    assert_close(&gf[0], &gc[0], 2e-2, "bf16 dhidden");
    assert_close(&gf[1], &gc[1], 2e-2, "bf16 dweight");
    let bad = Tensor::new(&[0u32, 300], &Device::Cpu).unwrap();
    let err = chunked_cross_entropy(&h.narrow(0, 0, 2).unwrap(), &w, &bad, 64).unwrap_err().to_string();
    assert!(err.contains("target id 300"), "{err}");
}

#[test]
fn adamw_matches_torch_three_steps() {
    let f = fixture();
    let p0 = Var::from_tensor(&get(&f, "adamw.p0.init")).unwrap();
    let p1 = Var::from_tensor(&get(&f, "adamw.p1.init")).unwrap();
    let state: Vec<(Tensor, Tensor)> =
        [&p0, &p1].iter().map(|p| (p.zeros_like().unwrap(), p.zeros_like().unwrap())).collect();
    for step in 1..=3u64 {
        let g0 = get(&f, &format!("adamw.p0.grad{step}"));
        let g1 = get(&f, &format!("adamw.p1.grad{step}"));
        let slots = [
            AdamWSlot { param: &p0, grad: &g0, exp_avg: &state[0].0, exp_avg_sq: &state[0].1, weight_decay: 0.1, step },
            AdamWSlot { param: &p1, grad: &g1, exp_avg: &state[1].0, exp_avg_sq: &state[1].1, weight_decay: 0.0, step },
        ];
        let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8 };
        adamw_step(&slots, &hp).unwrap();
        assert_close(&p0, &get(&f, &format!("adamw.p0.step{step}")), 1e-6, &format!("step {step} p0"));
        assert_close(&p1, &get(&f, &format!("adamw.p1.step{step}")), 1e-6, &format!("step {step} p1"));
    }
    let bf = Tensor::zeros(3, DType::BF16, &Device::Cpu).unwrap();
    let slot = AdamWSlot { param: &bf, grad: &bf, exp_avg: &bf, exp_avg_sq: &bf, weight_decay: 0.0, step: 1 };
    let hp = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    assert!(adamw_step(&[slot], &hp).unwrap_err().to_string().contains("f32"));
    let f32s = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let slot = AdamWSlot { param: &f32s, grad: &f32s, exp_avg: &f32s, exp_avg_sq: &f32s, weight_decay: 0.0, step: 0 };
    assert!(adamw_step(&[slot], &hp).unwrap_err().to_string().contains("from 1"));
}

/// A small residual block: x + W2 swiglu(W1a rms(x), W1b rms(x)).
fn block(x: &Tensor, w1a: &Tensor, w1b: &Tensor, w2: &Tensor, norm: &Tensor) -> candle_core::Result<Tensor> {
    let h = rms_norm(x, norm, 1e-5)?;
    let a = h.broadcast_matmul(&w1a.t()?)?;
    let b = h.broadcast_matmul(&w1b.t()?)?;
    x + swiglu(&a, &b)?.broadcast_matmul(&w2.t()?)?
}

#[test]
fn recompute_gives_the_same_gradients() {
    let dim = 16;
    let vars: Vec<Var> = [[24, dim], [24, dim], [dim, 24]]
        .iter()
        .enumerate()
        .map(|(i, s)| Var::from_tensor(&(randn(s, 20 + i as u64, DType::F32) * 0.2).unwrap()).unwrap())
        .chain(std::iter::once(Var::ones(dim, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let input = Var::from_tensor(&randn(&[2, 5, dim], 30, DType::F32)).unwrap();
    let g = randn(&[2, 5, dim], 31, DType::F32);
    let run = |x: &Tensor| block(x, &vars[0], &vars[1], &vars[2], &vars[3]);
    // plain: two stacked blocks
    let y = run(&run(&input).unwrap()).unwrap();
    let plain = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    // recomputed: the same two blocks, each through `recompute`
    let sink = GradSink::new();
    let vs = vars.clone();
    let f = move |x: &Tensor| block(x, &vs[0], &vs[1], &vs[2], &vs[3]);
    let h = recompute(&input, &vars, &sink, f.clone()).unwrap();
    let y2 = recompute(&h, &vars, &sink, f).unwrap();
    assert_close(&y2, &y, 1e-6, "recomputed output");
    let mut grads = (&y2 * &g).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&vars[0]).is_none(), "parameter gradients arrive only through the sink");
    assert_eq!(sink.len(), 4);
    sink.merge_into(&mut grads).unwrap();
    assert!(sink.is_empty());
    for (i, v) in vars.iter().enumerate() {
        assert_close(grads.get(v).unwrap(), plain.get(v).unwrap(), 1e-5, &format!("param {i} grad"));
    }
    assert_close(grads.get(&input).unwrap(), plain.get(&input).unwrap(), 1e-5, "input grad");
}

#[test]
fn lora_linear_matches_composed_with_dropout() {
    // x [2, 5, 24] -> out 16, rank 4, with a frozen bias; the reference is the adapter term
    // written with candle's ops (the composed path PEFT's fixtures check), same masks.
    let (w, bias) = (randn(&[16, 24], 40, DType::F32), randn(&[16], 41, DType::F32));
    let (x, a, b) = (randn(&[2, 5, 24], 42, DType::F32), randn(&[4, 24], 43, DType::F32), randn(&[16, 4], 44, DType::F32));
    let g = randn(&[2, 5, 16], 45, DType::F32);
    let scaling = 0.75;
    for (p, dtype, tol) in [(0.0, DType::F32, 1e-6), (0.3, DType::F32, 1e-6), (0.3, DType::BF16, 2e-2)] {
        let dropout = DropoutStream::new(p, 7).next().map(|d| (d, 5));
        let (w, bias) = (w.to_dtype(dtype).unwrap(), bias.to_dtype(dtype).unwrap());
        let cast = |t: &Tensor| t.to_dtype(dtype);
        let fused = |t: &[Tensor]| {
            let (a, b) = (cast(&t[1])?, cast(&t[2])?);
            lora_linear(&cast(&t[0])?, &w, Some(&bias), Adapter { a: &a, b: &b, scaling, dropout })
        };
        let composed = |t: &[Tensor]| {
            let x = cast(&t[0])?;
            let dropped = match dropout {
                Some((d, site)) => d.apply(&x, site)?,
                None => x.clone(),
            };
            let delta = ops::linear(&ops::linear(&dropped, &cast(&t[1])?, None)?, &cast(&t[2])?, None)?.affine(scaling, 0.0)?;
            ops::linear(&x, &w, Some(&bias))? + delta
        };
        let (yf, gf) = value_and_grads(&[&x, &a, &b], &g, fused);
        let (yc, gc) = value_and_grads(&[&x, &a, &b], &g, composed);
        let what = format!("{dtype:?} dropout {p}");
        assert_close(&yf, &yc, tol, &format!("{what} y"));
        for (i, name) in ["dx", "dA", "dB"].iter().enumerate() {
            assert_close(&gf[i], &gc[i], tol, &format!("{what} {name}"));
        }
        if p > 0.0 && dtype == DType::F32 {
            let no_dropout = |t: &[Tensor]| lora_linear(&t[0], &w, Some(&bias), Adapter { a: &t[1], b: &t[2], scaling, dropout: None });
            let (y0, g0) = value_and_grads(&[&x, &a, &b], &g, no_dropout);
            assert!(common::rel_err(&y0, &yf) > 1e-2 && common::rel_err(&g0[1], &gf[1]) > 1e-2, "the dropout masks act");
        }
    }

    // An input that depends on no variable (frozen embeddings) gets no gradient; A and B
    // get the same ones.
    let (va, vb) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
    let dropout = DropoutStream::new(0.3, 7).next().map(|d| (d, 5));
    let y = lora_linear(&x, &w, Some(&bias), Adapter { a: va.as_tensor(), b: vb.as_tensor(), scaling, dropout }).unwrap();
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "a frozen input keeps no gradient");
    let fused = |t: &[Tensor]| lora_linear(&t[0], &w, Some(&bias), Adapter { a: &t[1], b: &t[2], scaling, dropout });
    let (_, tracked) = value_and_grads(&[&x, &a, &b], &g, fused);
    assert_close(grads.get(&va).unwrap(), &tracked[1], 0.0, "dA with a frozen input");
    assert_close(grads.get(&vb).unwrap(), &tracked[2], 0.0, "dB with a frozen input");

    let trained_w = Var::from_tensor(&w).unwrap();
    let err = lora_linear(&x, trained_w.as_tensor(), None, Adapter { a: &a, b: &b, scaling, dropout: None }).unwrap_err();
    assert!(err.to_string().contains("must be frozen"), "{err}");
}

#[test]
fn kernel_mode_parses() {
    assert_eq!("fused".parse::<KernelMode>().unwrap(), KernelMode::Fused);
    assert_eq!(KernelMode::default(), KernelMode::Composed);
    let err = "fast".parse::<KernelMode>().unwrap_err().to_string();
    assert!(err.contains("composed"), "{err}");
    let m: KernelMode = serde_yaml::from_str("fused").unwrap();
    assert_eq!(m, KernelMode::Fused);
}

/// One decoder layer written against `kernels::dispatch`, run in both modes: the fused path
/// must reproduce the model's composed ops, values and every gradient.
#[test]
fn dispatch_layer_fused_matches_composed() {
    use cpt::kernels::dispatch::FusedAttention;
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 4e-2)] {
        let layer = common::TinyLayer::new(dtype, &Device::Cpu);
        let (lc, gc) = layer.loss_and_grads(KernelMode::Composed, FusedAttention::Flash);
        for kernel in [FusedAttention::Flash, FusedAttention::Blocked { q_block: 8 }] {
            let (lf, gf) = layer.loss_and_grads(KernelMode::Fused, kernel);
            assert_close(&lf, &lc, tol, &format!("{dtype:?} {kernel:?} layer loss"));
            for (i, (a, c)) in gf.iter().zip(&gc).enumerate() {
                assert_close(a, c, tol, &format!("{dtype:?} {kernel:?} layer gradient of input {i}"));
            }
        }
    }
}

#[test]
fn device_selection() {
    use cpt::kernels::device_info::{describe, select};
    assert!(select("cpu").unwrap().is_cpu());
    assert!(describe(&Device::Cpu).unwrap().starts_with("cpu ("));
    let err = select("gpu7").unwrap_err().to_string();
    assert!(err.contains("expected cpu, auto"), "{err}");
    if !candle_core::utils::cuda_is_available() {
        assert!(select("cuda:0").unwrap_err().to_string().contains("--features cuda"));
        assert!(select("auto").unwrap().is_cpu());
    }
}

/// Loss and every parameter gradient of a whole `CausalLm` under `kernels`, on packed rows
/// (two documents in row 0), with the recomputed layers' gradients merged.
fn model_loss_and_grads(model: &mut cpt::model::CausalLm, kernels: cpt::kernels::KernelSettings) -> (Tensor, Vec<(String, Tensor)>) {
    use cpt::model::Packing;
    model.set_kernels(kernels).unwrap();
    let (b, t) = (2, 24);
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..b * (t + 1)).map(|i| (i as u32 * 7919 + 13) % vocab).collect();
    let all = Tensor::from_vec(ids, (b, t + 1), &Device::Cpu).unwrap();
    let (inputs, targets) = (all.narrow(1, 0, t).unwrap(), all.narrow(1, 1, t).unwrap());
    let packing = Packing::from_doc_starts(&[vec![0, 9], vec![0]], t, &Device::Cpu).unwrap();
    let sink = GradSink::new();
    let nll = model.token_nll(&inputs, &targets, Some(&packing), Some(&sink)).unwrap();
    let loss = nll.mean_all().unwrap();
    let mut grads = loss.backward().unwrap();
    sink.merge_into(&mut grads).unwrap();
    let named = model
        .named_parameters()
        .iter()
        .map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient for {n}")).clone()))
        .collect();
    (nll, named)
}

#[test]
fn whole_model_kernels_and_recomputation_match_the_composed_model() {
    use cpt::kernels::dispatch::FusedAttention;
    use cpt::kernels::KernelSettings;
    // Qwen2 (q/k/v biases), GQA 4:2, head dim 16, untied head, 2 layers.
    let config = cpt::model::ModelConfig::from_json_str(
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":96,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":101,
        "rms_norm_eps":1e-6,"rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":false}"#,
    )
    .unwrap();
    let mut model = cpt::model::CausalLm::new_random(config, 5, &Device::Cpu, DType::F32).unwrap();
    let composed = KernelSettings::default();
    let (nll_ref, grads_ref) = model_loss_and_grads(&mut model, composed);

    let cases = [
        (KernelSettings { recompute: true, ..composed }, 0.0),
        (KernelSettings { mode: KernelMode::Fused, ce_chunk: 32, ..composed }, 2e-5),
        (KernelSettings { mode: KernelMode::Fused, recompute: true, ce_chunk: 101, ..composed }, 2e-5),
        (KernelSettings { mode: KernelMode::Fused, attention: FusedAttention::Blocked { q_block: 5 }, recompute: true, ce_chunk: 7 }, 2e-5),
    ];
    for (kernels, tol) in cases {
        let what = kernels.describe();
        let (nll, grads) = model_loss_and_grads(&mut model, kernels);
        assert_close(&nll, &nll_ref, tol, &format!("{what}: per-token loss"));
        assert_eq!(grads.len(), grads_ref.len());
        for ((name, g), (_, g_ref)) in grads.iter().zip(&grads_ref) {
            assert_close(g, g_ref, tol.max(1e-7) * 5.0, &format!("{what}: gradient of {name}"));
        }
    }
}

#[test]
fn model_forward_logits_follow_the_kernel_mode() {
    use cpt::kernels::KernelSettings;
    let config = cpt::model::ModelConfig::from_json_str(
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":50,
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let mut model = cpt::model::CausalLm::new_random(config, 1, &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::from_vec((0..30u32).map(|i| i * 3 % 50).collect::<Vec<_>>(), (2, 15), &Device::Cpu).unwrap();
    let composed = model.forward(&ids, None).unwrap();
    // token_nll is the loss of forward's logits.
    let targets = ids.affine(1.0, 1.0).unwrap().to_dtype(DType::U32).unwrap();
    let from_logits = cpt::model::token_nll(&composed, &targets).unwrap();
    assert_close(&model.token_nll(&ids, &targets, None, None).unwrap(), &from_logits, 0.0, "token_nll");
    // The no-grad forms give the same numbers and keep no graph.
    let no_grad = model.forward_no_grad(&ids, None).unwrap();
    assert_close(&no_grad, &composed, 0.0, "forward_no_grad");
    assert!(no_grad.sum_all().unwrap().backward().unwrap().get(model.named_parameters()[0].1.as_tensor()).is_none());
    assert_close(&model.token_nll_no_grad(&ids, &targets, None).unwrap(), &from_logits, 0.0, "token_nll_no_grad");
    model.set_kernels(KernelSettings { mode: KernelMode::Fused, ..Default::default() }).unwrap();
    let fused = model.forward(&ids, None).unwrap();
    assert_close(&fused, &composed, 1e-5, "fused logits");
    assert!(model.set_kernels(KernelSettings { ce_chunk: 0, ..Default::default() }).is_err());
}

/// Exact resume needs gradients that are bit-identical from run to run: reductions over rows
/// must not depend on how the thread pool splits the work.
#[test]
fn rms_norm_weight_gradient_is_deterministic() {
    let x = randn(&[4099, 96], 80, DType::F32);
    let w = randn(&[96], 81, DType::F32);
    let g = randn(&[4099, 96], 82, DType::F32);
    let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let first = bits(&value_and_grads(&[&x, &w], &g, |p| rms_norm(&p[0], &p[1], 1e-5)).1[1]);
    for _ in 0..30 {
        let again = bits(&value_and_grads(&[&x, &w], &g, |p| rms_norm(&p[0], &p[1], 1e-5)).1[1]);
        assert!(again == first, "the RMSNorm weight gradient changed between identical runs");
    }
}

/// The bits of an f32 tensor (so -0.0 and +0.0 differ, and NaNs compare).
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn token_nll_cpu_op_has_the_bits_of_the_composed_loss() {
    // Wide logits (exp underflows to 0 in places), ties for the maximum, and an upstream
    // gradient with positive, negative and zero weights.
    let (b, t, v) = (3, 5, 37);
    let mut logits = (randn(&[b, t, v], 11, DType::F32) * 60.0).unwrap().to_vec3::<f32>().unwrap();
    logits[0][0][3] = 90.0;
    logits[0][0][9] = 90.0;
    logits[1][2] = vec![0.5; v];
    // One logit far above the rest: exp(x - max) is exactly 0 elsewhere in the row, and the
    // row's weight is negative, so the gradient's zeros must come out as +0 as they do in
    // candle's accumulation.
    logits[2][1][0] = 500.0;
    let logits = Tensor::new(logits, &Device::Cpu).unwrap();
    let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + 3) % v as u32).collect();
    let mut targets = Tensor::from_vec(targets, (b, t), &Device::Cpu).unwrap();
    targets = targets.slice_assign(&[0..1, 0..1], &Tensor::new(&[[9u32]], &Device::Cpu).unwrap()).unwrap();
    let weights: Vec<f32> = (0..b * t).map(|i| [1.0 / 15.0, -0.25, 0.0, 2.5, -1e-3][i % 5]).collect();
    let weights = Tensor::from_vec(weights, (b, t), &Device::Cpu).unwrap();

    // 0: the composition, 1: the CPU op, 2: the CPU op over [B*T, V] rows.
    let run = |variant: usize| {
        let x = Var::from_tensor(&logits).unwrap();
        let nll = match variant {
            0 => cpt::model::loss::token_nll_composed(x.as_tensor(), &targets).unwrap(),
            1 => cpt::model::token_nll(x.as_tensor(), &targets).unwrap(),
            _ => {
                let rows = x.as_tensor().reshape((b * t, v)).unwrap();
                let nll = cpt::model::loss::token_nll_rows(&rows, &targets.flatten_all().unwrap()).unwrap();
                nll.reshape((b, t)).unwrap()
            }
        };
        let loss = (nll.clone() * &weights).unwrap().sum_all().unwrap();
        let first = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        // A second backward over the same graph gives the same gradient.
        let second = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        (nll, first, second)
    };
    let (nll_c, grad_c, again_c) = run(0);
    for variant in [1, 2] {
        let (nll_f, grad_f, again_f) = run(variant);
        assert_eq!(bits(&nll_f), bits(&nll_c), "token NLL ({variant})");
        assert_eq!(bits(&grad_f), bits(&grad_c), "gradient of the logits ({variant})");
        assert_eq!(bits(&again_f), bits(&again_c), "gradient of a second backward ({variant})");
    }
    assert!(bits(&grad_c).iter().any(|&x| x == 0), "the case has exactly-zero gradients");
}

#[test]
fn masked_softmax_cpu_op_has_the_bits_of_the_composed_softmax() {
    // Attention scores with ties for the maximum, a row where one score dominates (exp is
    // exactly 0 elsewhere), under a causal -inf mask [T, S] and a document mask
    // [B, 1, T, S] of -1e30, and an upstream gradient with positive, negative and zero weights.
    let (b, h, t) = (2, 3, 7);
    let mut flat = (randn(&[b * h * t, t], 5, DType::F32) * 8.0).unwrap().to_vec2::<f32>().unwrap();
    flat[6][..4].copy_from_slice(&[3.0, 3.0, 3.0, 3.0]);
    flat[13][0] = 300.0;
    flat[20] = vec![0.25; t];
    let scores = Tensor::new(flat, &Device::Cpu).unwrap().reshape((b, h, t, t)).unwrap();
    let weights = (randn(&[b, h, t, t], 9, DType::F32) * 2.0).unwrap();
    let keep = randn(&[b, h, t, t], 10, DType::F32).ge(-0.5).unwrap().to_dtype(DType::F32).unwrap();
    let weights = (weights * keep).unwrap();
    let causal = ops::causal_mask(t, &Device::Cpu).unwrap();
    let segments = Tensor::new(&[[0u32, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 2, 2, 2]], &Device::Cpu).unwrap();
    let document = ops::document_mask(&segments).unwrap();

    for (name, mask) in [("causal", &causal), ("document", &document)] {
        // 0: the composition, 1: the CPU op.
        let run = |variant: usize| {
            let x = Var::from_tensor(&scores).unwrap();
            let probs = match variant {
                0 => ops::masked_softmax_composed(x.as_tensor(), mask).unwrap(),
                _ => ops::masked_softmax(x.as_tensor(), mask).unwrap(),
            };
            let loss = (probs.clone() * &weights).unwrap().sum_all().unwrap();
            let first = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            // A second backward over the same graph gives the same gradient.
            let second = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            (probs, first, second)
        };
        let (p_c, grad_c, again_c) = run(0);
        let (p_f, grad_f, again_f) = run(1);
        assert_eq!(bits(&p_f), bits(&p_c), "{name}: probabilities");
        assert_eq!(bits(&grad_f), bits(&grad_c), "{name}: gradient of the scores");
        assert_eq!(bits(&again_f), bits(&again_c), "{name}: gradient of a second backward");
        assert_eq!(bits(&again_c), bits(&grad_c), "{name}: the composition's second backward");
        assert!(bits(&grad_c).iter().any(|&x| x == 0), "{name}: the case has exactly-zero gradients");
    }
}
