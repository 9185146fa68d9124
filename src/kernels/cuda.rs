//! Launch glue for the PTX modules that `build.rs` compiles from `src/kernels/cuda/*.cu`.
//!
//! Kernels take raw device pointers (`u64`) so one launch helper serves every dtype; the
//! extern "C" entry points are suffixed by dtype (`_f32`, `_bf16`, `_f16`).
//! Device pointers are read without holding cudarc's `SyncOnDrop` guards across the launch:
//! candle runs every op of a device on one stream, so stream order alone orders these
//! kernels against the producers and consumers of their buffers.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor};

pub(crate) struct Module {
    name: &'static str,
    ptx: &'static str,
}

pub(crate) const ATTENTION: Module =
    Module { name: "cpt_attention", ptx: include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")) };
pub(crate) const ATTENTION_BLOCKED: Module = Module {
    name: "cpt_attention_blocked",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/attention_blocked.ptx")),
};
pub(crate) const RMSNORM: Module =
    Module { name: "cpt_rmsnorm", ptx: include_str!(concat!(env!("OUT_DIR"), "/rmsnorm.ptx")) };
pub(crate) const ELEMENTWISE: Module =
    Module { name: "cpt_elementwise", ptx: include_str!(concat!(env!("OUT_DIR"), "/elementwise.ptx")) };
pub(crate) const ADAMW: Module =
    Module { name: "cpt_adamw", ptx: include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx")) };

/// One kernel argument, owned so the launch builder can borrow it for the launch.
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// The dtype suffix of a kernel entry point.
pub(crate) fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => bail!("no CUDA kernel for dtype {other:?} (expected f32, bf16 or f16)"),
    })
}

/// Launches `module::name` on the device's stream.
pub(crate) fn launch(dev: &CudaDevice, module: &Module, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    let func = dev.get_or_load_custom_func(name, module.name, module.ptx)?;
    let mut builder = func.builder();
    for arg in args {
        match arg {
            Arg::Ptr(v) => builder.arg(v),
            Arg::I32(v) => builder.arg(v),
            Arg::I64(v) => builder.arg(v),
            Arg::F32(v) => builder.arg(v),
        };
    }
    // SAFETY: the argument lists match the extern "C" signatures in src/kernels/cuda/*.cu,
    // and every pointer comes from a live buffer of the size the kernel indexes.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(())
}

/// The device address of a contiguous view (its start offset applied).
pub(crate) fn ptr(storage: &CudaStorage, layout: &Layout) -> Result<Arg> {
    let Some((start, _)) = layout.contiguous_offsets() else {
        bail!("CUDA kernel input must be contiguous")
    };
    let stream = storage.device().cuda_stream();
    let base = match &storage.slice {
        CudaStorageSlice::F32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::BF16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::F16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U8(s) => s.device_ptr(&stream).0,
        _ => bail!("no CUDA kernel for dtype {:?}", storage.dtype()),
    };
    Ok(Arg::Ptr(base + (start * storage.dtype().size_in_bytes()) as u64))
}

/// The device address of a whole (freshly allocated) storage.
pub(crate) fn ptr_all(storage: &CudaStorage) -> Result<Arg> {
    let n = storage_len(storage);
    ptr(storage, &Layout::contiguous(n))
}

fn storage_len(storage: &CudaStorage) -> usize {
    match &storage.slice {
        CudaStorageSlice::F32(s) => s.len(),
        CudaStorageSlice::BF16(s) => s.len(),
        CudaStorageSlice::F16(s) => s.len(),
        CudaStorageSlice::U32(s) => s.len(),
        CudaStorageSlice::U8(s) => s.len(),
        _ => 0,
    }
}

/// A zero-filled buffer of `n` elements.
pub(crate) fn zeros(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    let n = n.max(1);
    let slice = match dtype {
        DType::F32 => CudaStorageSlice::F32(dev.alloc_zeros::<f32>(n)?),
        DType::BF16 => CudaStorageSlice::BF16(dev.alloc_zeros::<half::bf16>(n)?),
        DType::F16 => CudaStorageSlice::F16(dev.alloc_zeros::<half::f16>(n)?),
        DType::U32 => CudaStorageSlice::U32(dev.alloc_zeros::<u32>(n)?),
        other => bail!("no CUDA buffer for dtype {other:?}"),
    };
    Ok(CudaStorage { slice, device: dev.clone() })
}

/// Runs `f` on the CUDA storage of a tensor an op carries (rather than receives as argument).
pub(crate) fn with_storage<R>(t: &Tensor, what: &str, f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f(s, layout),
        _ => bail!("{what}: expected a CUDA tensor"),
    }
}

/// A 1-D launch covering `n` items with a grid-stride loop.
pub(crate) fn grid_1d(n: usize, threads: u32) -> LaunchConfig {
    let blocks = n.div_ceil(threads as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The device address of a whole typed slice (kernel tables uploaded from the host).
pub(crate) fn slice_ptr<T>(dev: &CudaDevice, slice: &candle_core::cuda_backend::cudarc::driver::CudaSlice<T>) -> Arg {
    let stream = dev.cuda_stream();
    let (ptr, _record) = slice.device_ptr(&stream);
    Arg::Ptr(ptr)
}
