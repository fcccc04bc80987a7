//! An idempotent disk cache for tower with atomic writes and request coalescing.
//!
//! **Not implemented yet.** This crate is a placeholder in the tollgate workspace; it exports
//! nothing. Its design is tracked in the project's issue #7. Until then, see
//! [`tollgate-core`](https://docs.rs/tollgate-core) for the pieces every layer shares.
