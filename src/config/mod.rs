//! The training YAML: serde schema (unknown keys rejected with the nearest valid one),
//! validation naming each field's path, and `--set path.to.key=value` overrides.
pub mod count;
pub mod load;
pub mod schema;
pub mod validate;

pub use count::Count;
pub use load::{apply_override, load_config, parse_config};
pub use schema::*;
