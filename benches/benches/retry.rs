//! Placeholder: the `retry` benchmarks arrive with the tollgate-retry crate. Benchmarks nothing yet.

fn main() {}
