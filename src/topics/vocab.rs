//! The word vocabulary: every word seen in the training texts at least `min_count` times
//! (`</s>` included), each with its own row, found by fastText's hash with linear probing.
use std::collections::HashMap;

use super::hashing::{fnv1a, split_words, EOS};

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocabulary {
    words: Vec<String>,
    /// Open addressing over `fnv1a(word)`: a word id or `EMPTY`; the length is a power of two.
    slots: Vec<u32>,
}

impl Vocabulary {
    /// Words in id order (ids are rows of the input matrix).
    pub fn from_words(words: Vec<String>) -> Self {
        let mut slots = vec![EMPTY; (words.len() * 2).next_power_of_two().max(16)];
        let mask = slots.len() - 1;
        for (id, w) in words.iter().enumerate() {
            let mut i = fnv1a(w.as_bytes()) as usize & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = id as u32;
        }
        Vocabulary { words, slots }
    }

    /// Counts the words of `texts` and keeps those seen `min_count` times or more, the most
    /// frequent first (ties in order of first appearance), as fastText orders them.
    pub fn count<'a>(texts: impl Iterator<Item = &'a str>, min_count: u64) -> Self {
        let mut counts: HashMap<&str, (u64, usize)> = HashMap::new();
        let mut note = |w: &'a str| {
            let next = counts.len();
            counts.entry(w).or_insert((0, next)).0 += 1;
        };
        for text in texts {
            split_words(text).for_each(&mut note);
            note(EOS);
        }
        let mut kept: Vec<(&str, u64, usize)> =
            counts.into_iter().filter(|(_, (c, _))| *c >= min_count).map(|(w, (c, first))| (w, c, first)).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        Self::from_words(kept.into_iter().map(|(w, _, _)| w.to_string()).collect())
    }

    /// The id of `word` whose hash is `hash`.
    pub fn find(&self, word: &str, hash: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let id = self.slots[i];
            if id == EMPTY {
                return None;
            }
            if self.words[id as usize] == word {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_orders_and_finds() {
        let v = Vocabulary::count(["b a b", "c b a", "a"].into_iter(), 1);
        // b: 3, a: 3, </s>: 3, c: 1; ties keep first appearance.
        assert_eq!(v.words(), ["b", "a", EOS, "c"]);
        for (i, w) in v.words().iter().enumerate() {
            assert_eq!(v.find(w, fnv1a(w.as_bytes())), Some(i as u32));
        }
        assert_eq!(v.find("d", fnv1a(b"d")), None);
        let frequent = Vocabulary::count(["b a b", "c b a", "a"].into_iter(), 2);
        assert_eq!(frequent.words(), ["b", "a", EOS]);
    }
}
