// RMSNorm forward and backward, one block per row, statistics in f32.
//   y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)
//   dx = rstd * g * w - x * rstd^3 * sum(g * w * x) / n
//   dw = sum over rows of g * x * rstd
#include "common.cuh"

template <typename T>
__device__ void rmsnorm_fwd(const T* x, const T* w, T* y, int cols, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) { float v = to_f32(xr[c]); ss += v * v; }
  const float rstd = rsqrtf(block_sum(ss) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    yr[c] = from_f32<T>(to_f32(xr[c]) * rstd * to_f32(w[c]));
}

template <typename T>
__device__ void rmsnorm_bwd_dx(const T* x, const T* w, const T* g, T* dx, int cols, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * cols;
  const T* gr = g + row * cols;
  T* dxr = dx + row * cols;
  float ss = 0.f, dot = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float xv = to_f32(xr[c]);
    ss += xv * xv;
    dot += to_f32(gr[c]) * to_f32(w[c]) * xv;
  }
  ss = block_sum(ss);
  dot = block_sum(dot);
  const float rstd = rsqrtf(ss / cols + eps);
  const float coef = rstd * rstd * rstd * dot / cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    dxr[c] = from_f32<T>(rstd * to_f32(gr[c]) * to_f32(w[c]) - to_f32(xr[c]) * coef);
}

// Grid-stride over rows; each block accumulates its rows' dw in shared memory (cols floats)
// and writes it to its own row of `partials` ([gridDim.x, cols]); rmsnorm_dw_sum then adds
// the rows in block order. No atomics: dw is bit-identical run to run (exact resume).
template <typename T>
__device__ void rmsnorm_bwd_dw(const T* x, const T* g, float* partials, int rows, int cols, float eps) {
  extern __shared__ float acc[];
  for (int c = threadIdx.x; c < cols; c += blockDim.x) acc[c] = 0.f;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + (size_t)row * cols;
    const T* gr = g + (size_t)row * cols;
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) { float v = to_f32(xr[c]); ss += v * v; }
    const float rstd = rsqrtf(block_sum(ss) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) acc[c] += to_f32(gr[c]) * to_f32(xr[c]) * rstd;
  }
  float* out = partials + (size_t)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = acc[c];
}

// dw[c] = sum over b of partials[b, c], added in order b = 0, 1, ... (one thread per column).
extern "C" __global__ void rmsnorm_dw_sum(const float* partials, float* dw, int blocks, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.f;
  for (int b = 0; b < blocks; ++b) s += partials[(size_t)b * cols + c];
  dw[c] = s;
}

#define RMSNORM_ENTRY(T, S)                                                                         \
  extern "C" __global__ void rmsnorm_fwd_##S(const T* x, const T* w, T* y, int cols, float eps) { \
    rmsnorm_fwd<T>(x, w, y, cols, eps);                                                             \
  }                                                                                                 \
  extern "C" __global__ void rmsnorm_bwd_dx_##S(const T* x, const T* w, const T* g, T* dx, int cols, \
                                                float eps) {                                        \
    rmsnorm_bwd_dx<T>(x, w, g, dx, cols, eps);                                                      \
  }                                                                                                 \
  extern "C" __global__ void rmsnorm_bwd_dw_##S(const T* x, const T* g, float* partials, int rows,   \
                                                int cols, float eps) {                              \
    rmsnorm_bwd_dw<T>(x, g, partials, rows, cols, eps);                                             \
  }
CPT_FOR_EACH_DTYPE(RMSNORM_ENTRY)
