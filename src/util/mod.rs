//! Small shared helpers: atomic file and directory writes, progress bars.
pub mod atomic;
pub mod progress;
