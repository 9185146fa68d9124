//! Small shared helpers: atomic file and directory writes, progress bars, stop signals.
pub mod atomic;
pub mod progress;
pub mod signals;
