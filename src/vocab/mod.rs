//! Vocabulary extension for byte-level BPE and SentencePiece-style tokenizers, and the
//! matching embedding resize.
//!
//! - [`learn`]: new tokens from a corpus (continued BPE on the tokenizer's own encodings)
//! - [`tokenizer_file`]: read/extend/write `tokenizer.json` without touching existing ids
//! - [`resize`]: grow `embed_tokens` / `lm_head` and `config.json` to the new vocabulary
//! - [`stats`]: characters and bytes per token, per language, before and after
pub mod corpus;
pub mod learn;
pub mod tokenizer_file;
pub mod extend;
pub mod resize;
pub mod stats;
