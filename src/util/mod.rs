//! Small shared helpers: atomic file and directory writes, CSV records with line numbers,
//! progress bars, a seeded random stream, stop signals, process CPU time.
pub mod atomic;
pub mod cpu_time;
pub mod csv;
pub mod jsonl;
pub mod progress;
pub mod rng;
pub mod signals;
pub mod threads;
