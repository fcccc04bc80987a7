//! Benchmarks for tollway live in `benches/`; this library only holds the inputs they share.
//!
//! Run them with `cargo bench -p tollway-benches`, or one file with `--bench NAME`.
