//! Small shared helpers: atomic file and directory writes, progress bars, a seeded random
//! stream, stop signals.
pub mod atomic;
pub mod jsonl;
pub mod progress;
pub mod rng;
pub mod signals;
pub mod threads;
