//! One adapter: y = W x + scaling · B (A dropout(x)), A `[r, in]`, B `[out, r]` (PEFT's
//! `lora_A` / `lora_B`), both f32 master `Var`s cast to the compute dtype per use. The
//! forward is `kernels::lora_linear`.
use candle_core::{DType, Device, Result, Tensor, Var};

use super::targets::Site;
use crate::util::rng::SplitMix64;

#[derive(Clone)]
pub struct LoraLinear {
    pub site: Site,
    pub a: Var,
    pub b: Var,
    pub scaling: f64,
}

impl LoraLinear {
    /// PEFT's initialisation: A Kaiming-uniform with a = sqrt(5) (torch's `nn.Linear`
    /// default, i.e. uniform in ±1/sqrt(in_features)), B zero, so the model starts unchanged.
    pub fn init(site: Site, in_features: usize, out_features: usize, rank: usize, scaling: f64, rng: &mut SplitMix64, device: &Device) -> Result<Self> {
        let bound = 1.0 / (in_features as f64).sqrt();
        let a: Vec<f32> = (0..rank * in_features).map(|_| ((2.0 * rng.next_unit() - 1.0) * bound) as f32).collect();
        let a = Tensor::from_vec(a, (rank, in_features), device)?;
        let b = Tensor::zeros((out_features, rank), DType::F32, device)?;
        Ok(Self { site, a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scaling })
    }

    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// scaling · B A in f32 (`[out, in]`): what merging adds to the base weight (PEFT's
    /// `get_delta_weight`).
    pub fn delta_weight(&self) -> Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())?.affine(self.scaling, 0.0)
    }
}
