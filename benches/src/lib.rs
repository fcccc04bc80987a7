//! Benchmarks for tollgate live in `benches/`; this library only holds the inputs they share.
//!
//! Run them with `cargo bench -p tollgate-benches`, or one file with `--bench NAME`.
