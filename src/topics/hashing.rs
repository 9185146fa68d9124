//! fastText's text features, computed exactly as fastText computes them so that the same
//! settings give the same feature ids (checked against fastText in `tests/topics_fasttext.rs`):
//! - words are runs of bytes between ASCII whitespace (space, `\n`, `\r`, `\t`, `\v`, `\f`)
//!   and NUL, and every document ends with the word `</s>` (fastText's end of line);
//! - the hash is fastText's FNV-1a over bytes taken as *signed* chars (a quirk fastText keeps
//!   for model compatibility);
//! - character n-grams of `<word>` (n = minn..=maxn characters, UTF-8 aware; single
//!   characters at the boundaries are skipped) and word n-grams (2..=word_ngrams words,
//!   hashes chained with 116049371) land in `bucket` shared rows.

/// The word fastText appends at the end of every line.
pub const EOS: &str = "</s>";

const FNV_OFFSET: u32 = 2_166_136_261;
const FNV_PRIME: u32 = 16_777_619;
/// fastText's multiplier when it chains word hashes into a word n-gram hash.
const WORD_NGRAM_MULTIPLIER: u64 = 116_049_371;

/// One byte into an FNV-1a state, sign-extended as fastText's `int8_t` cast does.
#[inline]
fn fnv_step(h: u32, byte: u8) -> u32 {
    (h ^ (byte as i8 as i32 as u32)).wrapping_mul(FNV_PRIME)
}

/// fastText's string hash.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| fnv_step(h, b))
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

/// The words of a text as fastText reads them (without the final `</s>`).
pub fn split_words(text: &str) -> impl Iterator<Item = &str> {
    // Separators are ASCII, so every piece is valid UTF-8.
    text.split(|c: char| c.is_ascii() && is_separator(c as u8)).filter(|w| !w.is_empty())
}

/// Which n-grams become features, and how many hashed rows they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NgramSettings {
    /// Longest word n-gram (1: words only).
    pub word_ngrams: u32,
    /// Shortest and longest character n-gram, in characters (maxn 0: none).
    pub minn: u32,
    pub maxn: u32,
    /// Rows shared by all hashed n-grams.
    pub bucket: u32,
}

impl NgramSettings {
    /// True when some n-gram is hashed into the buckets (fastText sets `bucket` to 0 otherwise).
    pub fn uses_buckets(&self) -> bool {
        self.word_ngrams > 1 || self.maxn > 0
    }
}

/// Bucket indices (0..bucket) of the character n-grams of `word`, appended to `out` in
/// fastText's order: by start character, then by length.
pub fn char_ngrams(word: &str, s: &NgramSettings, out: &mut Vec<u32>) {
    if s.maxn == 0 || s.bucket == 0 {
        return;
    }
    // `<word>`, without building the string: the boundary bytes are ASCII.
    let bytes = word.as_bytes();
    let len = bytes.len() + 2;
    let at = |i: usize| -> u8 {
        if i == 0 {
            b'<'
        } else if i == len - 1 {
            b'>'
        } else {
            bytes[i - 1]
        }
    };
    let continuation = |b: u8| b & 0xC0 == 0x80;
    for i in 0..len {
        if continuation(at(i)) {
            continue;
        }
        let mut h = FNV_OFFSET;
        let mut j = i;
        let mut n = 1;
        while j < len && n <= s.maxn {
            h = fnv_step(h, at(j));
            j += 1;
            while j < len && continuation(at(j)) {
                h = fnv_step(h, at(j));
                j += 1;
            }
            if n >= s.minn && !(n == 1 && (i == 0 || j == len)) {
                out.push(h % s.bucket);
            }
            n += 1;
        }
    }
}

/// Bucket indices of the word n-grams (2..=word_ngrams words) over a document's word
/// hashes, appended to `out` in fastText's order. fastText stores the 32-bit hashes as
/// signed integers and chains them in 64 bits, so each is sign-extended first.
pub fn word_ngrams(hashes: &[u32], s: &NgramSettings, out: &mut Vec<u32>) {
    if s.word_ngrams <= 1 || s.bucket == 0 {
        return;
    }
    let widen = |h: u32| h as i32 as i64 as u64;
    let n = s.word_ngrams as usize;
    for i in 0..hashes.len() {
        let mut h = widen(hashes[i]);
        for &next in hashes.iter().take(i + n).skip(i + 1) {
            h = h.wrapping_mul(WORD_NGRAM_MULTIPLIER).wrapping_add(widen(next));
            out.push((h % s.bucket as u64) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        // FNV-1a 32 of ASCII strings (signed and unsigned bytes agree below 0x80).
        assert_eq!(fnv1a(b""), 0x811c9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9cf968);
        // Bytes >= 0x80 are sign-extended: differs from the textbook FNV-1a.
        let textbook = [0xe4u8, 0xb8, 0xad].iter().fold(FNV_OFFSET, |h, &b| (h ^ b as u32).wrapping_mul(FNV_PRIME));
        assert_ne!(fnv1a("中".as_bytes()), textbook);
    }

    #[test]
    fn words_split_on_ascii_whitespace_only() {
        let words: Vec<&str> = split_words(" a\tb\n\nc\u{3000}d \u{0}e\x0bf ").collect();
        assert_eq!(words, ["a", "b", "c\u{3000}d", "e", "f"]);
    }

    #[test]
    fn char_ngrams_count_characters_and_skip_boundary_unigrams() {
        let s = NgramSettings { word_ngrams: 1, minn: 1, maxn: 2, bucket: 1 << 30 };
        let mut out = Vec::new();
        char_ngrams("中文", &s, &mut out);
        // `<中文>`: unigrams 中 文 (not < or >), bigrams <中 中文 文>.
        let want: Vec<u32> = ["<中", "中", "中文", "文", "文>"].iter().map(|g| fnv1a(g.as_bytes()) % s.bucket).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn word_ngrams_chain_sign_extended_hashes() {
        let s = NgramSettings { word_ngrams: 3, minn: 0, maxn: 0, bucket: 1000 };
        let hashes = [0x8000_0001u32, 7, 9];
        let mut out = Vec::new();
        word_ngrams(&hashes, &s, &mut out);
        let w = |h: u32| h as i32 as i64 as u64;
        let h01 = w(hashes[0]).wrapping_mul(116_049_371).wrapping_add(7);
        let h012 = h01.wrapping_mul(116_049_371).wrapping_add(9);
        let h12 = 7u64 * 116_049_371 + 9;
        assert_eq!(out, vec![(h01 % 1000) as u32, (h012 % 1000) as u32, (h12 % 1000) as u32]);
    }
}
