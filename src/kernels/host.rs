//! CPU-side helpers shared by the ops' CPU implementations: read a storage as f32, write
//! f32 results back in the caller's dtype. The fused CPU paths compute in f32 throughout,
//! as the CUDA kernels do, and round once on output.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

/// The elements of a contiguous storage view, converted to f32.
pub(crate) fn to_f32_vec(storage: &CpuStorage, layout: &Layout, what: &str) -> Result<Vec<f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor")
    };
    Ok(match storage {
        CpuStorage::F32(v) => v[start..end].to_vec(),
        CpuStorage::BF16(v) => v[start..end].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::F16(v) => v[start..end].iter().map(|x| x.to_f32()).collect(),
        other => bail!("{what}: unsupported dtype {:?} (expected f32, bf16 or f16)", other.dtype()),
    })
}

/// The elements of a contiguous u32 storage view.
pub(crate) fn to_u32_vec(storage: &CpuStorage, layout: &Layout, what: &str) -> Result<Vec<u32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor")
    };
    match storage {
        CpuStorage::U32(v) => Ok(v[start..end].to_vec()),
        other => bail!("{what}: expected dtype u32, got {:?}", other.dtype()),
    }
}

/// f32 results stored in `dtype`.
pub(crate) fn from_f32_vec(values: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::BF16 => CpuStorage::BF16(values.into_iter().map(half::bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(values.into_iter().map(half::f16::from_f32).collect()),
        other => bail!("unsupported dtype {other:?} (expected f32, bf16 or f16)"),
    })
}

/// A tensor's elements as f32, from whichever CPU storage it lives in (for tensors an op
/// carries in its struct rather than receiving as an argument).
pub(crate) fn tensor_f32_cpu(t: &Tensor, what: &str) -> Result<Vec<f32>> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => to_f32_vec(s, layout, what),
        _ => bail!("{what}: expected a CPU tensor"),
    }
}

/// A u32 tensor's elements, from CPU storage.
pub(crate) fn tensor_u32_cpu(t: &Tensor, what: &str) -> Result<Vec<u32>> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => to_u32_vec(s, layout, what),
        _ => bail!("{what}: expected a CPU tensor"),
    }
}

/// Fails unless `dtype` is one the kernels handle.
pub(crate) fn check_float(dtype: DType, what: &str) -> Result<()> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(()),
        other => bail!("{what}: unsupported dtype {other:?} (expected f32, bf16 or f16)"),
    }
}
