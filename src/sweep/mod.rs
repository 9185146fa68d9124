//! Proxy sweeps (`cpt sweep`) and the laws fitted to their results (`cpt fit`).
pub mod fit;
