//! Counts (steps, tokens, bytes) written the way people write them: `2000`, `1e9`, `10B`,
//! `2.5M`, `512k`, `4GiB`.
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A non-negative integer count. Accepts integers, integral floats (`1e9`) and strings with
/// an optional suffix: k/K (1e3), M (1e6), B/G (1e9), T (1e12), KiB/MiB/GiB/TiB (powers of 2).
/// Underscores and commas are ignored (`10_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Count(pub u64);

impl Count {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parse `text` as a count (see [`Count`]).
pub fn parse_count(text: &str) -> Result<u64, String> {
    let cleaned: String = text.trim().chars().filter(|c| *c != '_' && *c != ',').collect();
    let suffixes: [(&str, f64); 9] = [
        ("KiB", 1024.0),
        ("MiB", 1024.0 * 1024.0),
        ("GiB", 1024.0 * 1024.0 * 1024.0),
        ("TiB", 1024.0f64.powi(4)),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("B", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| cleaned.strip_suffix(s).map(|n| (n, *f)))
        .or_else(|| cleaned.strip_suffix('G').map(|n| (n, 1e9)))
        .unwrap_or((cleaned.as_str(), 1.0));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a count (examples: 2000, 1e9, 10B, 2.5M, 512k, 4GiB)"))?;
    from_f64(value * factor).map_err(|e| format!("`{text}`: {e}"))
}

fn from_f64(value: f64) -> Result<u64, String> {
    if !value.is_finite() || value < 0.0 {
        return Err("must be a non-negative number".into());
    }
    if value.fract() != 0.0 {
        return Err(format!("{value} is not a whole number"));
    }
    if value > u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(value as u64)
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count such as 2000, 1e9, \"10B\" or \"512k\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map(Count).map_err(|_| E::custom(format!("{v}: must be >= 0")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                from_f64(v).map(Count).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                parse_count(v).map(Count).map_err(E::custom)
            }
        }
        d.deserialize_any(CountVisitor)
    }
}
