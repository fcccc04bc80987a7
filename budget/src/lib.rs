//! Credit budgets for tower: reservations, windows, a critical reserve, a 402 latch, balance
//! sync, and state that survives `kill -9` or is shared by a fleet.
//!
//! When one request costs one credit, runaway code is runaway spend. This crate makes
//! overspending impossible: every request **reserves** its cost from a [`Ledger`] before it is
//! sent (before it even waits for a rate permit), and the reservation is **settled** by a
//! [`ChargePolicy`] when the response arrives (or refunded when the request fails, errors or is
//! cancelled). The check and the reservation are one atomic step of the ledger's
//! [`store`], so under any concurrency spend plus reservations never exceed a limit.
//!
//! - **Limits** per [`Window`]: calendar days, weeks and months in a configured [`UtcOffset`],
//!   rolling windows, lifetime totals; several at once, all or nothing.
//! - **Priority**: a [`Priority`] request extension; normal and backfill requests stop at the
//!   critical reserve, critical ones may spend it.
//! - **402 latch**: an upstream `402` ([`OutcomeKind::CreditsExhausted`] by the core classifier)
//!   refuses every further request at once, until a window rolls over, a balance read after the
//!   402 is synced above zero, or [`Ledger::reset`].
//! - **Balance sync**: [`Ledger::sync_balance`], fed from a response header
//!   ([`BudgetLayer::balance_header`]) or a polled balance endpoint ([`Balance`]).
//! - **Stores**: in memory ([`Ledger::new`], [`LedgerBuilder::build`]); a journal file
//!   ([`LedgerBuilder::open`]: locked, private, group-committed, and after a crash spend is
//!   never lower than what was charged nor counted twice); Redis (feature `redis`,
//!   `LedgerBuilder::redis`: one ledger for a fleet of processes, leases, fail closed with
//!   [`StoreUnavailable`]). [`Ledger::to_dyn`] erases the store for code that picks one at run
//!   time.
//! - **Server side**: [`quota::KeyQuotaLayer`] keeps a ledger per API key (or client address)
//!   for an axum (or any tower) server.
//!
//! Refusals are [`BudgetExhausted`] errors that callers `downcast_ref` from the [`BoxError`] the
//! service returns; a store that cannot answer gives [`StoreUnavailable`] (nothing is sent).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use tollway_budget::{BudgetExhausted, BudgetLayer, ExhaustedReason, Ledger, Window};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ledger = Ledger::builder()
//!     .limit(2, Window::day())
//!     .limit(100, Window::month())
//!     .build();
//! let mut client = ServiceBuilder::new()
//!     .layer(BudgetLayer::new(ledger.clone()))
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, Infallible>(http::Response::new("ok"))
//!     }));
//!
//! for _ in 0..2 {
//!     let response = client.ready().await.unwrap().call(http::Request::new(())).await;
//!     assert!(response.is_ok());
//! }
//! let refused = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! let exhausted = refused.downcast_ref::<BudgetExhausted>().unwrap();
//! assert_eq!(exhausted.reason(), ExhaustedReason::Window);
//! assert_eq!(ledger.snapshot().windows[0].spent, 2);
//! # }
//! ```
//!
//! [`OutcomeKind::CreditsExhausted`]: tollway_core::OutcomeKind::CreditsExhausted

mod balance;
mod error;
pub mod future;
mod layer;
mod ledger;
mod policy;
mod priority;
pub mod quota;
mod reservation;
mod service;
mod snapshot;
pub mod store;
mod window;

/// The `redis` client this crate's fleet mode speaks, re-exported so that callers build their
/// connection from the very same version.
#[cfg(feature = "redis")]
pub use redis;

pub use balance::Balance;
pub use error::{BalanceParseError, ReserveError};
pub use layer::BudgetLayer;
pub use ledger::{Ledger, LedgerBuilder};
pub use policy::{ChargePolicy, Cost};
pub use priority::Priority;
pub use quota::builder::QuotaConfigError;
pub use reservation::Reservation;
pub use service::Budget;
pub use snapshot::{Snapshot, WindowUsage};
pub use tollway_core::durable::Locked;
pub use tollway_core::{BoxError, BudgetExhausted, ExhaustedReason, StoreUnavailable};
pub use window::{Period, UtcOffset, Window};
