//! Laws fitted to sweep results: data mixing (per-source loss over mixture shares), the
//! best LR against the additional-language ratio, and loss against compute. All share one
//! Levenberg-Marquardt solver (the `levenberg-marquardt` crate, through `lm`) that reports R²,
//! residuals and parameter uncertainty.
pub mod almr;
pub mod compute;
pub mod lm;
pub mod mixing;
