# Sourced by the GPU scripts: puts the CUDA 13 libraries that ship with the PyTorch install
# (cuBLAS, cuRAND, NVRTC, cudart) on LD_LIBRARY_PATH; the driver provides libcuda.
#
#   source "$(dirname "$0")/cuda_libs.sh"
cpt_cuda_libdirs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for pattern in ("nvidia/**/lib*.so*", "torch/lib/lib*.so*"):
        for f in glob.glob(os.path.join(sp, pattern), recursive=True):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$cpt_cuda_libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
