// Elementwise fused ops: RoPE (rotate-half, as in Hugging Face Llama) and SwiGLU.
#include "common.cuh"

// x, y: [B, H, T, D] contiguous; cos, sin: [B or 1, T, D/2] f32 (cos_bstride = 0 broadcasts).
// sign = +1 rotates forward, -1 applies the inverse rotation (the backward).
template <typename T>
__device__ void rope(const T* x, const float* cos, const float* sin, T* y, int H, int Tn, int D,
                     long long cos_bstride, float sign, long long total_pairs) {
  const int half = D / 2;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total_pairs;
       idx += (long long)gridDim.x * blockDim.x) {
    const int i = idx % half;
    const long long row = idx / half;  // (b, h, t)
    const int t = row % Tn;
    const long long b = row / ((long long)Tn * H);
    const long long cs = b * cos_bstride + (long long)t * half + i;
    const float c = cos[cs], s = sign * sin[cs];
    const long long base = row * D;
    const float x1 = to_f32(x[base + i]), x2 = to_f32(x[base + i + half]);
    y[base + i] = from_f32<T>(x1 * c - x2 * s);
    y[base + i + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

__device__ __forceinline__ float sigmoidf(float a) { return 1.f / (1.f + __expf(-a)); }

template <typename T>
__device__ void swiglu_fwd(const T* a, const T* b, T* y, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float av = to_f32(a[i]);
    y[i] = from_f32<T>(av * sigmoidf(av) * to_f32(b[i]));
  }
}

// d/da silu(a) = s * (1 + a * (1 - s)), s = sigmoid(a). out: [2, n] = (da, db).
template <typename T>
__device__ void swiglu_bwd(const T* a, const T* b, const T* g, T* out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float av = to_f32(a[i]), bv = to_f32(b[i]), gv = to_f32(g[i]);
    const float s = sigmoidf(av);
    out[i] = from_f32<T>(gv * bv * s * (1.f + av * (1.f - s)));
    out[n + i] = from_f32<T>(gv * av * s);
  }
}

#define ELEMENTWISE_ENTRY(T, S)                                                                        \
  extern "C" __global__ void rope_##S(const T* x, const float* cos, const float* sin, T* y, int H,   \
                                      int Tn, int D, long long cos_bstride, float sign,              \
                                      long long total_pairs) {                                        \
    rope<T>(x, cos, sin, y, H, Tn, D, cos_bstride, sign, total_pairs);                               \
  }                                                                                                    \
  extern "C" __global__ void swiglu_fwd_##S(const T* a, const T* b, T* y, long long n) {             \
    swiglu_fwd<T>(a, b, y, n);                                                                         \
  }                                                                                                    \
  extern "C" __global__ void swiglu_bwd_##S(const T* a, const T* b, const T* g, T* out, long long n) { \
    swiglu_bwd<T>(a, b, g, out, n);                                                                    \
  }
CPT_FOR_EACH_DTYPE(ELEMENTWISE_ENTRY)

// Cross-entropy backward for one vocabulary chunk, in place of five elementwise ops:
//   dlogits[n, c] = (exp(logits[n, c] - lse[n]) - [targets[n] == c0 + c]) * g[n]
// logits: [N, C] f32; dlogits: [N, C] in the compute dtype.
template <typename T>
__device__ void ce_chunk_grad(const float* logits, const float* lse, const uint32_t* targets,
                              const float* g, T* dlogits, long long N, int C, int c0) {
  const long long total = N * C;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const long long n = i / C;
    const int c = i % C;
    float p = __expf(logits[i] - lse[n]);
    if (targets[n] == (uint32_t)(c0 + c)) p -= 1.f;
    dlogits[i] = from_f32<T>(p * g[n]);
  }
}

#define CE_ENTRY(T, S)                                                                               \
  extern "C" __global__ void ce_chunk_grad_##S(const float* logits, const float* lse,               \
                                               const uint32_t* targets, const float* g, T* dlogits,  \
                                               long long N, int C, int c0) {                        \
    ce_chunk_grad<T>(logits, lse, targets, g, dlogits, N, C, c0);                                   \
  }
CPT_FOR_EACH_DTYPE(CE_ENTRY)
