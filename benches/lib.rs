//! Criterion benchmarks of the hot path (see `benches/`) and the peer comparison script.
