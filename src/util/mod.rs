//! Small shared helpers: atomic file and directory writes, CSV records with line numbers,
//! progress bars, a seeded random stream, stop signals.
pub mod atomic;
pub mod csv;
pub mod progress;
pub mod rng;
pub mod signals;
pub mod threads;
