//! Packed sequences: several documents in one row of a batch, separated by a document mask.
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// Per-token position (restarting at 0 at each document start) and document index, [B, T] u32.
#[derive(Debug, Clone)]
pub struct Packing {
    pub positions: Tensor,
    pub segments: Tensor,
}

impl Packing {
    /// `doc_starts[b]` lists the offsets in row b where a document begins (0 first, increasing,
    /// each < `seq_len`). A row without 0 is treated as if it started a document at 0.
    pub fn from_doc_starts(
        doc_starts: &[Vec<u32>],
        seq_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let rows = doc_starts.len();
        let mut positions = Vec::with_capacity(rows * seq_len);
        let mut segments = Vec::with_capacity(rows * seq_len);
        for (row, starts) in doc_starts.iter().enumerate() {
            let mut prev: Option<u32> = None;
            for &s in starts {
                if s as usize >= seq_len {
                    bail!("packing: row {row} has document start {s} outside the sequence length {seq_len}");
                }
                if prev.is_some_and(|p| s <= p) {
                    bail!("packing: row {row} document starts are not strictly increasing: {starts:?}");
                }
                prev = Some(s);
            }
            let mut seg = 0u32;
            let mut doc_begin = 0u32;
            let mut next = starts.iter().copied().skip_while(|&s| s == 0).peekable();
            for i in 0..seq_len as u32 {
                if next.peek() == Some(&i) {
                    next.next();
                    seg += 1;
                    doc_begin = i;
                }
                positions.push(i - doc_begin);
                segments.push(seg);
            }
        }
        Ok(Self {
            positions: Tensor::from_vec(positions, (rows, seq_len), device)?,
            segments: Tensor::from_vec(segments, (rows, seq_len), device)?,
        })
    }
}
