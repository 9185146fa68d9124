//! Vocabulary extension for byte-level BPE and SentencePiece-style tokenizers, and the
//! matching embedding resize.
