// Row kernels for blocked attention (src/kernels/attention_blocked.rs): cuBLAS computes the
// score slab S = Q_blk K^T of one query block against its visible key prefix; these kernels
// do everything between the matmuls in one pass each.
//
// Slab layout: rows = (b, kv head, group member, i) flattened, n = key prefix length columns.
// Query index of a row: q0 + row % len; its batch: row / (hg * len), hg = Hkv * group.
// Key j is visible to query i when j <= i and seg[b, j] == seg[b, i].
#include "common.cuh"
#include <math_constants.h>

struct Slab {
  int n, len, q0, hg, T;
  float scale;
};

__device__ __forceinline__ bool slab_visible(const uint32_t* seg, Slab s, long long row, int j) {
  const long long b = row / ((long long)s.hg * s.len);
  const int qi = s.q0 + (int)(row % s.len);
  return j <= qi && seg[b * s.T + j] == seg[b * s.T + qi];
}

// lse[row] = log(sum_j visible exp(scale * S[row, j])); one block per row.
template <typename T>
__device__ void attn_row_lse(const T* S, const uint32_t* seg, float* lse, Slab s) {
  const long long row = blockIdx.x;
  const T* sr = S + row * s.n;
  const long long b = row / ((long long)s.hg * s.len);
  const int qi = s.q0 + (int)(row % s.len);
  const uint32_t* sg = seg + b * s.T;
  const uint32_t seg_i = sg[qi];
  const int last = min(qi, s.n - 1);
  float m = -CUDART_INF_F;
  for (int j = threadIdx.x; j <= last; j += blockDim.x)
    if (sg[j] == seg_i) m = fmaxf(m, to_f32(sr[j]) * s.scale);
  // block max: per warp, then across warps
  __shared__ float wmax[32];
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) wmax[threadIdx.x >> 5] = m;
  __syncthreads();
  m = (threadIdx.x & 31) < (blockDim.x >> 5) ? wmax[threadIdx.x & 31] : -CUDART_INF_F;
  m = warp_max(m);
  float sum = 0.f;
  for (int j = threadIdx.x; j <= last; j += blockDim.x)
    if (sg[j] == seg_i) sum += __expf(to_f32(sr[j]) * s.scale - m);
  sum = block_sum(sum);
  if (threadIdx.x == 0) lse[row] = m + logf(sum);
}

// P[row, j] = visible ? exp(scale * S[row, j] - lse[row]) : 0
template <typename T>
__device__ void attn_probs(const T* S, const float* lse, const uint32_t* seg, T* P, Slab s, long long total) {
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total; idx += (long long)gridDim.x * blockDim.x) {
    const long long row = idx / s.n;
    const int j = idx % s.n;
    const bool vis = slab_visible(seg, s, row, j);
    P[idx] = from_f32<T>(vis ? __expf(to_f32(S[idx]) * s.scale - lse[row]) : 0.f);
  }
}

// dS[row, j] = visible ? P * (dP - delta[row]) * scale : 0, with P recomputed from S and lse.
template <typename T>
__device__ void attn_dscores(const T* S, const T* dP, const float* lse, const float* delta, const uint32_t* seg, T* dS,
                             Slab s, long long total) {
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total; idx += (long long)gridDim.x * blockDim.x) {
    const long long row = idx / s.n;
    const int j = idx % s.n;
    float v = 0.f;
    if (slab_visible(seg, s, row, j)) {
      const float p = __expf(to_f32(S[idx]) * s.scale - lse[row]);
      v = p * (to_f32(dP[idx]) - delta[row]) * s.scale;
    }
    dS[idx] = from_f32<T>(v);
  }
}

#define BLOCKED_ENTRY(T, S_)                                                                              \
  extern "C" __global__ void attn_row_lse_##S_(const T* S, const uint32_t* seg, float* lse, int n, int len, \
                                               int q0, int hg, int Tn, float scale) {                     \
    attn_row_lse<T>(S, seg, lse, Slab{n, len, q0, hg, Tn, scale});                                      \
  }                                                                                                       \
  extern "C" __global__ void attn_probs_##S_(const T* S, const float* lse, const uint32_t* seg, T* P, int n, \
                                             int len, int q0, int hg, int Tn, float scale, long long total) { \
    attn_probs<T>(S, lse, seg, P, Slab{n, len, q0, hg, Tn, scale}, total);                               \
  }                                                                                                       \
  extern "C" __global__ void attn_dscores_##S_(const T* S, const T* dP, const float* lse, const float* delta, \
                                               const uint32_t* seg, T* dS, int n, int len, int q0, int hg,  \
                                               int Tn, float scale, long long total) {                    \
    attn_dscores<T>(S, dP, lse, delta, seg, dS, Slab{n, len, q0, hg, Tn, scale}, total);                 \
  }
CPT_FOR_EACH_DTYPE(BLOCKED_ENTRY)
