//! Credit budgets for tower: reservations, windows, a critical reserve and a 402 latch.
//!
//! **Not implemented yet.** This crate is a placeholder in the tollgate workspace; it exports
//! nothing. Its design is tracked in the project's issue #6. Until then, see
//! [`tollgate-core`](https://docs.rs/tollgate-core) for the pieces every layer shares.
