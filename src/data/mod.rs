//! The corpus pipeline: sources -> `cpt prepare` token shards -> the ratio-and-curriculum sampler.
pub mod config;
