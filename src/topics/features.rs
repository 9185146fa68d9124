//! Text -> the rows of the input matrix whose average represents it: each in-vocabulary
//! word's own row, the character n-grams of every word (`</s>` excepted) and the word
//! n-grams, the last two hashed into the `bucket` rows after the words' rows.
use super::hashing::{char_ngrams, fnv1a, split_words, word_ngrams, NgramSettings, EOS};
use super::vocab::Vocabulary;

#[derive(Debug, Clone, PartialEq)]
pub struct Featurizer {
    vocab: Vocabulary,
    ngrams: NgramSettings,
    /// Each vocabulary word's own row and character n-gram rows, computed once
    /// (`subword_rows[subword_start[w]..subword_start[w + 1]]`).
    subword_start: Vec<u32>,
    subword_rows: Vec<u32>,
}

/// Reusable buffers for `Featurizer::features`.
#[derive(Debug, Default)]
pub struct FeatureBuf {
    pub rows: Vec<u32>,
    hashes: Vec<u32>,
    ngrams: Vec<u32>,
}

impl Featurizer {
    /// `ngrams.bucket` must already be 0 when no n-gram is hashed (see `NgramSettings`).
    pub fn new(vocab: Vocabulary, ngrams: NgramSettings) -> Self {
        let nwords = vocab.len() as u32;
        let mut subword_start = Vec::with_capacity(vocab.len() + 1);
        let mut subword_rows = Vec::new();
        let mut scratch = Vec::new();
        subword_start.push(0);
        for (id, word) in vocab.words().iter().enumerate() {
            subword_rows.push(id as u32);
            if word != EOS {
                scratch.clear();
                char_ngrams(word, &ngrams, &mut scratch);
                subword_rows.extend(scratch.iter().map(|b| nwords + b));
            }
            subword_start.push(subword_rows.len() as u32);
        }
        Featurizer { vocab, ngrams, subword_start, subword_rows }
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }
    pub fn ngrams(&self) -> &NgramSettings {
        &self.ngrams
    }

    /// Rows of the input matrix: one per word, then the buckets.
    pub fn rows(&self) -> usize {
        self.vocab.len() + self.ngrams.bucket as usize
    }

    /// The feature rows of `text` (with `</s>` at its end) into `buf.rows`, in fastText's
    /// order: per word its row and character n-grams, then the word n-grams. Returns the
    /// number of words, `</s>` included (fastText's token count for the learning rate).
    pub fn features(&self, text: &str, buf: &mut FeatureBuf) -> usize {
        buf.rows.clear();
        buf.hashes.clear();
        let nwords = self.vocab.len() as u32;
        for word in split_words(text).chain(std::iter::once(EOS)) {
            let hash = fnv1a(word.as_bytes());
            buf.hashes.push(hash);
            match self.vocab.find(word, hash) {
                Some(id) => {
                    let (a, b) = (self.subword_start[id as usize] as usize, self.subword_start[id as usize + 1] as usize);
                    buf.rows.extend_from_slice(&self.subword_rows[a..b]);
                }
                None if word != EOS => {
                    buf.ngrams.clear();
                    char_ngrams(word, &self.ngrams, &mut buf.ngrams);
                    buf.rows.extend(buf.ngrams.iter().map(|b| nwords + b));
                }
                None => {}
            }
        }
        buf.ngrams.clear();
        word_ngrams(&buf.hashes, &self.ngrams, &mut buf.ngrams);
        buf.rows.extend(buf.ngrams.iter().map(|b| nwords + b));
        buf.hashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_vocabulary_words_keep_their_row_and_unknown_words_only_ngrams() {
        let vocab = Vocabulary::from_words(vec!["ab".into(), EOS.into()]);
        let s = NgramSettings { word_ngrams: 2, minn: 2, maxn: 2, bucket: 1 << 20 };
        let f = Featurizer::new(vocab, s);
        let mut buf = FeatureBuf::default();
        let n = f.features("ab zz", &mut buf);
        assert_eq!(n, 3);
        let bucket = |g: &str| 2 + fnv1a(g.as_bytes()) % s.bucket;
        let mut want = vec![0, bucket("<a"), bucket("ab"), bucket("b>")];
        want.extend([bucket("<z"), bucket("zz"), bucket("z>")]);
        want.push(1); // </s>: its row, no character n-grams
        let mut pairs = Vec::new();
        word_ngrams(&[fnv1a(b"ab"), fnv1a(b"zz"), fnv1a(EOS.as_bytes())], &s, &mut pairs);
        want.extend(pairs.iter().map(|p| 2 + p));
        assert_eq!(buf.rows, want);
        assert_eq!(f.rows(), 2 + (1 << 20));
    }
}
