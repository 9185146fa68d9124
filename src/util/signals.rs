//! SIGINT / SIGTERM as a flag the training loop polls between steps, so it can write a
//! checkpoint and exit cleanly. A second signal of the same kind ends the process at once
//! (exit status 130 / 143), for a user who really means it.
use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct StopSignal {
    requested: Arc<AtomicBool>,
}

impl StopSignal {
    /// Install the handlers (once per process).
    pub fn install() -> Result<Self> {
        let requested = Arc::new(AtomicBool::new(false));
        for (signal, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            // Order matters: the shutdown check runs before the flag is set, so it fires
            // only on the second signal.
            flag::register_conditional_shutdown(signal, code, Arc::clone(&requested))
                .context("installing the signal handlers")?;
            flag::register(signal, Arc::clone(&requested)).context("installing the signal handlers")?;
        }
        Ok(Self { requested })
    }

    /// Whether SIGINT or SIGTERM has arrived.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_sets_the_flag_instead_of_killing() {
        let stop = StopSignal::install().unwrap();
        assert!(!stop.requested());
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert!(stop.requested());
    }
}
