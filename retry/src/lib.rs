//! Retries for tower: jittered backoff, Retry-After, retry budgets and body replay.
//!
//! **Not implemented yet.** This crate is a placeholder in the tollgate workspace; it exports
//! nothing. Its design is tracked in the project's issue #5. Until then, see
//! [`tollgate-core`](https://docs.rs/tollgate-core) for the pieces every layer shares.
