//! Shared by the kernel tests: composed reference ops (chains of candle primitives that all
//! record a backward), gradient helpers, comparisons and the PyTorch fixture.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};

/// The PyTorch fixture, found from the working directory (a test binary run from the
/// repository root on another machine) or from the crate's source directory.
pub fn fixture() -> HashMap<String, Tensor> {
    const REL: &str = "tests/fixtures/kernels/reference.safetensors";
    let candidates = [std::path::PathBuf::from(REL), std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REL)];
    let path = candidates.iter().find(|p| p.exists()).expect("fixture made by scripts/kernels_fixtures.py");
    candle_core::safetensors::load(path, &Device::Cpu).expect("readable fixture")
}

pub fn get(f: &HashMap<String, Tensor>, name: &str) -> Tensor {
    f.get(name).unwrap_or_else(|| panic!("fixture tensor {name} missing")).clone()
}

/// Largest |a - b| divided by the largest |b| (1 if b is all zeros).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff.is_finite(), "non-finite values");
    diff / scale
}

pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
}

/// Runs `f` on variables made from `inputs`, backpropagates `sum(y * g)` and returns y and
/// the inputs' gradients.
pub fn value_and_grads(
    inputs: &[&Tensor],
    g: &Tensor,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let loss = (y.to_dtype(DType::F32).unwrap() * g.to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gs = ts.iter().map(|t| grads.get(t).expect("input received no gradient").clone()).collect();
    (y, gs)
}

pub fn randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    // Deterministic normal-ish values without a global RNG: sum of uniforms from an LCG.
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f32) / (1u64 << 31) as f32
    };
    let v: Vec<f32> = (0..n).map(|_| (0..4).map(|_| next()).sum::<f32>() - 2.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Softmax over the last dim from primitives (candle_nn's fused softmax has no backward).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Attention from primitives: repeated k/v, full score matrix, additive mask, f32 softmax.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, hq, t, _) = q.dims4()?;
    let hkv = k.dim(1)?;
    let rep = |x: &Tensor| -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        x.unsqueeze(2)?.broadcast_as((b, h, hq / hkv, t, d))?.reshape((b, hq, t, d))
    };
    let (k, v) = (rep(k)?, rep(v)?);
    let dtype = q.dtype();
    let scores = (q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)? * scale)?;
    let seg = segments.to_vec2::<u32>()?;
    let mut mask = vec![0f32; b * t * t];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..t {
                if j > i || seg[bi][j] != seg[bi][i] {
                    mask[(bi * t + i) * t + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    let mask = Tensor::from_vec(mask, (b, 1, t, t), q.device())?;
    let p = softmax(&scores.broadcast_add(&mask)?)?;
    p.matmul(&v.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let rstd = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    xf.broadcast_mul(&rstd)?.broadcast_mul(&w.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

/// x * cos + rotate_half(x) * sin with cos/sin `[B|1, T, D/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let xf = x.to_dtype(DType::F32)?;
    (xf.broadcast_mul(&cos)? + rot.to_dtype(DType::F32)?.broadcast_mul(&sin)?)?.to_dtype(x.dtype())
}

pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let af = a.to_dtype(DType::F32)?;
    let silu = (&af / (af.neg()?.exp()? + 1.0)?)?;
    (silu * b.to_dtype(DType::F32)?)?.to_dtype(a.dtype())
}

/// Per-token NLL from the full f32 logits.
pub fn cross_entropy(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = h.matmul(&w.t()?)?.to_dtype(DType::F32)?;
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &m)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.squeeze(1)
}

fn e<T>(r: anyhow::Result<T>) -> Result<T> {
    r.map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// A small decoder layer plus loss written against `cpt::kernels::dispatch` (packed rows,
/// GQA, RoPE, SwiGLU, chunked loss), with its inputs and parameters.
pub struct TinyLayer {
    pub inputs: Vec<Tensor>,
    packing: cpt::model::packing::Packing,
    targets: Tensor,
    inv_freq: Vec<f32>,
}

const B: usize = 2;
const T: usize = 20;
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = 8;
const INTER: usize = 48;
const VOCAB: usize = 40;

impl TinyLayer {
    pub fn new(dtype: DType, device: &Device) -> Self {
        use cpt::model::packing::Packing;
        let packing = Packing::from_doc_starts(&[vec![0, 7], vec![0]], T, device).unwrap();
        let inv_freq = (0..HD / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / HD as f32)).collect();
        let targets: Vec<u32> = (0..(B * T) as u32).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
        let targets = Tensor::from_vec(targets, (B, T), device).unwrap();
        let shapes: [&[usize]; 10] = [
            &[B, T, HIDDEN], &[HIDDEN], &[HEADS * HD, HIDDEN], &[KV * HD, HIDDEN], &[KV * HD, HIDDEN],
            &[HIDDEN, HEADS * HD], &[INTER, HIDDEN], &[INTER, HIDDEN], &[HIDDEN, INTER], &[VOCAB, HIDDEN],
        ];
        let inputs = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let x = randn(s, 100 + i as u64, DType::F32);
                let x = match i {
                    0 => x,
                    1 => x.affine(0.1, 1.0).unwrap(),
                    _ => (x * 0.2).unwrap(),
                };
                x.to_dtype(dtype).unwrap().to_device(device).unwrap()
            })
            .collect();
        Self { inputs, packing, targets, inv_freq }
    }

    fn forward(&self, mode: cpt::kernels::KernelMode, kernel: cpt::kernels::dispatch::FusedAttention, p: &[Tensor]) -> Result<Tensor> {
        use cpt::kernels::dispatch::{self, AttentionMask, Rope};
        let lin = |x: &Tensor, w: &Tensor| cpt::model::ops::linear(x, w, None);
        let split = |y: Tensor, n: usize| y.reshape((B, T, n, HD))?.transpose(1, 2)?.contiguous();
        let device = p[0].device();
        let rope = Rope::new(mode, &self.packing.positions, &self.inv_freq)?;
        let mask = AttentionMask::with_kernel(mode, kernel, Some(&self.packing.segments), T, device)?;
        let x = &p[0];
        let h = dispatch::rms_norm(mode, x, &p[1], 1e-5)?;
        let q = rope.apply(&split(lin(&h, &p[2])?, HEADS)?)?;
        let k = rope.apply(&split(lin(&h, &p[3])?, KV)?)?;
        let v = split(lin(&h, &p[4])?, KV)?;
        let a = dispatch::attention(&q, &k, &v, &mask)?.transpose(1, 2)?.reshape((B, T, HEADS * HD))?;
        let x = (x + lin(&a, &p[5])?)?;
        let m = dispatch::swiglu(mode, &lin(&x, &p[6])?, &lin(&x, &p[7])?)?;
        let x = (&x + lin(&m, &p[8])?)?;
        e(dispatch::token_nll_from_hidden(mode, &x, &p[9], &self.targets, 16))
    }

    /// Per-token loss and the gradients of every input and parameter (upstream gradient 1).
    pub fn loss_and_grads(
        &self,
        mode: cpt::kernels::KernelMode,
        kernel: cpt::kernels::dispatch::FusedAttention,
    ) -> (Tensor, Vec<Tensor>) {
        let refs: Vec<&Tensor> = self.inputs.iter().collect();
        let g = Tensor::ones((B, T), DType::F32, self.inputs[0].device()).unwrap();
        value_and_grads(&refs, &g, |p| self.forward(mode, kernel, p))
    }
}
