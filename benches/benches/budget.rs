//! Placeholder: the `budget` benchmarks arrive with the tollgate-budget crate. Benchmarks nothing yet.

fn main() {}
