//! Rate limiting for tower: GCRA buckets, fair client-side waiting and server-side 429s.
//!
//! **Not implemented yet.** This crate is a placeholder in the tollgate workspace; it exports
//! nothing. Its design is tracked in the project's issue #3. Until then, see
//! [`tollgate-core`](https://docs.rs/tollgate-core) for the pieces every layer shares.
