// Multi-tensor AdamW: one launch updates every parameter of a group. The host passes device
// pointer tables and a chunk table (tensor index, start) so each block handles one chunk.
// Scalars come from the host, computed in f64 as PyTorch does in Python: per tensor
// decays[t] = 1 - lr * wd_t, step_sizes[t] = lr / (1 - b1^step_t), bc2_sqrts[t] = sqrt(1 - b2^step_t)
// (torch keeps a step count per parameter); w1 = 1 - b1, w2 = 1 - b2. Arithmetic follows
// torch.optim.AdamW (single-tensor path) step by step:
//   p *= decay;  m = lerp(m, g, w1);  v = v * b2 + w2 * g * g
//   p += -step_size * m / (sqrt(v) / bc2_sqrt + eps)
#include "common.cuh"

extern "C" __global__ void adamw_multi_f32(const unsigned long long* params,
                                           const unsigned long long* grads,
                                           const unsigned long long* exp_avgs,
                                           const unsigned long long* exp_avg_sqs,
                                           const long long* sizes, const float* decays,
                                           const int* chunk_tensor, const long long* chunk_start,
                                           const float* step_sizes, const float* bc2_sqrts,
                                           int chunk_size, float w1, float beta2, float w2, float eps) {
  const int t = chunk_tensor[blockIdx.x];
  const long long start = chunk_start[blockIdx.x];
  long long end = start + chunk_size;
  if (end > sizes[t]) end = sizes[t];
  float* p = reinterpret_cast<float*>(params[t]);
  const float* g = reinterpret_cast<const float*>(grads[t]);
  float* m = reinterpret_cast<float*>(exp_avgs[t]);
  float* v = reinterpret_cast<float*>(exp_avg_sqs[t]);
  const float decay = decays[t], step_size = step_sizes[t], bc2_sqrt = bc2_sqrts[t];
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
    // Explicit rounding steps (no FMA contraction) keep the result next to PyTorch's.
    const float gi = g[i];
    const float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(gi, m[i])));
    const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(w2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    const float pd = __fmul_rn(p[i], decay);
    p[i] = __fadd_rn(pd, __fmul_rn(-step_size, __fdiv_rn(mi, denom)));
    m[i] = mi;
    v[i] = vi;
  }
}
