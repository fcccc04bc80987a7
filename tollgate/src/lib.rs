//! One dependency for every tollgate layer, and the client stack in the right order.
//!
//! **Not implemented yet.** This crate is a placeholder in the tollgate workspace; it exports
//! nothing. Its design is tracked in the project's issue #9. Until then, see
//! [`tollgate-core`](https://docs.rs/tollgate-core) for the pieces every layer shares.
