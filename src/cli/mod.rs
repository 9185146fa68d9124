//! One thin file per subcommand: parse, call the library, print.
pub mod data;
pub mod eval;
pub mod fit;
pub mod generate;
mod generation_args;
pub mod init;
pub mod lora;
pub mod plan;
pub mod plot;
pub mod prepare;
pub mod score;
mod scoring_model;
pub mod sweep;
pub mod topics;
pub mod train;
pub mod vocab;
