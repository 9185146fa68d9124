//! How many threads candle's CPU kernels use. candle's element-wise/reduction pool spins at a
//! barrier after every op; for small models that synchronisation costs more than the second
//! core gives back, and on a loaded machine a spinning waiter can slow a step 5-8x (measured
//! with `perf` on the tiny preset: 57% of the time in the barrier). So small models run
//! candle's pool single-threaded unless the user says otherwise.
//!
//! candle has two knobs: its element-wise pool reads `CANDLE_NUM_THREADS` once, when it
//! starts; its matmul (gemm) reads `RAYON_NUM_THREADS` at every call and splits the product
//! over rayon's global pool. Both are set to the chosen count, so a one-thread run does not
//! wake rayon's workers for every matmul of a tiny model (docs/bench_train.md).
use std::sync::Once;

/// Below this many parameters, candle's CPU pool runs on one thread by default.
pub const SMALL_MODEL_PARAMETERS: usize = 20_000_000;

static CONFIGURED: Once = Once::new();

/// Sets `CANDLE_NUM_THREADS` and `RAYON_NUM_THREADS` before candle's pool starts. An explicit
/// `threads`, then an existing `CANDLE_NUM_THREADS`, win over the size heuristic; an existing
/// `RAYON_NUM_THREADS` is kept unless `threads` is explicit.
pub fn configure_cpu_threads(parameters: usize, threads: Option<usize>) {
    CONFIGURED.call_once(|| {
        let chosen = match threads {
            Some(n) => Some(n.max(1)),
            None if std::env::var_os("CANDLE_NUM_THREADS").is_some() => None,
            None if parameters < SMALL_MODEL_PARAMETERS => Some(1),
            None => None,
        };
        if let Some(n) = chosen {
            // rayon's global pool keeps every core for this process's own parallel work
            // (tokenizing the corpus); starting it now, before the variable changes, fixes
            // its size. Only candle's matmul reads the variable afterwards.
            rayon::current_num_threads();
            // Called before any candle op runs and before this process starts threads of its
            // own that read the environment.
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            if threads.is_some() || std::env::var_os("RAYON_NUM_THREADS").is_none() {
                std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            }
        }
    });
}
