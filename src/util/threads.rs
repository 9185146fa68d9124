//! How many threads candle's CPU kernels use. candle's element-wise/reduction pool spins at a
//! barrier after every op; for small models that synchronisation costs more than the second
//! core gives back, and on a loaded machine a spinning waiter can slow a step 5-8x (measured
//! with `perf` on the tiny preset: 57% of the time in the barrier). So small models run
//! candle's pool single-threaded unless the user says otherwise.
use std::sync::Once;

/// Below this many parameters, candle's CPU pool runs on one thread by default.
pub const SMALL_MODEL_PARAMETERS: usize = 20_000_000;

static CONFIGURED: Once = Once::new();

/// Sets `CANDLE_NUM_THREADS` before candle's pool starts (it reads it once). An explicit
/// `threads`, then an existing `CANDLE_NUM_THREADS`, win over the size heuristic.
pub fn configure_cpu_threads(parameters: usize, threads: Option<usize>) {
    CONFIGURED.call_once(|| {
        let chosen = match threads {
            Some(n) => Some(n.max(1)),
            None if std::env::var_os("CANDLE_NUM_THREADS").is_some() => None,
            None if parameters < SMALL_MODEL_PARAMETERS => Some(1),
            None => None,
        };
        if let Some(n) = chosen {
            // Called before any candle op runs and before this process starts threads of its
            // own that read the environment.
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    });
}
