//! The training YAML: serde schema (unknown keys rejected with the nearest valid one),
//! validation naming each field's path, and `--set path.to.key=value` overrides.
