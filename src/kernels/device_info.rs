//! What a run prints at start: the device, and on a GPU its memory.

use candle_core::{Device, Result};

/// One line naming the device, e.g. `cuda:0 NVIDIA H100 80GB HBM3, 79.1 GiB total, 0.5 GiB used`
/// or `cpu (16 threads)`.
pub fn describe(device: &Device) -> Result<String> {
    match device {
        Device::Cpu => Ok(format!("cpu ({} threads)", rayon::current_num_threads())),
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            use candle_core::cuda_backend::WrapErr;
            let ctx = dev.cuda_stream().context().clone();
            let name = ctx.name().w()?;
            let (free, total) = ctx.mem_get_info().w()?;
            let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
            Ok(format!(
                "cuda:{} {name}, {:.1} GiB total, {:.1} GiB used",
                ctx.ordinal(),
                gib(total),
                gib(total - free)
            ))
        }
        other => Ok(format!("{other:?}")),
    }
}

/// Device memory in use (bytes) on a GPU, as the driver reports it (all processes); `None`
/// on CPU. Poll it after each step and keep the maximum for a peak.
pub fn memory_used_bytes(device: &Device) -> Result<Option<u64>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            use candle_core::cuda_backend::WrapErr;
            let (free, total) = dev.cuda_stream().context().mem_get_info().w()?;
            Ok(Some((total - free) as u64))
        }
        _ => Ok(None),
    }
}
