//! Reading a training config: YAML text -> value tree -> `--set` overrides -> typed config
//! (errors name the file, the key path and the nearest valid key) -> validation.
use super::TrainConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// Read, override, deserialise and validate a config file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    parse_config(&text, &path.display().to_string(), overrides)
}

/// As [`load_config`] for text; `origin` names the source in errors.
pub fn parse_config(text: &str, origin: &str, overrides: &[String]) -> Result<TrainConfig> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| anyhow!("{origin}: not valid YAML: {e}"))?;
    if value.is_null() {
        value = Value::Mapping(Mapping::new());
    }
    let mut overridden = Vec::new();
    for spec in overrides {
        let (path, raw) = spec
            .split_once('=')
            .with_context(|| format!("--set {spec}: expected path.to.key=value"))?;
        apply_override(&mut value, path.trim(), raw).with_context(|| format!("--set {spec}"))?;
        overridden.push((path.trim().to_string(), spec.clone()));
    }
    let config: TrainConfig = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = describe(&err.into_inner().to_string());
        let from_set = overridden
            .iter()
            .filter(|(p, _)| path == *p || path.starts_with(&format!("{p}.")) || p.starts_with(&format!("{path}.")))
            .map(|(_, spec)| format!(" (from --set {spec})"))
            .next()
            .unwrap_or_default();
        let path = if path == "." { "(top level)".to_string() } else { path };
        anyhow!("{origin}: {path}: {message}{from_set}")
    })?;
    config.validate().map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(config)
}

/// Set `path` (dot-separated keys; numbers index lists) in a YAML tree to `raw` parsed as a
/// YAML scalar (`1e-4` a float, `true` a bool, `null` unset, anything else a string).
/// Missing sections are created; whether the key exists is checked when the tree is
/// deserialised, with the same messages as for the file.
pub fn apply_override(root: &mut Value, path: &str, raw: &str) -> Result<()> {
    if path.is_empty() {
        bail!("empty key path");
    }
    let new_value = serde_yaml::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let segments: Vec<&str> = path.split('.').collect();
    let mut node = root;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            bail!("empty key in path `{path}`");
        }
        let last = i + 1 == segments.len();
        let here = segments[..i].join(".");
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        node = match node {
            Value::Mapping(map) => {
                let key = Value::String(seg.to_string());
                if last {
                    map.insert(key, new_value);
                    return Ok(());
                }
                map.entry(key).or_insert(Value::Null)
            }
            Value::Sequence(list) => {
                let index: usize =
                    seg.parse().map_err(|_| anyhow!("`{here}` is a list: `{seg}` must be an index"))?;
                let len = list.len();
                let slot = list.get_mut(index).ok_or_else(|| anyhow!("`{here}` has {len} entries, no index {index}"))?;
                if last {
                    *slot = new_value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("`{here}` is a value, not a section: cannot set `{path}`"),
        };
    }
    unreachable!("the loop returns at the last segment")
}

/// Add "did you mean" to serde's unknown-field / unknown-variant messages.
fn describe(message: &str) -> String {
    let names = backticked(message);
    let is_unknown = message.starts_with("unknown field") || message.starts_with("unknown variant");
    if !is_unknown || names.len() < 2 {
        return message.to_string();
    }
    let (given, candidates) = (&names[0], &names[1..]);
    match nearest(given, candidates) {
        Some(best) => format!("{message} (did you mean `{best}`?)"),
        None => message.to_string(),
    }
}

/// The nearest candidate by edit distance, if it is plausibly a typo of `given`.
pub fn nearest<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    let best = candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&given.to_lowercase(), &c.to_lowercase()), c))
        .min_by_key(|(d, _)| *d)?;
    let limit = (given.chars().count().max(best.1.chars().count()) / 2).max(2);
    (best.0 <= limit).then_some(best.1.as_str())
}

fn backticked(message: &str) -> Vec<String> {
    message.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

impl TrainConfig {
    /// The resolved config as YAML (what `config.yaml` in a run directory holds).
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml::to_string(self).context("serialising the config to YAML")
    }
}
