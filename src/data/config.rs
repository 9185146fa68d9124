//! The `data:` section of a training config.
use serde::{Deserialize, Serialize};

/// Placeholder shape agreed at the skeleton; the data pipeline owns and extends it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {}
