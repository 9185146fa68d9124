//! Seeded dropout on the adapters' inputs. A mask is a pure function of (run seed, draw,
//! adapted layer, element): a recomputed layer (`kernels.recompute`) draws exactly the mask
//! of its first forward, and a resumed run continues from the saved draw counter, so training
//! with dropout resumes bit for bit.
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use crate::util::rng::SplitMix64;

/// Elements per independently keyed chunk (masks are built in parallel, the same for any
/// thread count).
const CHUNK: usize = 1 << 14;

/// The dropout of one model: probability, seed, and how many training forwards drew masks.
#[derive(Debug)]
pub struct DropoutStream {
    p: f64,
    seed: u64,
    draws: AtomicU64,
}

impl DropoutStream {
    pub fn new(p: f64, seed: u64) -> Self {
        Self { p, seed, draws: AtomicU64::new(0) }
    }

    pub fn probability(&self) -> f64 {
        self.p
    }

    /// The masks of the next training forward (None without dropout).
    pub fn next(&self) -> Option<DropoutDraw> {
        if self.p == 0.0 {
            return None;
        }
        let draw = self.draws.fetch_add(1, Ordering::SeqCst);
        Some(DropoutDraw { p: self.p, key: SplitMix64::keyed(&[self.seed, draw]).next_u64() })
    }

    /// Training forwards so far: the state a checkpoint saves.
    pub fn draws(&self) -> u64 {
        self.draws.load(Ordering::SeqCst)
    }

    pub fn set_draws(&self, draws: u64) {
        self.draws.store(draws, Ordering::SeqCst);
    }
}

/// The masks of one forward.
#[derive(Debug, Clone, Copy)]
pub struct DropoutDraw {
    p: f64,
    key: u64,
}

impl DropoutDraw {
    /// `x` with each element zeroed with probability p and the rest scaled by 1/(1-p)
    /// (`torch.nn.Dropout`), the mask keyed by `site`.
    pub fn apply(&self, x: &Tensor, site: u64) -> Result<Tensor> {
        let n = x.elem_count();
        let scale = (1.0 / (1.0 - self.p)) as f32;
        // Drop when a uniform u32 falls below p * 2^32.
        let threshold = (self.p * 4_294_967_296.0) as u64;
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(CHUNK).enumerate().for_each(|(chunk, out)| {
            let mut rng = SplitMix64::keyed(&[self.key, site, chunk as u64]);
            for pair in out.chunks_mut(2) {
                let r = rng.next_u64();
                for (slot, bits) in pair.iter_mut().zip([r & 0xFFFF_FFFF, r >> 32]) {
                    *slot = if bits < threshold { 0.0 } else { scale };
                }
            }
        });
        let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?;
        x.mul(&mask)
    }
}
