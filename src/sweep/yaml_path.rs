//! Config paths over a YAML tree: `optim.lr`, `data.sources[2].weight`,
//! `data.groups[name=zh].weight`. Setting a path requires every key on it to exist in the
//! base config already, so a typo in a grid fails before any run starts, with the nearest
//! existing key as a hint.

use serde_yaml::{Mapping, Value};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
    /// The element of a list of mappings whose `field` equals `value`.
    Select { field: String, value: String },
}

/// Parses `a.b[3].c[name=zh]` (a bare numeric segment `a.3` is a list index too).
pub fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    if path.trim().is_empty() {
        return Err("empty config path".into());
    }
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && rest.is_empty() {
            return Err(format!("empty segment in config path `{path}`"));
        }
        if !key.is_empty() {
            match key.parse::<usize>() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(key.to_string())),
            }
        }
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| format!("unclosed `[` in config path `{path}`"))?;
            let inner = &rest[1..close];
            if let Some((field, value)) = inner.split_once('=') {
                out.push(Segment::Select { field: field.trim().to_string(), value: value.trim().to_string() });
            } else {
                let i = inner.trim().parse::<usize>().map_err(|_| format!("`[{inner}]` in config path `{path}` is neither an index nor `field=value`"))?;
                out.push(Segment::Index(i));
            }
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("unexpected `{rest}` after `]` in config path `{path}`"));
            }
        }
    }
    Ok(out)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn nearest<'a>(want: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(want, c), c))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn missing_key(path: &str, key: &str, map: &Mapping) -> String {
    let keys: Vec<&str> = map.keys().filter_map(|k| k.as_str()).collect();
    let mut msg = format!("`{path}`: key `{key}` is not in the base config");
    if let Some(n) = nearest(key, keys.iter().copied()) {
        let _ = write!(msg, " (did you mean `{n}`?)");
    } else if !keys.is_empty() {
        let _ = write!(msg, " (keys there: {})", keys.join(", "));
    }
    msg
}

/// The node at `path`, mutably, or an error naming the first segment that does not exist.
fn node_mut<'a>(root: &'a mut Value, path: &str, segments: &[Segment]) -> Result<&'a mut Value, String> {
    let mut node = root;
    for seg in segments {
        node = match (seg, node) {
            (Segment::Key(k), Value::Mapping(map)) => {
                if !map.contains_key(k.as_str()) {
                    return Err(missing_key(path, k, map));
                }
                map.get_mut(k.as_str()).expect("checked above")
            }
            (Segment::Index(i), Value::Sequence(seq)) => {
                let len = seq.len();
                seq.get_mut(*i).ok_or_else(|| format!("`{path}`: index {i} is out of range (the list has {len} entries)"))?
            }
            (Segment::Select { field, value }, Value::Sequence(seq)) => {
                let seen: Vec<String> = seq.iter().filter_map(|e| e.get(field.as_str()).and_then(scalar_text)).collect();
                seq.iter_mut()
                    .find(|e| e.get(field.as_str()).and_then(scalar_text).as_deref() == Some(value.as_str()))
                    .ok_or_else(|| format!("`{path}`: no list entry has {field} = {value} (entries have {field}: {})", seen.join(", ")))?
            }
            (seg, other) => {
                let kind = match other {
                    Value::Mapping(_) => "a mapping",
                    Value::Sequence(_) => "a list",
                    Value::Null => "empty (null)",
                    _ => "a scalar",
                };
                return Err(format!("`{path}`: cannot apply {seg:?} to a value that is {kind}"));
            }
        };
    }
    Ok(node)
}

/// Replaces the value at `path` (which must exist in `root`).
pub fn set(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let segments = parse(path)?;
    *node_mut(root, path, &segments)? = value;
    Ok(())
}

/// Sets `path`, creating missing mapping keys on the way (used only for keys `cpt sweep`
/// itself owns, such as each run's output directory).
pub fn set_or_insert(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let segments = parse(path)?;
    let mut node = root;
    for seg in &segments {
        if let (Segment::Key(k), Value::Null) = (seg, &*node) {
            let _ = k;
            *node = Value::Mapping(Mapping::new());
        }
        node = match (seg, node) {
            (Segment::Key(k), Value::Mapping(map)) => map.entry(Value::from(k.as_str())).or_insert(Value::Null),
            (seg, other) => {
                let segs = std::slice::from_ref(seg);
                node_mut(other, path, segs)?
            }
        };
    }
    *node = value;
    Ok(())
}

/// The value at `path`, if every segment exists.
pub fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let segments = parse(path).ok()?;
    let mut node = root;
    for seg in &segments {
        node = match (seg, node) {
            (Segment::Key(k), Value::Mapping(m)) => m.get(k.as_str())?,
            (Segment::Index(i), Value::Sequence(s)) => s.get(*i)?,
            (Segment::Select { field, value }, Value::Sequence(s)) => {
                s.iter().find(|e| e.get(field.as_str()).and_then(scalar_text).as_deref() == Some(value.as_str()))?
            }
            _ => return None,
        };
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_indices_and_selectors() {
        assert_eq!(
            parse("data.groups[name=zh].weight").unwrap(),
            vec![Segment::Key("data".into()), Segment::Key("groups".into()), Segment::Select { field: "name".into(), value: "zh".into() }, Segment::Key("weight".into())]
        );
        assert_eq!(parse("a.2.b[1]").unwrap(), vec![Segment::Key("a".into()), Segment::Index(2), Segment::Key("b".into()), Segment::Index(1)]);
        assert!(parse("a..b").is_err());
        assert!(parse("a[1").is_err());
    }

    #[test]
    fn set_requires_existing_keys_and_suggests_the_nearest() {
        let mut v: Value = serde_yaml::from_str("optim: {lr: 0.001}\ndata: {groups: [{name: zh, weight: 1}, {name: en, weight: 2}]}").unwrap();
        set(&mut v, "optim.lr", Value::from(0.01)).unwrap();
        set(&mut v, "data.groups[name=en].weight", Value::from(5)).unwrap();
        assert_eq!(get(&v, "data.groups[1].weight").unwrap().as_i64(), Some(5));
        let err = set(&mut v, "optim.lrr", Value::from(1)).unwrap_err();
        assert!(err.contains("did you mean `lr`"), "{err}");
        let err = set(&mut v, "data.groups[name=fr].weight", Value::from(1)).unwrap_err();
        assert!(err.contains("zh, en"), "{err}");
    }
}
