//! Proxy sweeps (`cpt sweep`) and the laws fitted to their results (`cpt fit`).
//!
//! `grid` expands a grid file over a base config into runs; `runner` trains each as an
//! ordinary `cpt train` subprocess with a resumable state file; `results` collects their
//! metrics; `charts` draws them; `fit` holds the laws; `recommend` turns fits into a config.
pub mod analysis;
pub mod charts;
pub mod fit;
pub mod grid;
pub mod plan;
pub mod recommend;
pub mod results;
pub mod runner;
pub mod yaml_path;
