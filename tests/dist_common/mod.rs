//! Parameters, gradients and optimiser settings shared by the tests of the collective
//! engines (`dist_comm` over MPI, `dist_nccl` over NCCL).
#![allow(dead_code)] // each test binary uses some of them

use candle_core::{Device, Tensor, Var};
use cpt::train::optim::{Algorithm, Grads, OptimizerSettings};

pub fn settings() -> OptimizerSettings {
    OptimizerSettings { algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 }, weight_decay: 0.1, decay_embeddings: false }
}

/// Parameters of the given shapes with fixed, varied values.
pub fn params(shapes: &[(String, Vec<usize>)], dev: &Device) -> Vec<(String, Var)> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let numel: usize = s.iter().product();
            let v: Vec<f32> = (0..numel).map(|k| ((k * 31 + i * 17) % 97) as f32 / 97.0 - 0.5).collect();
            (n.clone(), Var::from_tensor(&Tensor::from_vec(v, s.as_slice(), dev).unwrap()).unwrap())
        })
        .collect()
}

/// Rank `rank`'s gradients at `step` (a different set per rank, as from different data).
pub fn grads(shapes: &[(String, Vec<usize>)], dev: &Device, rank: usize, step: usize) -> Grads {
    Grads::from_tensors(
        shapes
            .iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let numel: usize = s.iter().product();
                let g: Vec<f32> = (0..numel).map(|k| ((k * 13 + i * 7 + step * 5 + rank * 11) % 23) as f32 / 23.0 - 0.4).collect();
                (n.clone(), Some(Tensor::from_vec(g, s.as_slice(), dev).unwrap()))
            })
            .collect(),
    )
}

/// Every parameter's values, flattened and concatenated.
pub fn flat(params: &[(String, Var)]) -> Vec<f32> {
    params.iter().flat_map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}
