//! [`StoreUnavailable`]: Redis could not decide.
//!
//! A fleet limiter fails closed by default: the request is not sent, and the
//! [`Limiter`](crate::Limiter) service returns core's [`StoreUnavailable`] (boxed, so callers can
//! `downcast_ref` it). With [`fail_open_to_local`](crate::RateLimiterBuilder::fail_open_to_local)
//! the limiter admits through a local in-memory quota instead and the error is only logged.

pub(crate) use tollway_core::StoreUnavailable;

/// The layer name the limiter's store errors carry.
pub(crate) const LAYER: &str = "rate limiter";
