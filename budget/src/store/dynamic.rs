//! [`DynStore`]: any store, chosen at run time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tollway_core::StoreUnavailable;

use super::Store;
use super::backend::{Backend, Decision, Finish, Grant};
use crate::snapshot::Snapshot;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreUnavailable>> + Send>>;

/// Any store behind one type, for code that picks the store at run time (a memory ledger
/// here, a Redis one there) and must name one ledger type:
/// [`Ledger::to_dyn`](crate::Ledger::to_dyn). It shares the state of the ledger it was made
/// from; each operation costs a virtual call and, for most, an allocation.
#[derive(Clone)]
pub struct DynStore(Arc<dyn Erased>);

impl fmt::Debug for DynStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DynStore").field(&self.0).finish()
    }
}

impl DynStore {
    /// The store `S` of a ledger, type-erased; `keep` holds it alive.
    pub(crate) fn new<S: Store, K: Send + Sync + 'static>(keep: K, store: fn(&K) -> &S) -> Self {
        Self(Arc::new(Holder { keep, store }))
    }
}

struct Holder<K, S> {
    keep: K,
    store: fn(&K) -> &S,
}

impl<K, S: Store> fmt::Debug for Holder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt((self.store)(&self.keep), f)
    }
}

trait Erased: fmt::Debug + Send + Sync + 'static {
    fn reserve(self: Arc<Self>, cost: u64, floor: u64, now: i64) -> DynReserving;
    fn finish(&self, grant: Grant, finish: Finish, now: i64) -> BoxFuture<()>;
    fn latch(&self, now: i64) -> BoxFuture<()>;
    fn reset(&self, now: i64) -> BoxFuture<()>;
    fn sync_balance(&self, balance: u64, now: i64) -> BoxFuture<()>;
    fn snapshot(&self, now: i64) -> BoxFuture<Snapshot>;
    fn flush(&self) -> BoxFuture<()>;
    fn lease(&self) -> Option<Duration>;
    fn is_shared(&self) -> bool;
}

impl<K: Send + Sync + 'static, S: Store> Erased for Holder<K, S> {
    fn reserve(self: Arc<Self>, cost: u64, floor: u64, now: i64) -> DynReserving {
        let future = (self.store)(&self.keep).reserve(cost, floor, now);
        DynReserving(Box::new(Erasing {
            holder: self,
            future: Some(future),
        }))
    }

    fn finish(&self, grant: Grant, finish: Finish, now: i64) -> BoxFuture<()> {
        Box::pin((self.store)(&self.keep).finish(grant, finish, now))
    }

    fn latch(&self, now: i64) -> BoxFuture<()> {
        Box::pin((self.store)(&self.keep).latch(now))
    }

    fn reset(&self, now: i64) -> BoxFuture<()> {
        Box::pin((self.store)(&self.keep).reset(now))
    }

    fn sync_balance(&self, balance: u64, now: i64) -> BoxFuture<()> {
        Box::pin((self.store)(&self.keep).sync_balance(balance, now))
    }

    fn snapshot(&self, now: i64) -> BoxFuture<Snapshot> {
        Box::pin((self.store)(&self.keep).snapshot(now))
    }

    fn flush(&self) -> BoxFuture<()> {
        Box::pin((self.store)(&self.keep).flush())
    }

    fn lease(&self) -> Option<Duration> {
        (self.store)(&self.keep).lease()
    }

    fn is_shared(&self) -> bool {
        (self.store)(&self.keep).is_shared()
    }
}

/// A reservation of a [`DynStore`].
// Public in a private module: the sealed store trait names it.
#[allow(unreachable_pub)]
pub struct DynReserving(Box<dyn ErasedReserving>);

impl fmt::Debug for DynReserving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DynReserving")
    }
}

trait ErasedReserving: Send {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Decision, StoreUnavailable>>;
    fn cancel(self: Box<Self>, now: i64);
}

struct Erasing<K, S: Backend> {
    holder: Arc<Holder<K, S>>,
    future: Option<S::Reserving>,
}

impl<K: Send + Sync + 'static, S: Store> ErasedReserving for Erasing<K, S> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Decision, StoreUnavailable>> {
        let future = self
            .future
            .as_mut()
            .expect("DynReserving polled after completion");
        let output = std::task::ready!(Pin::new(future).poll(cx));
        self.future = None;
        Poll::Ready(output)
    }

    fn cancel(mut self: Box<Self>, now: i64) {
        if let Some(future) = self.future.take() {
            (self.holder.store)(&self.holder.keep).cancel(future, now);
        }
    }
}

impl Future for DynReserving {
    type Output = Result<Decision, StoreUnavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll(cx)
    }
}

impl Store for DynStore {}

impl Backend for DynStore {
    type Reserving = DynReserving;
    type Pending = BoxFuture<()>;
    type Snapshotting = BoxFuture<Snapshot>;

    fn reserve(&self, cost: u64, floor: u64, now: i64) -> DynReserving {
        Arc::clone(&self.0).reserve(cost, floor, now)
    }

    fn cancel(&self, reserving: DynReserving, now: i64) {
        reserving.0.cancel(now);
    }

    fn finish(&self, grant: Grant, finish: Finish, now: i64) -> BoxFuture<()> {
        self.0.finish(grant, finish, now)
    }

    fn latch(&self, now: i64) -> BoxFuture<()> {
        self.0.latch(now)
    }

    fn reset(&self, now: i64) -> BoxFuture<()> {
        self.0.reset(now)
    }

    fn sync_balance(&self, balance: u64, now: i64) -> BoxFuture<()> {
        self.0.sync_balance(balance, now)
    }

    fn snapshot(&self, now: i64) -> BoxFuture<Snapshot> {
        self.0.snapshot(now)
    }

    fn flush(&self) -> BoxFuture<()> {
        self.0.flush()
    }

    fn lease(&self) -> Option<Duration> {
        self.0.lease()
    }

    fn is_shared(&self) -> bool {
        self.0.is_shared()
    }
}
