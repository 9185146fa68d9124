//! The corpus pipeline: sources -> `cpt prepare` token shards -> the ratio-and-curriculum
//! sampler.
//!
//! - `config`: the `data:` YAML section.
//! - `source`: JSONL / text / Parquet readers (gzip, zstd), globs and directories.
//! - `shards`, `manifest`, `prepare`: token shards, their manifest, and `cpt prepare`.
//! - `sampler`, `curriculum`, `mixing`: windows from shards: stages, blending, shuffling
//!   (seeded streams of `util::rng`), packing, perplexity curriculum, topic re-weighting,
//!   exact resume.
//! - `inspect`: the data plan without training (`cpt data inspect`).
pub mod config;
pub mod curriculum;
pub mod inspect;
pub mod manifest;
pub mod mixing;
pub mod prepare;
pub mod sampler;
pub mod shards;
pub mod source;

pub use config::DataConfig;
pub use prepare::{prepare, PrepareOptions, PrepareReport, PreparedData};
pub use sampler::{RestoreReport, Sampler, SamplerState, Window};
