//! Runnable companions to tollway: a simulator of the rate-limited, credit-billed API that
//! tollway is built against, the `pipeline` demo that crawls it, and two small binaries: an
//! axum `server` behind tollway-limiter's server side, and a `hyper_client` on the client stack.
//!
//! - [`upstream`]: the simulator, as a library (for tests) and as the `upstream` binary
//!   (`cargo run -p tollway-examples --bin upstream -- --help`). It keeps its own exact record
//!   of what a client did, [`upstream::Stats`], and so judges every end-to-end test.
//! - [`pipeline`]: the demo that crawls the followers of a list of users with a durable work
//!   queue and dead letters, and reports what it spent
//!   (`cargo run -p tollway-examples --bin pipeline`).
//! - `server` (`cargo run -p tollway-examples --bin server`): an axum API with a per-IP limit
//!   and a per-key quota, answering 429 with `Retry-After` and the standard rate-limit headers.
//!
//! ```
//! use tollway_examples::upstream::Upstream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let sim = Upstream::builder().rate(11).credits(1_000).spawn().await?;
//! let base_url = sim.url(); // "http://127.0.0.1:PORT": point the client under test here.
//! # let _ = base_url;
//!
//! // ... run the client, then judge it by the simulator's own record:
//! let stats = sim.stats();
//! assert_eq!(stats.status(429), 0, "the client was rate limited");
//! assert!(stats.max_in_any_1s_window <= 11);
//! assert_eq!(stats.duplicate_page_fetches, 0, "the client paid twice for a page");
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod pipeline;
pub mod upstream;
