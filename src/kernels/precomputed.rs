//! The output of an op whose forward ran before the op was applied, outside candle's op
//! machinery (recomputed blocks, blocked attention): the op's forward hands it to candle
//! exactly once and drops it, so only the op's own output stays alive; the op's backward is
//! its own.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Storage, Tensor};

pub(crate) struct Precomputed {
    /// Names the op in errors.
    what: &'static str,
    out: Mutex<Option<Tensor>>,
}

impl Precomputed {
    /// `out` must be one fresh contiguous tensor (`.contiguous()` of a computed result).
    pub fn new(what: &'static str, out: Tensor) -> Self {
        Self { what, out: Mutex::new(Some(out)) }
    }

    fn take(&self) -> Result<Tensor> {
        let what = self.what;
        self.out
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{what}: poisoned")))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{what}: forward ran twice")))
    }

    /// The output as the CPU forward's result.
    pub fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        self.check_whole(layout)?;
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => bail!("{}: output on another device than the op's inputs", self.what),
        }
    }

    /// The output as the CUDA forward's result.
    #[cfg(feature = "cuda")]
    pub fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        self.check_whole(layout)?;
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => bail!("{}: output on another device than the op's inputs", self.what),
        }
    }

    /// The forward copies the whole storage, so the output must be exactly one buffer.
    fn check_whole(&self, l: &Layout) -> Result<()> {
        match l.contiguous_offsets() {
            Some((0, end)) if end == l.shape().elem_count() => Ok(()),
            _ => bail!("{}: output must be one fresh contiguous buffer", self.what),
        }
    }
}
