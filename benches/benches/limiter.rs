//! Placeholder: the `limiter` benchmarks arrive with the tollgate-limiter crate. Benchmarks nothing yet.

fn main() {}
