//! A `tokenizer.json` held as JSON, so that extending it changes only what must change:
//! new `model.vocab` entries and merges appended after the existing ones. Everything else
//! (normalizer, pre-tokenizer, added tokens, decoder, key order) is written back as read.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The two BPE families `cpt vocab` extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// Byte-level BPE (GPT-2 alphabet; Llama-3, Qwen2, SmolLM): every byte is a base token.
    ByteLevel,
    /// SentencePiece-derived BPE (Llama-2, TinyLlama, Mistral): `▁` for spaces, characters
    /// missing from the vocabulary fall back to `<0xNN>` byte tokens.
    SentencePiece,
}

impl Flavor {
    /// The character a vocabulary entry starts with when it begins a new word.
    pub fn word_marker(self) -> char {
        match self {
            Flavor::ByteLevel => 'Ġ',
            Flavor::SentencePiece => '▁',
        }
    }
}

/// One new vocabulary entry, in the order it is appended.
#[derive(Debug, Clone)]
pub enum NewEntry {
    /// A token built by merging two existing (or earlier new) tokens.
    Merge { left: String, right: String },
    /// A single character that used to fall back to bytes (SentencePiece flavour only).
    Char { content: String },
}

impl NewEntry {
    pub fn content(&self) -> String {
        match self {
            NewEntry::Merge { left, right } => format!("{left}{right}"),
            NewEntry::Char { content } => content.clone(),
        }
    }
}

pub struct TokenizerFile {
    path: PathBuf,
    json: Value,
    pub flavor: Flavor,
    /// `model.vocab`: token string -> id.
    pub vocab: HashMap<String, u32>,
    /// Contents of `added_tokens` (special tokens and the like).
    pub added_contents: HashSet<String>,
    /// `added_tokens` as (content, id), in file order.
    added: Vec<(String, u32)>,
    /// One past the largest id used anywhere in the file: the first id a new token gets.
    pub next_id: u32,
    /// Merges stored as `["a", "b"]` pairs (newer files) rather than `"a b"` strings.
    merges_as_pairs: bool,
    merge_count: usize,
}

impl TokenizerFile {
    /// Reads `path` (a `tokenizer.json`, or a directory holding one).
    pub fn open(path: &Path) -> Result<Self> {
        let path = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading tokenizer file {}", path.display()))?;
        Self::from_json_str(&text, &path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let where_ = path.display().to_string();
        let json: Value = serde_json::from_str(text)
            .with_context(|| format!("{where_}: not valid JSON"))?;
        let model = json.get("model").with_context(|| format!("{where_}: no field `model`"))?;
        let model_type = model.get("type").and_then(Value::as_str).unwrap_or("(missing)");
        if model_type != "BPE" {
            bail!(
                "{where_}: unsupported tokenizer model type `{model_type}` (field model.type); \
                 `cpt vocab` extends BPE tokenizers (byte-level or SentencePiece-derived with byte fallback)"
            );
        }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let Some(v) = model.get(field).and_then(Value::as_str) {
                if !v.is_empty() {
                    bail!("{where_}: unsupported BPE option model.{field} = {v:?}");
                }
            }
        }
        let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool).unwrap_or(false);
        let byte_level = mentions_type(json.get("pre_tokenizer"), "ByteLevel");
        let metaspace = mentions_type(json.get("pre_tokenizer"), "Metaspace")
            || json.get("normalizer").map(|n| n.to_string().contains('▁')).unwrap_or(false);
        let flavor = if byte_level {
            Flavor::ByteLevel
        } else if metaspace && byte_fallback {
            Flavor::SentencePiece
        } else if metaspace {
            bail!(
                "{where_}: SentencePiece-style BPE without byte fallback (model.byte_fallback is false) \
                 is not supported: characters outside the vocabulary become <unk>"
            );
        } else {
            bail!(
                "{where_}: unsupported BPE tokenizer: neither a ByteLevel pre-tokenizer (field pre_tokenizer) \
                 nor a SentencePiece `▁` Metaspace with byte fallback"
            );
        };

        let vocab_json = model
            .get("vocab")
            .and_then(Value::as_object)
            .with_context(|| format!("{where_}: field model.vocab is missing or not an object"))?;
        let mut vocab = HashMap::with_capacity(vocab_json.len());
        let mut next_id = 0u32;
        for (token, id) in vocab_json {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .with_context(|| format!("{where_}: model.vocab[{token:?}] is not a token id"))?;
            next_id = next_id.max(id + 1);
            vocab.insert(token.clone(), id);
        }
        let mut added_contents = HashSet::new();
        let mut added_list = Vec::new();
        if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
            for (i, t) in added.iter().enumerate() {
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|i| u32::try_from(i).ok())
                    .with_context(|| format!("{where_}: added_tokens[{i}].id is missing"))?;
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{where_}: added_tokens[{i}].content is missing"))?;
                next_id = next_id.max(id + 1);
                added_contents.insert(content.to_string());
                added_list.push((content.to_string(), id));
            }
        }
        let merges = model
            .get("merges")
            .and_then(Value::as_array)
            .with_context(|| format!("{where_}: field model.merges is missing or not a list"))?;
        let merges_as_pairs = merges.first().map(Value::is_array).unwrap_or(true);
        let merge_count = merges.len();
        Ok(Self { path: path.to_path_buf(), json, flavor, vocab, added_contents, added: added_list, next_id, merges_as_pairs, merge_count })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of ids the tokenizer uses: model vocabulary and added tokens together.
    pub fn id_space(&self) -> u32 {
        self.next_id
    }

    pub fn merge_count(&self) -> usize {
        self.merge_count
    }

    /// Is `content` already a token (model vocabulary or added token)?
    pub fn has_token(&self, content: &str) -> bool {
        self.vocab.contains_key(content) || self.added_contents.contains(content)
    }

    /// Appends the entries, giving them consecutive ids from `next_id`, and merges (lowest
    /// priority, in order) for the merged ones. Returns the ids given.
    pub fn append(&mut self, entries: &[NewEntry]) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(entries.len());
        let needs_pairs = entries.iter().any(|e| match e {
            NewEntry::Merge { left, right } => left.contains(' ') || right.contains(' '),
            NewEntry::Char { .. } => false,
        });
        if needs_pairs && !self.merges_as_pairs {
            self.convert_merges_to_pairs()?;
        }
        if !entries.is_empty() {
            self.pin_added_token_ids()?;
        }
        for entry in entries {
            let content = entry.content();
            if self.has_token(&content) {
                bail!("new token {content:?} is already in {}", self.path.display());
            }
            if let NewEntry::Merge { left, right } = entry {
                for part in [left, right] {
                    if !self.vocab.contains_key(part) {
                        bail!("merge part {part:?} of new token {content:?} is not in the vocabulary");
                    }
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            self.vocab.insert(content.clone(), id);
            let model = self.json["model"].as_object_mut().context("model is not an object")?;
            model["vocab"]
                .as_object_mut()
                .context("model.vocab is not an object")?
                .insert(content.clone(), Value::from(id));
            if let NewEntry::Merge { left, right } = entry {
                let merge = if self.merges_as_pairs {
                    Value::from(vec![left.clone(), right.clone()])
                } else {
                    Value::from(format!("{left} {right}"))
                };
                model["merges"].as_array_mut().context("model.merges is not a list")?.push(merge);
                self.merge_count += 1;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// `tokenizers` gives an added token that is not in `model.vocab` the id
    /// `len(model.vocab)` (and up) when it loads a file, whatever id the file says. Llama-3
    /// and Qwen2 keep their special tokens only in `added_tokens`, right after the
    /// vocabulary, so growing `model.vocab` would move them. Listing them in `model.vocab`
    /// under their own ids pins them (Llama-2 files already do this); the added-token
    /// matcher still splits them out before BPE, so encoding is unchanged.
    fn pin_added_token_ids(&mut self) -> Result<()> {
        let by_id: HashMap<u32, String> = self.vocab.iter().map(|(t, id)| (*id, t.clone())).collect();
        let missing: Vec<(String, u32)> =
            self.added.iter().filter(|(content, _)| !self.vocab.contains_key(content)).cloned().collect();
        for (content, id) in missing {
            if let Some(other) = by_id.get(&id) {
                bail!(
                    "{}: added token {content:?} has id {id}, which model.vocab gives to {other:?}",
                    self.path.display()
                );
            }
            self.vocab.insert(content.clone(), id);
            self.json["model"]["vocab"]
                .as_object_mut()
                .context("model.vocab is not an object")?
                .insert(content, Value::from(id));
        }
        Ok(())
    }

    fn convert_merges_to_pairs(&mut self) -> Result<()> {
        let merges = self.json["model"]["merges"].as_array_mut().context("model.merges is not a list")?;
        for (i, m) in merges.iter_mut().enumerate() {
            let s = m.as_str().with_context(|| format!("model.merges[{i}] is not a string"))?;
            let (a, b) = s
                .split_once(' ')
                .with_context(|| format!("model.merges[{i}] = {s:?} is not `left right`"))?;
            *m = Value::from(vec![a.to_string(), b.to_string()]);
        }
        self.merges_as_pairs = true;
        Ok(())
    }

    pub fn to_json_string(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&self.json)?)
    }

    /// A `tokenizers::Tokenizer` for the current contents (checks that the file is coherent).
    pub fn to_tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let text = self.to_json_string()?;
        text.parse::<tokenizers::Tokenizer>()
            .map_err(|e| anyhow::anyhow!("{}: cannot be loaded as a tokenizer: {e}", self.path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json_string()?)
            .with_context(|| format!("writing tokenizer file {}", path.display()))
    }
}

/// Does this JSON component (or a member of its `Sequence`) have `"type": ty`?
fn mentions_type(component: Option<&Value>, ty: &str) -> bool {
    match component {
        Some(Value::Object(map)) => {
            if map.get("type").and_then(Value::as_str) == Some(ty) {
                return true;
            }
            ["pretokenizers", "normalizers", "decoders"]
                .iter()
                .filter_map(|k| map.get(*k).and_then(Value::as_array))
                .flatten()
                .any(|c| mentions_type(Some(c), ty))
        }
        _ => false,
    }
}

/// GPT-2's byte -> printable character table used by byte-level BPE vocabularies.
pub fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

/// The text a vocabulary entry stands for, for reports (byte tokens that do not form whole
/// characters are shown with U+FFFD).
pub fn display_token(flavor: Flavor, token: &str) -> String {
    match flavor {
        Flavor::ByteLevel => {
            let table = byte_level_alphabet();
            let reverse: HashMap<char, u8> = table.iter().enumerate().map(|(b, c)| (*c, b as u8)).collect();
            let bytes: Vec<u8> = token.chars().filter_map(|c| reverse.get(&c).copied()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Flavor::SentencePiece => token.replace('▁', " "),
    }
}
