// Causal attention, flash-style: key/value tiles stream through shared memory and each query
// row keeps a running max and sum (online softmax), so the [T, T] score matrix never exists.
// Masking: key j is visible to query i when j <= i and seg[j] == seg[i] (document mask for
// packed sequences; pass all-zero segments for plain causal attention). GQA: query head h
// reads key/value head h / (Hq / Hkv).
//
// Layouts (contiguous): q, o, do, dq: [B, Hq, T, D]; k, v, dk, dv: [B, Hkv, T, D];
// seg: [B, T] u32; lse, delta: [B, Hq, T] f32 (lse in natural-log units).
// D must be a multiple of 32 and at most 128: each lane of a warp owns D/32 output columns.
//
// Work split (scalar FMA, no tensor cores yet):
//   forward and dq: one warp per query row, lane j scores key j of a 32-key tile;
//   dk/dv: one warp per key row, lane i scores query i of a 32-query tile, looping over the
//   query heads that share the key head. No atomics: every output row has one writer.
#include "common.cuh"
#include <math_constants.h>

#define TILE 32
#define MAX_D 128
#define MAX_E (MAX_D / 32)
#define FWD_ROWS 16  // query rows (warps) per block in the forward
#define BWD_ROWS 8   // rows (warps) per block in the backward kernels

struct AttnDims {
  int B, Hq, Hkv, T, D;
  float scale;
};

__device__ __forceinline__ bool visible(int i, int j, uint32_t seg_i, const uint32_t* seg, int T) {
  return j < T && j <= i && seg[j] == seg_i;
}

// Loads rows [row0, row0 + TILE) of a [T, D] matrix into a padded f32 tile; rows past T are 0.
template <typename T>
__device__ __forceinline__ void load_tile(float (*dst)[MAX_D + 1], const T* src, int row0, int Tn, int D) {
  for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
    const int r = idx / D, c = idx % D;
    dst[r][c] = (row0 + r < Tn) ? to_f32(src[(size_t)(row0 + r) * D + c]) : 0.f;
  }
}

template <typename T>
__device__ void attn_fwd(const T* q, const T* k, const T* v, const uint32_t* seg, T* o, float* lse, AttnDims d) {
  __shared__ float ks[TILE][MAX_D + 1];
  __shared__ float vs[TILE][MAX_D + 1];
  __shared__ float qs[FWD_ROWS][MAX_D];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int bh = blockIdx.y, b = bh / d.Hq, h = bh % d.Hq, hk = h / (d.Hq / d.Hkv);
  const int q0 = blockIdx.x * FWD_ROWS, i = q0 + warp;
  const bool row_ok = i < d.T;
  const T* qh = q + (size_t)bh * d.T * d.D;
  const T* kh = k + ((size_t)b * d.Hkv + hk) * d.T * d.D;
  const T* vh = v + ((size_t)b * d.Hkv + hk) * d.T * d.D;
  const uint32_t* sg = seg + (size_t)b * d.T;
  const int E = d.D / 32;
  if (row_ok)
    for (int c = lane; c < d.D; c += 32) qs[warp][c] = to_f32(qh[(size_t)i * d.D + c]) * d.scale;
  const uint32_t seg_i = row_ok ? sg[i] : 0;
  float m = -CUDART_INF_F, l = 0.f, acc[MAX_E];
#pragma unroll
  for (int e = 0; e < MAX_E; ++e) acc[e] = 0.f;
  const int last_key = min(q0 + FWD_ROWS, d.T) - 1;
  for (int k0 = 0; k0 <= last_key; k0 += TILE) {
    __syncthreads();
    load_tile(ks, kh, k0, d.T, d.D);
    load_tile(vs, vh, k0, d.T, d.D);
    __syncthreads();
    if (!row_ok || k0 > i) continue;
    const int j = k0 + lane;
    float s = -CUDART_INF_F;
    if (visible(i, j, seg_i, sg, d.T)) {
      s = 0.f;
      for (int c = 0; c < d.D; ++c) s += qs[warp][c] * ks[lane][c];
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -CUDART_INF_F) continue;  // nothing visible yet in this row
    const float p = __expf(s - m_new);      // exp(-inf) = 0 for masked keys
    const float corr = __expf(m - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int e = 0; e < MAX_E; ++e) acc[e] *= corr;
    for (int jj = 0; jj < TILE; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.f) continue;  // warp-uniform
#pragma unroll
      for (int e = 0; e < MAX_E; ++e)
        if (e < E) acc[e] += pj * vs[jj][lane + 32 * e];
    }
    m = m_new;
  }
  if (!row_ok) return;
  const float inv_l = 1.f / l;
  T* orow = o + ((size_t)bh * d.T + i) * d.D;
#pragma unroll
  for (int e = 0; e < MAX_E; ++e)
    if (e < E) orow[lane + 32 * e] = from_f32<T>(acc[e] * inv_l);
  if (lane == 0) lse[(size_t)bh * d.T + i] = m + logf(l);
}

// dq for one query row per warp; also writes delta_i = sum(do_i * o_i) for the dk/dv kernel.
//   p_ij = exp(s_ij - lse_i), ds_ij = p_ij * (do_i . v_j - delta_i), dq_i = scale * sum_j ds_ij k_j
template <typename T>
__device__ void attn_bwd_dq(const T* q, const T* k, const T* v, const uint32_t* seg, const T* o,
                            const T* dout, const float* lse, float* delta, T* dq, AttnDims d) {
  __shared__ float ks[TILE][MAX_D + 1];
  __shared__ float vs[TILE][MAX_D + 1];
  __shared__ float qs[BWD_ROWS][MAX_D];
  __shared__ float dos[BWD_ROWS][MAX_D];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int bh = blockIdx.y, b = bh / d.Hq, h = bh % d.Hq, hk = h / (d.Hq / d.Hkv);
  const int q0 = blockIdx.x * BWD_ROWS, i = q0 + warp;
  const bool row_ok = i < d.T;
  const size_t row_off = ((size_t)bh * d.T + i) * d.D;
  const T* kh = k + ((size_t)b * d.Hkv + hk) * d.T * d.D;
  const T* vh = v + ((size_t)b * d.Hkv + hk) * d.T * d.D;
  const uint32_t* sg = seg + (size_t)b * d.T;
  const int E = d.D / 32;
  float delta_i = 0.f, lse_i = 0.f;
  uint32_t seg_i = 0;
  if (row_ok) {
    float part = 0.f;
    for (int c = lane; c < d.D; c += 32) {
      const float dov = to_f32(dout[row_off + c]);
      qs[warp][c] = to_f32(q[row_off + c]) * d.scale;
      dos[warp][c] = dov;
      part += dov * to_f32(o[row_off + c]);
    }
    delta_i = warp_sum(part);
    lse_i = lse[(size_t)bh * d.T + i];
    seg_i = sg[i];
    if (lane == 0) delta[(size_t)bh * d.T + i] = delta_i;
  }
  float acc[MAX_E];
#pragma unroll
  for (int e = 0; e < MAX_E; ++e) acc[e] = 0.f;
  const int last_key = min(q0 + BWD_ROWS, d.T) - 1;
  for (int k0 = 0; k0 <= last_key; k0 += TILE) {
    __syncthreads();
    load_tile(ks, kh, k0, d.T, d.D);
    load_tile(vs, vh, k0, d.T, d.D);
    __syncthreads();
    if (!row_ok || k0 > i) continue;
    const int j = k0 + lane;
    float ds = 0.f;
    if (visible(i, j, seg_i, sg, d.T)) {
      float s = 0.f, dp = 0.f;
      for (int c = 0; c < d.D; ++c) {
        s += qs[warp][c] * ks[lane][c];
        dp += dos[warp][c] * vs[lane][c];
      }
      ds = __expf(s - lse_i) * (dp - delta_i);
    }
    for (int jj = 0; jj < TILE; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      if (dsj == 0.f) continue;
#pragma unroll
      for (int e = 0; e < MAX_E; ++e)
        if (e < E) acc[e] += dsj * ks[jj][lane + 32 * e];
    }
  }
  if (!row_ok) return;
#pragma unroll
  for (int e = 0; e < MAX_E; ++e)
    if (e < E) dq[row_off + lane + 32 * e] = from_f32<T>(acc[e] * d.scale);
}

// dk, dv for one key row per warp, summed over the query heads of its group.
//   dv_j = sum_i p_ij do_i,  dk_j = scale * sum_i ds_ij q_i
template <typename T>
__device__ void attn_bwd_dkdv(const T* q, const T* k, const T* v, const uint32_t* seg, const T* dout,
                              const float* lse, const float* delta, T* dk, T* dv, AttnDims d) {
  __shared__ float qs[TILE][MAX_D + 1];
  __shared__ float dos[TILE][MAX_D + 1];
  __shared__ float kr[BWD_ROWS][MAX_D];
  __shared__ float vr[BWD_ROWS][MAX_D];
  __shared__ float lse_t[TILE], delta_t[TILE];
  __shared__ uint32_t seg_t[TILE];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int bhk = blockIdx.y, b = bhk / d.Hkv, hk = bhk % d.Hkv;
  const int group = d.Hq / d.Hkv;
  const int j0 = blockIdx.x * BWD_ROWS, j = j0 + warp;
  const bool row_ok = j < d.T;
  const size_t row_off = ((size_t)bhk * d.T + j) * d.D;
  const uint32_t* sg = seg + (size_t)b * d.T;
  const int E = d.D / 32;
  if (row_ok)
    for (int c = lane; c < d.D; c += 32) {
      kr[warp][c] = to_f32(k[row_off + c]) * d.scale;
      vr[warp][c] = to_f32(v[row_off + c]);
    }
  const uint32_t seg_j = row_ok ? sg[j] : 0;
  float dk_acc[MAX_E], dv_acc[MAX_E];
#pragma unroll
  for (int e = 0; e < MAX_E; ++e) dk_acc[e] = dv_acc[e] = 0.f;
  for (int g = 0; g < group; ++g) {
    const int h = hk * group + g;
    const size_t head = (size_t)b * d.Hq + h;
    const T* qh = q + head * d.T * d.D;
    const T* doh = dout + head * d.T * d.D;
    for (int i0 = (j0 / TILE) * TILE; i0 < d.T; i0 += TILE) {
      __syncthreads();
      load_tile(qs, qh, i0, d.T, d.D);
      load_tile(dos, doh, i0, d.T, d.D);
      if (threadIdx.x < TILE) {
        const int i = i0 + threadIdx.x;
        lse_t[threadIdx.x] = i < d.T ? lse[head * d.T + i] : 0.f;
        delta_t[threadIdx.x] = i < d.T ? delta[head * d.T + i] : 0.f;
        seg_t[threadIdx.x] = i < d.T ? sg[i] : 0xffffffffu;
      }
      __syncthreads();
      if (!row_ok) continue;
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < d.T && j <= i && seg_t[lane] == seg_j) {
        float s = 0.f, dp = 0.f;
        for (int c = 0; c < d.D; ++c) {
          s += qs[lane][c] * kr[warp][c];
          dp += dos[lane][c] * vr[warp][c];
        }
        p = __expf(s - lse_t[lane]);
        ds = p * (dp - delta_t[lane]);
      }
      for (int ii = 0; ii < TILE; ++ii) {
        const float pi = __shfl_sync(0xffffffffu, p, ii);
        const float dsi = __shfl_sync(0xffffffffu, ds, ii);
        if (pi == 0.f && dsi == 0.f) continue;
#pragma unroll
        for (int e = 0; e < MAX_E; ++e)
          if (e < E) {
            dv_acc[e] += pi * dos[ii][lane + 32 * e];
            dk_acc[e] += dsi * qs[ii][lane + 32 * e];
          }
      }
    }
  }
  if (!row_ok) return;
#pragma unroll
  for (int e = 0; e < MAX_E; ++e)
    if (e < E) {
      dk[row_off + lane + 32 * e] = from_f32<T>(dk_acc[e] * d.scale);
      dv[row_off + lane + 32 * e] = from_f32<T>(dv_acc[e]);
    }
}

#define ATTN_ENTRY(T, S)                                                                              \
  extern "C" __global__ void __launch_bounds__(FWD_ROWS * 32)                                        \
      attn_fwd_##S(const T* q, const T* k, const T* v, const uint32_t* seg, T* o, float* lse, int B, \
                   int Hq, int Hkv, int Tn, int D, float scale) {                                     \
    attn_fwd<T>(q, k, v, seg, o, lse, AttnDims{B, Hq, Hkv, Tn, D, scale});                           \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(BWD_ROWS * 32)                                        \
      attn_bwd_dq_##S(const T* q, const T* k, const T* v, const uint32_t* seg, const T* o,           \
                      const T* dout, const float* lse, float* delta, T* dq, int B, int Hq, int Hkv,  \
                      int Tn, int D, float scale) {                                                   \
    attn_bwd_dq<T>(q, k, v, seg, o, dout, lse, delta, dq, AttnDims{B, Hq, Hkv, Tn, D, scale});       \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(BWD_ROWS * 32)                                        \
      attn_bwd_dkdv_##S(const T* q, const T* k, const T* v, const uint32_t* seg, const T* dout,      \
                        const float* lse, const float* delta, T* dk, T* dv, int B, int Hq, int Hkv,  \
                        int Tn, int D, float scale) {                                                 \
    attn_bwd_dkdv<T>(q, k, v, seg, dout, lse, delta, dk, dv, AttnDims{B, Hq, Hkv, Tn, D, scale});    \
  }
CPT_FOR_EACH_DTYPE(ATTN_ENTRY)
