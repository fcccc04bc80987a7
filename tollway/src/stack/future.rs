//! [`UncachedFuture`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tollway_cache::CacheBody;

pin_project! {
    /// The future [`Uncached`](super::Uncached) returns: the inner future, its response's body
    /// wrapped in [`CacheBody::uncached`].
    pub struct UncachedFuture<F, B> {
        #[pin]
        inner: F,
        _body: PhantomData<fn() -> B>,
    }
}

impl<F, B> UncachedFuture<F, B> {
    pub(super) fn new(inner: F) -> Self {
        Self {
            inner,
            _body: PhantomData,
        }
    }
}

impl<F, B> fmt::Debug for UncachedFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UncachedFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for UncachedFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(result.map(|response| response.map(CacheBody::uncached)))
    }
}
