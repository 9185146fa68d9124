//! Learning new tokens from a corpus by continuing BPE training where the tokenizer left off.
//!
//! The corpus is split into words exactly as the tokenizer's normalizer and pre-tokenizer
//! split it, each word is encoded with the existing model, and then the classic BPE loop
//! runs on those encodings: repeatedly take the candidate that saves the most tokens, add
//! it, update the counts. A candidate is either a merge of two adjacent tokens (saves one
//! token per occurrence) or, for SentencePiece-style tokenizers, a character that used to
//! fall back to its UTF-8 bytes (saves bytes - 1 tokens per occurrence).
//!
//! Why this keeps old encodings: new merges rank after every existing merge, so BPE first
//! reaches the old encoding of a word and only then applies new merges. A new merge fires
//! only where its two halves stand side by side, i.e. where the text contains the new
//! token; text containing no new token encodes to exactly the old ids. Merges whose result
//! already exists as a token are never added, since they could fire on old text.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use anyhow::{bail, Result};
use rayon::prelude::*;
use tokenizers::{Model, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use super::tokenizer_file::{byte_level_alphabet, display_token, Flavor, NewEntry, TokenizerFile};

/// Symbols at or above this value stand for a character that the old tokenizer spells as
/// byte-fallback tokens (index into `Learner::fallback`).
const FALLBACK_BASE: u32 = 1 << 31;

#[derive(Debug, Clone)]
pub struct LearnOptions {
    /// How many new tokens to learn.
    pub add: usize,
    /// A candidate must occur at least this often in the corpus.
    pub min_count: u64,
}

/// One learned token, in the order it was added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LearnedToken {
    /// The vocabulary string (byte-level or `▁` form).
    pub token: String,
    /// The text it stands for.
    pub text: String,
    /// The ids the old tokenizer used for this token's text (for embedding initialisation).
    pub old_pieces: Vec<u32>,
    /// Occurrences in the corpus when it was chosen.
    pub count: u64,
    /// Tokens it saved on the corpus when it was chosen.
    pub saved: u64,
    #[serde(skip)]
    pub entry: NewEntry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Candidate {
    Pair(u32, u32),
    Char(u32),
}

struct FallbackChar {
    content: String,
    byte_ids: Vec<u32>,
}

#[derive(Default, Clone, Copy)]
struct Score {
    saved: i64,
    count: i64,
}

struct Learner<'a> {
    file: &'a TokenizerFile,
    /// id -> vocabulary string, for old and new ids.
    token_of: HashMap<u32, String>,
    /// id -> old ids spelling it.
    pieces_of: HashMap<u32, Vec<u32>>,
    byte_tokens: HashSet<u32>,
    fallback: Vec<FallbackChar>,
    fallback_index: HashMap<char, u32>,
    /// Byte-level alphabet character -> byte (byte-level flavour only).
    byte_of: Option<HashMap<char, u8>>,
    words: Vec<Vec<u32>>,
    counts: Vec<u64>,
    scores: HashMap<Candidate, Score>,
    where_: HashMap<Candidate, Vec<u32>>,
}

/// Learns up to `opts.add` new tokens; errors if the corpus offers fewer.
pub fn learn_tokens(
    file: &TokenizerFile,
    tokenizer: &tokenizers::Tokenizer,
    texts: &[&str],
    opts: &LearnOptions,
) -> Result<Vec<LearnedToken>> {
    let word_counts = count_words(tokenizer, texts)?;
    let mut learner = Learner::new(file, tokenizer, word_counts)?;
    let learned = learner.run(opts);
    if learned.len() < opts.add {
        bail!(
            "the corpus offers only {} new tokens occurring at least {} times, but --add asks for {}; \
             lower --add (or --min-count) or give more text",
            learned.len(),
            opts.min_count,
            opts.add
        );
    }
    Ok(learned)
}

/// Normalises and pre-tokenizes every text as the tokenizer does; counts the words.
fn count_words(tokenizer: &tokenizers::Tokenizer, texts: &[&str]) -> Result<HashMap<String, u64>> {
    let normalizer = tokenizer.get_normalizer();
    let pre_tokenizer = tokenizer.get_pre_tokenizer();
    texts
        .par_iter()
        .try_fold(HashMap::new, |mut counts: HashMap<String, u64>, text| -> Result<_> {
            let mut normalized = NormalizedString::from(*text);
            if let Some(n) = normalizer {
                n.normalize(&mut normalized).map_err(|e| anyhow::anyhow!("normalizing corpus text: {e}"))?;
            }
            let mut pre = PreTokenizedString::from(normalized);
            if let Some(p) = pre_tokenizer {
                p.pre_tokenize(&mut pre).map_err(|e| anyhow::anyhow!("pre-tokenizing corpus text: {e}"))?;
            }
            for (word, _, _) in pre.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
                if !word.is_empty() {
                    *counts.entry(word.to_string()).or_default() += 1;
                }
            }
            Ok(counts)
        })
        .try_reduce(HashMap::new, |mut a, b| {
            for (w, c) in b {
                *a.entry(w).or_default() += c;
            }
            Ok(a)
        })
}

impl<'a> Learner<'a> {
    fn new(file: &'a TokenizerFile, tokenizer: &tokenizers::Tokenizer, word_counts: HashMap<String, u64>) -> Result<Self> {
        let token_of: HashMap<u32, String> = file.vocab.iter().map(|(t, id)| (*id, t.clone())).collect();
        let pieces_of = token_of.keys().map(|id| (*id, vec![*id])).collect();
        let byte_tokens: HashSet<u32> = if file.flavor == Flavor::SentencePiece {
            file.vocab.iter().filter(|(t, _)| parse_byte_token(t).is_some()).map(|(_, id)| *id).collect()
        } else {
            HashSet::new()
        };
        let mut learner = Learner {
            file,
            token_of,
            pieces_of,
            byte_tokens,
            fallback: Vec::new(),
            fallback_index: HashMap::new(),
            byte_of: (file.flavor == Flavor::ByteLevel)
                .then(|| byte_level_alphabet().iter().enumerate().map(|(b, c)| (*c, b as u8)).collect()),
            words: Vec::new(),
            counts: Vec::new(),
            scores: HashMap::new(),
            where_: HashMap::new(),
        };
        // Sorted so that symbol numbering, and so tie-breaking, does not depend on hashing.
        let mut words: Vec<(String, u64)> = word_counts.into_iter().collect();
        words.sort_unstable();
        let model = tokenizer.get_model();
        let encoded: Vec<Vec<tokenizers::Token>> = words
            .par_iter()
            .map(|(w, _)| model.tokenize(w).map_err(|e| anyhow::anyhow!("encoding corpus word {w:?}: {e}")))
            .collect::<Result<_>>()?;
        let mut chunks: HashMap<Vec<u32>, u64> = HashMap::new();
        for ((_, count), tokens) in words.iter().zip(encoded) {
            let symbols = learner.symbols_of(&tokens);
            for chunk in learner.split_at_word_starts(&symbols) {
                *chunks.entry(chunk).or_default() += count;
            }
        }
        let mut chunks: Vec<(Vec<u32>, u64)> = chunks.into_iter().collect();
        chunks.sort_unstable();
        for (i, (symbols, count)) in chunks.into_iter().enumerate() {
            learner.words.push(symbols);
            learner.counts.push(count);
            learner.add_contributions(i, 1, None);
        }
        Ok(learner)
    }

    /// Old-model tokens of one word -> symbols, turning each run of byte-fallback tokens
    /// into one fallback-character symbol per character.
    fn symbols_of(&mut self, tokens: &[tokenizers::Token]) -> Vec<u32> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            if !self.byte_tokens.contains(&tokens[i].id) {
                out.push(tokens[i].id);
                i += 1;
                continue;
            }
            let start = i;
            while i < tokens.len() && self.byte_tokens.contains(&tokens[i].id) {
                i += 1;
            }
            let run = &tokens[start..i];
            let bytes: Vec<u8> = run.iter().filter_map(|t| parse_byte_token(&t.value)).collect();
            match std::str::from_utf8(&bytes) {
                Ok(text) => {
                    let mut at = 0;
                    for c in text.chars() {
                        let n = c.len_utf8();
                        let ids = run[at..at + n].iter().map(|t| t.id).collect();
                        out.push(self.fallback_symbol(c, ids));
                        at += n;
                    }
                }
                // Not whole characters: keep the bytes as they are (they never merge).
                Err(_) => out.extend(run.iter().map(|t| t.id)),
            }
        }
        out
    }

    fn fallback_symbol(&mut self, c: char, byte_ids: Vec<u32>) -> u32 {
        if let Some(&symbol) = self.fallback_index.get(&c) {
            return symbol;
        }
        self.fallback.push(FallbackChar { content: c.to_string(), byte_ids });
        let symbol = FALLBACK_BASE + (self.fallback.len() - 1) as u32;
        self.fallback_index.insert(c, symbol);
        symbol
    }

    /// Splits before every token that starts a new word (`Ġ...` / `▁...`), so learned merges
    /// never reach across a word start: that keeps them applying in the same places when a
    /// whole text is one BPE word (SentencePiece style without pre-tokenizer splits).
    fn split_at_word_starts(&self, symbols: &[u32]) -> Vec<Vec<u32>> {
        let marker = self.file.flavor.word_marker();
        let mut chunks: Vec<Vec<u32>> = Vec::new();
        for &s in symbols {
            let starts_word = s < FALLBACK_BASE
                && self.token_of.get(&s).map(|t| t.starts_with(marker)).unwrap_or(false);
            match chunks.last_mut() {
                Some(last) if !starts_word => last.push(s),
                _ => chunks.push(vec![s]),
            }
        }
        chunks
    }

    fn mergeable(&self, s: u32) -> bool {
        s < FALLBACK_BASE && !self.byte_tokens.contains(&s)
    }

    /// Adds (`sign` = 1) or removes (-1) word `w`'s candidates; records every candidate
    /// touched in `changed`. New candidates involving `index_symbol` (or all, when None)
    /// are indexed.
    fn add_contributions(&mut self, w: usize, sign: i64, index_symbol: Option<u32>) -> Vec<Candidate> {
        let count = self.counts[w] as i64;
        let symbols = &self.words[w];
        let mut touched = Vec::new();
        for (i, &s) in symbols.iter().enumerate() {
            if s >= FALLBACK_BASE {
                let bytes = self.fallback[(s - FALLBACK_BASE) as usize].byte_ids.len() as i64;
                touched.push((Candidate::Char(s), (bytes - 1) * count));
            }
            if let Some(&next) = symbols.get(i + 1) {
                if self.mergeable(s) && self.mergeable(next) {
                    touched.push((Candidate::Pair(s, next), count));
                }
            }
        }
        let mut changed = Vec::with_capacity(touched.len());
        for (cand, saved) in touched {
            let score = self.scores.entry(cand).or_default();
            score.saved += sign * saved;
            score.count += sign * count;
            changed.push(cand);
            let index_it = sign > 0
                && match (index_symbol, cand) {
                    (None, _) => true,
                    (Some(n), Candidate::Pair(a, b)) => a == n || b == n,
                    (Some(n), Candidate::Char(c)) => c == n,
                };
            if index_it {
                self.where_.entry(cand).or_default().push(w as u32);
            }
        }
        changed
    }

    fn content_of(&self, cand: Candidate) -> String {
        match cand {
            Candidate::Pair(a, b) => format!("{}{}", self.token_of[&a], self.token_of[&b]),
            Candidate::Char(c) => self.fallback[(c - FALLBACK_BASE) as usize].content.clone(),
        }
    }

    fn run(&mut self, opts: &LearnOptions) -> Vec<LearnedToken> {
        let mut heap: BinaryHeap<(i64, Reverse<Candidate>)> =
            self.scores.iter().map(|(c, s)| (s.saved, Reverse(*c))).collect();
        let mut learned: Vec<LearnedToken> = Vec::new();
        let mut taken: HashSet<String> = HashSet::new();
        let mut next_id = self.file.next_id;
        while learned.len() < opts.add {
            let Some((saved, Reverse(cand))) = heap.pop() else { break };
            let score = self.scores.get(&cand).copied().unwrap_or_default();
            if score.saved != saved {
                if score.saved > 0 {
                    heap.push((score.saved, Reverse(cand)));
                }
                continue;
            }
            if score.count < opts.min_count as i64 || saved <= 0 {
                // The heap is ordered by tokens saved, not by count: a rarer candidate with a
                // higher saving may still sit above frequent ones, so keep looking.
                continue;
            }
            let content = self.content_of(cand);
            if self.file.has_token(&content) || taken.contains(&content) || !self.whole_characters(&content) {
                continue;
            }
            let new_id = next_id;
            next_id += 1;
            let (entry, pieces) = match cand {
                Candidate::Pair(a, b) => {
                    let mut pieces = self.pieces_of[&a].clone();
                    pieces.extend_from_slice(&self.pieces_of[&b]);
                    (NewEntry::Merge { left: self.token_of[&a].clone(), right: self.token_of[&b].clone() }, pieces)
                }
                Candidate::Char(c) => {
                    let f = &self.fallback[(c - FALLBACK_BASE) as usize];
                    (NewEntry::Char { content: f.content.clone() }, f.byte_ids.clone())
                }
            };
            self.token_of.insert(new_id, content.clone());
            self.pieces_of.insert(new_id, pieces.clone());
            taken.insert(content.clone());
            learned.push(LearnedToken {
                text: display_token(self.file.flavor, &content),
                token: content,
                old_pieces: pieces,
                count: score.count as u64,
                saved: score.saved as u64,
                entry,
            });
            for changed in self.apply(cand, new_id) {
                let s = self.scores[&changed].saved;
                if s > 0 {
                    heap.push((s, Reverse(changed)));
                }
            }
        }
        learned
    }

    /// Rewrites every word holding `cand` with `new_id`; returns the candidates whose score changed.
    fn apply(&mut self, cand: Candidate, new_id: u32) -> HashSet<Candidate> {
        let mut word_ids = self.where_.remove(&cand).unwrap_or_default();
        word_ids.sort_unstable();
        word_ids.dedup();
        let mut changed = HashSet::new();
        for w in word_ids {
            let w = w as usize;
            if !self.contains(w, cand) {
                continue;
            }
            changed.extend(self.add_contributions(w, -1, None));
            let symbols = &self.words[w];
            let mut rewritten = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                match cand {
                    Candidate::Pair(a, b) if symbols[i] == a && symbols.get(i + 1) == Some(&b) => {
                        rewritten.push(new_id);
                        i += 2;
                    }
                    Candidate::Char(c) if symbols[i] == c => {
                        rewritten.push(new_id);
                        i += 1;
                    }
                    _ => {
                        rewritten.push(symbols[i]);
                        i += 1;
                    }
                }
            }
            self.words[w] = rewritten;
            changed.extend(self.add_contributions(w, 1, Some(new_id)));
        }
        changed
    }

    /// A new byte-level token must be whole characters, or the beginning of one character
    /// (the step towards a character the old vocabulary spells as three or four byte
    /// tokens). Tokens straddling a character boundary (`的` plus half of the next
    /// character) are legal BPE but waste vocabulary on accidents of adjacency.
    fn whole_characters(&self, content: &str) -> bool {
        let Some(byte_of) = &self.byte_of else { return true };
        let bytes: Vec<u8> = content.chars().filter_map(|c| byte_of.get(&c).copied()).collect();
        if std::str::from_utf8(&bytes).is_ok() {
            return true;
        }
        let char_len = match bytes[0] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return false,
        };
        bytes.len() < char_len && bytes[1..].iter().all(|b| (0x80..=0xBF).contains(b))
    }

    fn contains(&self, w: usize, cand: Candidate) -> bool {
        let s = &self.words[w];
        match cand {
            Candidate::Pair(a, b) => s.windows(2).any(|p| p[0] == a && p[1] == b),
            Candidate::Char(c) => s.contains(&c),
        }
    }
}

/// `<0xE4>` -> 0xE4.
pub fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
