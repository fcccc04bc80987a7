//! Placeholder: the `breaker` benchmarks arrive with the tollgate-breaker crate. Benchmarks nothing yet.

fn main() {}
