//! Sampler windows -> the tensors one forward/backward needs.
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

use crate::data::sampler::{Sampler, Window};
use crate::model::packing::Packing;

/// One micro-batch: inputs, targets and the document layout, plus which source each row
/// came from (a window is drawn from a single source, so per-source loss is exact).
pub struct MicroBatch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub packing: Packing,
    pub sources: Vec<usize>,
}

impl MicroBatch {
    /// `windows` must each hold `seq_len + 1` tokens (the last validation window may be
    /// shorter: use `from_windows_trimmed` for that).
    pub fn from_windows(windows: &[Window], seq_len: usize, device: &Device) -> Result<Self> {
        ensure!(!windows.is_empty(), "a micro-batch needs at least one window");
        let rows = windows.len();
        let mut inputs = Vec::with_capacity(rows * seq_len);
        let mut targets = Vec::with_capacity(rows * seq_len);
        let mut starts = Vec::with_capacity(rows);
        for w in windows {
            ensure!(
                w.tokens.len() == seq_len + 1,
                "window from source {} has {} tokens, expected seq_len + 1 = {}",
                w.source,
                w.tokens.len(),
                seq_len + 1
            );
            inputs.extend_from_slice(&w.tokens[..seq_len]);
            targets.extend_from_slice(&w.tokens[1..]);
            let row_starts: Vec<u32> = w.doc_starts.iter().copied().filter(|&s| (s as usize) < seq_len).collect();
            starts.push(row_starts);
        }
        Ok(Self {
            inputs: Tensor::from_vec(inputs, (rows, seq_len), device)?,
            targets: Tensor::from_vec(targets, (rows, seq_len), device)?,
            packing: Packing::from_doc_starts(&starts, seq_len, device)?,
            sources: windows.iter().map(|w| w.source).collect(),
        })
    }
}

/// The next `count` micro-batches of `micro_batch` windows each, drawn from the sampler in
/// order (one step's worth with `count = grad_accum`).
pub fn draw_micro_batches(sampler: &mut Sampler, count: usize, micro_batch: usize, device: &Device) -> Result<Vec<MicroBatch>> {
    let seq_len = sampler.seq_len();
    (0..count)
        .map(|_| {
            let windows = (0..micro_batch).map(|_| sampler.next_window()).collect::<Result<Vec<_>>>()?;
            MicroBatch::from_windows(&windows, seq_len, device)
        })
        .collect()
}

/// The topic of the document that token `pos` of window `w` lies in (None: unlabelled).
pub fn topic_at(w: &Window, pos: usize) -> Option<u16> {
    let doc = w.doc_starts.iter().rposition(|&s| s as usize <= pos)?;
    w.topics.get(doc).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shifted_inputs_and_topics_follow_documents() {
        let w = Window {
            source: 2,
            stage: 0,
            tokens: vec![10, 11, 12, 13, 14],
            doc_starts: vec![0, 2],
            topics: vec![Some(1), Some(4)],
        };
        let mb = MicroBatch::from_windows(&[w], 4, &Device::Cpu).unwrap();
        assert_eq!(mb.inputs.to_vec2::<u32>().unwrap(), vec![vec![10, 11, 12, 13]]);
        assert_eq!(mb.targets.to_vec2::<u32>().unwrap(), vec![vec![11, 12, 13, 14]]);
        assert_eq!(mb.packing.positions.to_vec2::<u32>().unwrap(), vec![vec![0, 1, 0, 1]]);
        assert_eq!(mb.sources, vec![2]);
    }

    #[test]
    fn topics_follow_documents() {
        let w = Window { source: 0, stage: 0, tokens: vec![0; 5], doc_starts: vec![0, 2], topics: vec![Some(1), None] };
        assert_eq!((0..5).map(|p| topic_at(&w, p)).collect::<Vec<_>>(), vec![Some(1), Some(1), None, None, None]);
    }

    #[test]
    fn short_window_is_an_error() {
        let w = Window { source: 0, stage: 0, tokens: vec![1, 2], doc_starts: vec![0], topics: vec![None] };
        assert!(MicroBatch::from_windows(&[w], 4, &Device::Cpu).is_err());
    }
}
