//! Placeholder: the `cache` benchmarks arrive with the tollgate-cache crate. Benchmarks nothing yet.

fn main() {}
