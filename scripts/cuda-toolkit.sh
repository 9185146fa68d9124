#!/usr/bin/env bash
# Builds `cpt` with the `cuda` and `nccl` features on a machine without a GPU or a CUDA
# install.
#
#  1. installs the CUDA 13.0 toolkit and NCCL from PyPI into a virtualenv (.cuda-venv/), with
#     nvvm pinned: a newer nvvm emits PTX that the 13.0 ptxas and the 13.0 driver reject;
#     the binary links the real libnccl.so.2 (at run time, the one of the GPU machine's
#     PyTorch install, which scripts/cuda_libs.sh puts on LD_LIBRARY_PATH);
#  2. makes link-time stub libraries for libcuda/cuBLAS/cuRAND/NVRTC (the real ones come
#     with the GPU machine's driver and PyTorch), linking the real libcudart;
#  3. runs `cargo build --release --features nccl` (which includes `cuda`; `--no-nccl` builds
#     `cuda` alone) into target-cuda/ and strips the binary
#     into target-cuda/gpu/, packed as target-cuda/gpu.tar.xz (copy or carry that archive to
#     the GPU machine).
#
# usage: scripts/cuda-toolkit.sh [--stubs-script PATH] [--tests] [--env] [--no-nccl]
#   --stubs-script  the stub generator (default: ../shared/tools/cuda-link-stubs.sh
#                   relative to the repository root, or $CPT_CUDA_LINK_STUBS)
#   --tests         also build the GPU test binaries (tests/kernels_cuda.rs, and with NCCL
#                   tests/dist_nccl.rs) and the GPU training benchmark into target-cuda/gpu/
#   --env           only set up toolkit and stubs, then print the environment to `eval`
#   --no-nccl       build without NCCL (one GPU only; no libnccl.so.2 needed at run time)
# Environment: CUDA_COMPUTE_CAP (default 90 = H100/H200), CUDAFORGE_THREADS (default 2).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
stubs_script=${CPT_CUDA_LINK_STUBS:-$root/../shared/tools/cuda-link-stubs.sh}
[ -f "$stubs_script" ] || [ ! -f "$root/shared/tools/cuda-link-stubs.sh" ] || stubs_script=$root/shared/tools/cuda-link-stubs.sh
build_tests=0
env_only=0
features=nccl
while [ $# -gt 0 ]; do
  case "$1" in
    --stubs-script) stubs_script=$2; shift 2 ;;
    --tests) build_tests=1; shift ;;
    --env) env_only=1; shift ;;
    --no-nccl) features=cuda; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

venv=$root/.cuda-venv
stub_dir=$root/.cuda-stubs
target=$root/target-cuda

# 1. toolkit (about 330 MB) and NCCL (about 250 MB); pins match the GPU machines' driver
#    (580, CUDA 13.0); NCCL 2.30 is the version of cudarc's default NCCL bindings
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nccl-cu13==2.30.7
nvidia_dir=$("$venv/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')
cu13=$nvidia_dir/cu13
[ -x "$cu13/bin/nvcc" ] || { echo "nvcc not found under $cu13/bin" >&2; exit 1; }
ln -sf libcudart.so.13 "$cu13/lib/libcudart.so"
nccl_so=$(find "$nvidia_dir" -name 'libnccl.so.2' | head -1)
[ -n "$nccl_so" ] || { echo "libnccl.so.2 not found under $nvidia_dir" >&2; exit 1; }
nccl_lib=$(dirname "$nccl_so")
ln -sf libnccl.so.2 "$nccl_lib/libnccl.so"
"$cu13/bin/nvcc" --version | grep -q "release 13.0" || { echo "expected nvcc 13.0" >&2; exit 1; }

# 2. link stubs (the generator reads cudarc's sources from the cargo registry)
(cd "$root" && cargo fetch -q)
[ -f "$stubs_script" ] || { echo "stub generator not found: $stubs_script (pass --stubs-script)" >&2; exit 1; }
bash "$stubs_script" "$stub_dir" "$cu13/lib/libcudart.so.13" > /dev/null

export PATH="$cu13/bin:$PATH"
export CUDA_HOME="$cu13" CUDA_PATH="$cu13" NVCC="$cu13/bin/nvcc"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
# Keep RUSTFLAGS identical between builds: changing it rebuilds every crate.
export RUSTFLAGS="-L $stub_dir -L $cu13/lib -L $nccl_lib"
export CARGO_TARGET_DIR="$target"

if [ "$env_only" = 1 ]; then
  for v in PATH CUDA_HOME CUDA_PATH NVCC CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION CUDAFORGE_THREADS RUSTFLAGS CARGO_TARGET_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

cd "$root"
mkdir -p "$target/gpu"
cargo build --release --features "$features" --bin cpt
strip -o "$target/gpu/cpt" "$target/release/cpt"
if [ "$build_tests" = 1 ]; then
  json=$(cargo test --release --features "$features" --test kernels_cuda --no-run --message-format=json)
  test_bin=$(printf '%s\n' "$json" | grep -o '"executable":"[^"]*kernels_cuda[^"]*"' | tail -1 | cut -d'"' -f4)
  strip -o "$target/gpu/kernels_cuda" "$test_bin"
  if [ "$features" = nccl ]; then
    json=$(cargo test --release --features nccl --test dist_nccl --no-run --message-format=json)
    test_bin=$(printf '%s\n' "$json" | grep -o '"executable":"[^"]*dist_nccl[^"]*"' | tail -1 | cut -d'"' -f4)
    strip -o "$target/gpu/dist_nccl" "$test_bin"
  fi
  cargo build --release --features "$features" --bench gpu_train_step
  bench_bin=$(ls -t "$target"/release/deps/gpu_train_step-* | grep -v '\.d$' | head -1)
  strip -o "$target/gpu/gpu_train_step" "$bench_bin"
fi
# One compressed archive of gpu/ (about a third of its size with xz) to carry to the GPU
# machine, where `tar xJf target-cuda/gpu.tar.xz -C target-cuda` unpacks it.
tar -C "$target" -cJf "$target/gpu.tar.xz" gpu
echo "built:"; ls -la "$target/gpu" "$target/gpu.tar.xz"
echo "NEEDED:"; readelf -d "$target/gpu/cpt" | grep NEEDED
