//! What a run prints at start: the device, and on a GPU its memory.

use candle_core::{bail, Device, Result};

/// The device a config names: `cpu`, `cuda` (GPU 0), `cuda:N`, or `auto` (GPU 0 when this
/// build has CUDA and a GPU answers, else the CPU).
pub fn select(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        _ => {
            let ordinal = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => n,
                    None => bail!("device `{name}`: expected cpu, auto, cuda or cuda:<index>"),
                },
                None => bail!("device `{name}`: expected cpu, auto, cuda or cuda:<index>"),
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("device `{name}`: this build of cpt has no CUDA support (build with --features cuda, see docs/cuda.md)")
            }
            Device::new_cuda(ordinal)
                .map_err(|e| candle_core::Error::Msg(format!("device `{name}`: opening GPU {ordinal}: {e}")))
        }
    }
}

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

/// Peak memory (bytes) of this process on `device` since the last [`reset_peak_memory`].
///
/// GPU: the high-water mark of this process's allocations. cudarc allocates from the
/// device's default stream-ordered pool (`cuMemAllocAsync`), whose `USED_MEM_HIGH` attribute
/// is this peak. CPU: the peak resident set size (Linux `VmHWM`), which also counts the
/// process's other memory (data, code). `None` where the system does not report it.
pub fn peak_memory_bytes(device: &Device) -> Result<Option<u64>> {
    match device {
        Device::Cpu => Ok(cpu::peak_resident_bytes()),
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute;
            let mut value: u64 = 0;
            let pool = pool::default_pool(dev)?;
            // SAFETY: the attribute is a u64 (cuuint64_t) written into `value`.
            pool::check(unsafe {
                candle_core::cuda_backend::cudarc::driver::sys::cuMemPoolGetAttribute(
                    pool,
                    CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut value as *mut u64 as *mut std::ffi::c_void,
                )
            })?;
            Ok(Some(value))
        }
        _ => Ok(None),
    }
}

/// Restarts [`peak_memory_bytes`] from the memory in use now.
pub fn reset_peak_memory(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => {
            cpu::reset_peak_resident();
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute;
            let mut zero: u64 = 0; // the only value the driver accepts: reset
            let pool = pool::default_pool(dev)?;
            // SAFETY: as above; the driver reads a u64.
            pool::check(unsafe {
                candle_core::cuda_backend::cudarc::driver::sys::cuMemPoolSetAttribute(
                    pool,
                    CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut zero as *mut u64 as *mut std::ffi::c_void,
                )
            })?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The peak resident set of this process, from procfs (Linux; elsewhere nothing).
mod cpu {
    /// `VmHWM` of `/proc/self/status`, in bytes.
    pub(super) fn peak_resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    }

    /// Writing 5 to `clear_refs` resets `VmHWM` to the current resident set (Linux 4.0+).
    /// Best effort: where it is refused, the peak stays the process's lifetime peak.
    pub(super) fn reset_peak_resident() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

#[cfg(feature = "cuda")]
mod pool {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, Result};

    pub(super) fn check(r: sys::CUresult) -> Result<()> {
        r.result().w()
    }

    pub(super) fn default_pool(dev: &CudaDevice) -> Result<sys::CUmemoryPool> {
        let stream = dev.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().w()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: `pool` receives the device's default pool handle.
        check(unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) })?;
        Ok(pool)
    }
}
