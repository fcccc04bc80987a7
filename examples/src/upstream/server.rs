//! Running the simulator: [`Upstream`], a server on a socket, and [`UpstreamHandle`], its record.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::UpstreamBuilder;
use super::handlers;
use super::limits::WindowKind;
use super::state::Shared;
use super::stats::Stats;

/// How long [`Upstream::shutdown`] lets open requests finish before it stops the server anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A cheap, cloneable handle on a simulator's state, for reading its record in process.
///
/// Every clone, and every [`Router`] made from it, shares one balance, one set of rate windows
/// and one record.
#[derive(Debug, Clone)]
pub struct UpstreamHandle {
    shared: Arc<Shared>,
}

impl UpstreamHandle {
    /// A snapshot of the record, the same as `GET /__stats` returns.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The credits left.
    pub fn credits_left(&self) -> u64 {
        self.shared.credits_left()
    }

    /// The rate now, in followers requests per second per key.
    pub fn rate(&self) -> u32 {
        self.shared.rate()
    }

    /// Changes the rate from now on, as a change of plan does (at least 1): every answer
    /// states the new limit, `/sys/balance` reports it, and the windows keep what they counted.
    pub fn set_rate(&self, rate: u32) {
        self.shared.set_rate(rate);
    }

    /// How the rate is counted.
    pub fn window(&self) -> WindowKind {
        self.shared.window()
    }

    /// The simulator's routes, sharing this handle's state: serve them, nest them, or call them
    /// as a tower service.
    pub fn router(&self) -> Router {
        handlers::router(Arc::clone(&self.shared))
    }
}

impl UpstreamBuilder {
    /// Builds the simulator without a socket: its routes and a handle on its record. The
    /// outage clock starts now.
    pub fn into_router(self) -> (Router, UpstreamHandle) {
        let handle = UpstreamHandle {
            shared: Arc::new(Shared::new(self)),
        };
        (handle.router(), handle)
    }

    /// Starts the simulator on `127.0.0.1` on a free port, in a background task of the current
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the socket cannot be bound.
    pub async fn spawn(self) -> io::Result<Upstream> {
        self.spawn_on((std::net::Ipv4Addr::LOCALHOST, 0)).await
    }

    /// Starts the simulator on `addr`, in a background task of the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if `addr` cannot be resolved or bound.
    pub async fn spawn_on(self, addr: impl ToSocketAddrs) -> io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (router, handle) = self.into_router();
        let (shutdown, signal) = oneshot::channel::<()>();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            // A dropped sender also means "stop".
            let _ = signal.await;
        });
        let task = tokio::spawn(serve.into_future());
        Ok(Upstream {
            addr,
            handle,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}

/// A running simulator; see the [module docs](super) for an example.
///
/// Dropping it stops the server gracefully in the background; [`Upstream::shutdown`] stops it
/// and waits.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    handle: UpstreamHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Upstream {
    /// A builder with the default configuration.
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulator's base URL, `http://IP:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the record, the same as `GET /__stats` returns.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// A handle on the simulator's state that outlives this value.
    pub fn handle(&self) -> UpstreamHandle {
        self.handle.clone()
    }

    /// The simulator's routes, sharing this server's state.
    pub fn router(&self) -> Router {
        self.handle.router()
    }

    /// Stops accepting connections, lets open requests finish (for up to 5 seconds), and waits
    /// for the server to stop.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
