//! Stop strings: generation of a row ends as soon as its text contains one, and the text is
//! cut before the earliest occurrence (lm-evaluation-harness' `until`). While streaming,
//! text that could still become a stop string is held back.

/// A set of stop strings (empty strings are ignored).
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    strings: Vec<String>,
}

impl StopStrings {
    pub fn new<S: AsRef<str>>(strings: &[S]) -> Self {
        Self { strings: strings.iter().map(|s| s.as_ref().to_string()).filter(|s| !s.is_empty()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Byte offset of the earliest stop string in `text`, if any.
    pub fn find(&self, text: &str) -> Option<usize> {
        self.strings.iter().filter_map(|s| text.find(s.as_str())).min()
    }

    /// `text` up to the first stop string (all of it when there is none).
    pub fn truncate<'a>(&self, text: &'a str) -> &'a str {
        match self.find(text) {
            Some(i) => &text[..i],
            None => text,
        }
    }

    /// How much of `text` (which holds no stop string) is final: everything except a tail
    /// that is the start of some stop string, or an incomplete UTF-8 character (decoded as
    /// U+FFFD) that later tokens will complete.
    pub fn settled_len(&self, text: &str) -> usize {
        let mut end = text.len();
        for s in &self.strings {
            // The longest proper prefix of `s` that `text` ends with.
            for (i, _) in s.char_indices().skip(1) {
                if text.ends_with(&s[..i]) {
                    end = end.min(text.len() - i);
                    break;
                }
            }
        }
        let kept = &text[..end];
        kept.trim_end_matches('\u{FFFD}').len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_the_earliest_stop_string() {
        let s = StopStrings::new(&["\ndef", "Question:", ""]);
        assert_eq!(s.truncate("x = 1\nQuestion: a\ndef f"), "x = 1\n");
        assert_eq!(s.truncate("nothing"), "nothing");
    }

    #[test]
    fn holds_back_what_may_become_a_stop_string() {
        let s = StopStrings::new(&["Question:"]);
        assert_eq!(s.settled_len("The answer is 4.\nQues"), "The answer is 4.\n".len());
        assert_eq!(s.settled_len("The answer is 4."), "The answer is 4.".len());
        assert_eq!(s.settled_len("ab\u{FFFD}"), 2);
    }
}
