//! This rank's share of the global window stream.
//!
//! Every rank walks the same global stream (one sampler state, identical everywhere); of
//! each optimiser step's `world x k` windows, rank r trains on windows `[r*k, (r+1)*k)` and
//! passes over the rest without reading their tokens. So W ranks x A micro-batches see
//! exactly the windows one rank with W*A micro-batches sees, in the same steps, and a
//! checkpoint needs only one sampler state.
use anyhow::Result;

use super::sampler::{Sampler, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankSlice {
    pub rank: usize,
    pub world: usize,
}

impl RankSlice {
    /// The whole stream (one process).
    pub fn all() -> Self {
        Self { rank: 0, world: 1 }
    }

    /// This rank's `per_rank` windows of the next step, leaving the sampler after the whole
    /// step's `world x per_rank` windows.
    pub fn draw_step(&self, sampler: &mut Sampler, per_rank: usize) -> Result<Vec<Window>> {
        let per_rank = per_rank as u64;
        sampler.skip_windows(self.rank as u64 * per_rank)?;
        let mine = (0..per_rank).map(|_| sampler.next_window()).collect::<Result<Vec<_>>>()?;
        sampler.skip_windows((self.world - 1 - self.rank) as u64 * per_rank)?;
        Ok(mine)
    }

    /// Items `i` with `i % world == rank` (validation work split across ranks).
    pub fn owns(&self, i: usize) -> bool {
        i % self.world == self.rank
    }
}
