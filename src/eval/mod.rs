//! Evaluation: multiple-choice benchmarks, perplexity / bits per byte, per-document scores.
