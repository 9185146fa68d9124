//! Held-out loss per source and per topic, computed with detached tensors (candle has no
//! no-grad mode: detaching keeps the forward from building a graph we would never use).
use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::data::rank_slice::RankSlice;
use crate::data::sampler::{Sampler, Window};
use crate::dist::comm::Comm;
use serde::{Deserialize, Serialize};
use crate::model::causal_lm::CausalLm;
use crate::model::packing::Packing;

use super::batch::topic_at;
use super::metrics::LossPpl;

/// Sums of NLL and token counts, keyed by name.
#[derive(Default, Serialize, Deserialize)]
struct Sums(BTreeMap<String, (f64, u64)>);

impl Sums {
    fn add(&mut self, key: &str, nll: f64, n: u64) {
        let e = self.0.entry(key.to_string()).or_insert((0.0, 0));
        e.0 += nll;
        e.1 += n;
    }
    fn means(self) -> BTreeMap<String, LossPpl> {
        self.0.into_iter().filter(|(_, (_, n))| *n > 0).map(|(k, (s, n))| (k, LossPpl::from_loss(s / n as f64))).collect()
    }
}

/// How validation work is split over the ranks of a run: each rank scores every
/// `world`-th group of windows, and the sums are merged (in rank order, so every rank gets
/// the same numbers). With ZeRO-3 each forward is a collective: ranks with fewer groups
/// run a forward whose result they discard, so all run equally many.
pub struct ValidationSplit<'a> {
    pub slice: RankSlice,
    pub comm: &'a Comm,
    pub collective_forward: bool,
}

impl ValidationSplit<'_> {
    /// One process: every group, nothing to merge.
    pub fn single(comm: &Comm) -> ValidationSplit<'_> {
        ValidationSplit { slice: RankSlice::all(), comm, collective_forward: false }
    }
}

/// Per-source and per-topic mean token loss on up to `max_windows` held-out windows of
/// every source.
pub fn validation_losses(
    model: &CausalLm,
    sampler: &Sampler,
    micro_batch: usize,
    max_windows: usize,
    split: &ValidationSplit<'_>,
) -> Result<(BTreeMap<String, LossPpl>, BTreeMap<String, LossPpl>)> {
    let device = model.device().clone();
    let names: Vec<String> = sampler.source_names().iter().map(|s| s.to_string()).collect();
    let (mut by_source, mut by_topic) = (Sums::default(), Sums::default());
    let mut all_groups: Vec<(usize, Vec<Window>)> = Vec::new();
    for (i, _) in names.iter().enumerate() {
        let windows: Vec<Window> = sampler.validation_windows(i).into_iter().take(max_windows).collect();
        // Full windows go through in micro-batches; a shorter last window on its own.
        let full = sampler.seq_len() + 1;
        let (long, short): (Vec<_>, Vec<_>) = windows.into_iter().partition(|w| w.tokens.len() == full);
        all_groups.extend(long.chunks(micro_batch.max(1)).map(|c| (i, c.to_vec())));
        all_groups.extend(short.into_iter().map(|w| (i, vec![w])));
    }
    let mut ran = 0;
    for (g, (i, group)) in all_groups.iter().enumerate() {
        if !split.slice.owns(g) {
            continue;
        }
        ran += 1;
        let per_token = window_nll(model, group, &device)?;
        for (w, nll) in group.iter().zip(per_token) {
            by_source.add(&names[*i], nll.iter().sum(), nll.len() as u64);
            for (pos, l) in nll.iter().enumerate() {
                if let Some(t) = topic_at(w, pos + 1).and_then(|t| sampler.topic_name(t)) {
                    by_topic.add(t, *l as f64, 1);
                }
            }
        }
    }
    if split.slice.world == 1 {
        return Ok((by_source.means(), by_topic.means()));
    }
    if split.collective_forward {
        let most = all_groups.len().div_ceil(split.slice.world);
        if let Some((_, first)) = all_groups.first() {
            for _ in ran..most {
                window_nll(model, first, &device)?;
            }
        }
    }
    let mine = serde_json::to_vec(&(&by_source, &by_topic))?;
    let (mut source, mut topic) = (Sums::default(), Sums::default());
    for bytes in split.comm.all_gather_vec(&mine)? {
        let (s, t): (Sums, Sums) = serde_json::from_slice(&bytes)?;
        for (k, (sum, n)) in s.0 {
            source.add(&k, sum, n);
        }
        for (k, (sum, n)) in t.0 {
            topic.add(&k, sum, n);
        }
    }
    Ok((source.means(), topic.means()))
}

/// Per-token NLL of each window's targets (all windows in `group` have equal length).
fn window_nll(model: &CausalLm, group: &[Window], device: &Device) -> Result<Vec<Vec<f64>>> {
    let t = group[0].tokens.len() - 1;
    let mut inputs = Vec::with_capacity(group.len() * t);
    let mut targets = Vec::with_capacity(group.len() * t);
    let mut starts = Vec::with_capacity(group.len());
    for w in group {
        inputs.extend_from_slice(&w.tokens[..t]);
        targets.extend_from_slice(&w.tokens[1..]);
        starts.push(w.doc_starts.iter().copied().filter(|&s| (s as usize) < t).collect());
    }
    let inputs = Tensor::from_vec(inputs, (group.len(), t), device)?;
    let targets = Tensor::from_vec(targets, (group.len(), t), device)?;
    let packing = Packing::from_doc_starts(&starts, t, device)?;
    let nll = model.token_nll_no_grad(&inputs, &targets, Some(&packing))?.to_dtype(candle_core::DType::F64)?;
    Ok(nll.to_vec2::<f64>()?)
}
