//! safetensors checkpoints in Hugging Face layout: a single `model.safetensors`, or shards
//! listed by `model.safetensors.index.json`.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype as StDtype, SafeTensors, View};
use serde_json::json;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of a checkpoint directory, single file or shards.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("reading {}", index.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing object `weight_map`", index.display()))?;
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().with_context(|| {
                format!(
                    "{}: `weight_map.{tensor}` is not a file name",
                    index.display()
                )
            })?;
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
        files.sort();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for p in &paths {
            if !p.exists() {
                bail!(
                    "{} lists shard {} which does not exist",
                    index.display(),
                    p.display()
                );
            }
        }
        return Ok(paths);
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    bail!(
        "{} holds neither {SINGLE_FILE} nor {INDEX_FILE}",
        dir.display()
    )
}

/// Loads every tensor of a checkpoint directory onto the CPU, in its stored dtype.
pub fn load_safetensors_dir(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for path in checkpoint_files(dir)? {
        for (name, tensor) in load_safetensors_file(&path)? {
            if out.insert(name.clone(), tensor).is_some() {
                bail!(
                    "tensor `{name}` appears in more than one shard (again in {})",
                    path.display()
                );
            }
        }
    }
    Ok(out)
}

/// Loads one safetensors file onto the CPU (floating-point tensors only).
pub fn load_safetensors_file(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the map is read-only and dropped before returning; a checkpoint being
    // rewritten while we read it is outside what we can guard against.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let st = SafeTensors::deserialize(&mmap)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        match view.dtype() {
            StDtype::F32 | StDtype::BF16 | StDtype::F16 | StDtype::F64 => {}
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; only f32, bf16, f16 and f64 weights are supported",
                path.display()
            ),
        }
        let t = view
            .load(&Device::Cpu)
            .with_context(|| format!("{}: loading tensor `{name}`", path.display()))?;
        out.push((name, t));
    }
    Ok(out)
}

/// The dtype the weights of a checkpoint directory are stored in (bf16 or f16 if any tensor
/// of its first file is, else f32), read from the safetensors header only.
pub fn stored_dtype(dir: &Path) -> Result<DType> {
    let path = checkpoint_files(dir)?.into_iter().next().context("no weight files")?;
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: read-only map, dropped before returning.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&mmap).with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let dtypes: Vec<StDtype> = header.tensors().values().map(|info| info.dtype).collect();
    Ok(if dtypes.contains(&StDtype::BF16) {
        DType::BF16
    } else if dtypes.contains(&StDtype::F16) {
        DType::F16
    } else {
        DType::F32
    })
}

/// Parses a dtype name as used on the command line and in configs.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        other => bail!("unsupported dtype `{other}` (use f32, bf16 or f16)"),
    }
}

/// The transformers name of a dtype (`torch_dtype` in config.json).
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Tensor bytes ready to write, already converted to the stored dtype.
struct Bytes {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor, dtype: DType) -> Result<Bytes> {
    let shape = t.dims().to_vec();
    let t = t.to_dtype(dtype)?.to_device(&Device::Cpu)?.flatten_all()?;
    let (st_dtype, data): (StDtype, Vec<u8>) = match dtype {
        DType::F32 => (
            StDtype::F32,
            t.to_vec1::<f32>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            StDtype::BF16,
            t.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            StDtype::F16,
            t.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect(),
        ),
        other => bail!("cannot save weights as {other:?} (use f32, bf16 or f16)"),
    };
    Ok(Bytes {
        dtype: st_dtype,
        shape,
        data,
    })
}

/// Writes tensors as `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards
/// plus `model.safetensors.index.json` when they exceed `max_shard_bytes` (0: never shard).
/// Older weight files of either layout in `dir` are removed first, so that transformers
/// cannot pick up a stale one.
pub fn save_safetensors_dir(
    dir: &Path,
    tensors: &[(String, Tensor)],
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_old_weights(dir)?;

    // Greedy sharding in the given order, like transformers' `shard_checkpoint`.
    let elem = dtype.size_in_bytes() as u64;
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut current = 0u64;
    let mut total = 0u64;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let bytes = t.elem_count() as u64 * elem;
        total += bytes;
        let last = shards.last_mut().expect("at least one shard");
        if max_shard_bytes > 0 && !last.is_empty() && current + bytes > max_shard_bytes {
            shards.push(vec![i]);
            current = bytes;
        } else {
            last.push(i);
            current += bytes;
        }
    }

    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (k, members) in shards.iter().enumerate() {
        let file_name = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, n)
        };
        let members: Vec<(String, Tensor)> = members.iter().map(|&i| tensors[i].clone()).collect();
        for (name, _) in &members {
            weight_map.insert(name.clone(), file_name.clone());
        }
        save_safetensors_file(&dir.join(&file_name), &members, dtype)?;
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&index)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Writes `tensors` converted to `dtype` as one safetensors file (with the `format: pt`
/// metadata transformers and PEFT expect).
pub fn save_safetensors_file(path: &Path, tensors: &[(String, Tensor)], dtype: DType) -> Result<()> {
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let b = to_bytes(t, dtype).with_context(|| format!("converting tensor `{name}`"))?;
        data.push((name.clone(), b));
    }
    safetensors::serialize_to_file(data.iter().map(|(n, b)| (n.as_str(), b)), metadata, path)
        .with_context(|| format!("writing {}", path.display()))?;
    make_world_readable(path)
}

/// safetensors creates files readable by the owner only; checkpoints are meant to be shared.
fn make_world_readable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting permissions of {}", path.display()))?;
    }
    Ok(())
}

fn remove_old_weights(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_weights = name == SINGLE_FILE
            || name == INDEX_FILE
            || (name.starts_with("model-") && name.ends_with(".safetensors"));
        if is_weights {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing old {}", path.display()))?;
        }
    }
    Ok(())
}
