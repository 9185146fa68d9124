//! Fused kernels (CUDA under the `cuda` feature) with CPU fallbacks, as candle custom ops.
