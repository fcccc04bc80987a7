//! [`ExchangeGuardLayer`]: one timeout for a whole exchange, body included, and a cap on the
//! size of a response body.
//!
//! A timeout around the service call alone ends when the headers arrive: an upstream that then
//! trickles the body a byte at a time holds the caller for as long as it likes. The guard starts
//! one clock when the request is sent and hands it to the response body, which fails with
//! [`ExchangeTimeout`] once it runs out, however the bytes come. The same body counts what it
//! lets through and fails with [`BodyTooLarge`] past the cap (at once when `Content-Length`
//! already says so), so no layer above it ever buffers more.
//!
//! Both failures come from the body, not from the call: a `200` that costs a credit is not
//! retried by a retry layer that sees only the call's result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tollway_core::BoxError;
use tower::{Layer, Service};

/// The whole exchange (headers and body) took longer than the guard allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeTimeout {
    after: Duration,
}

impl ExchangeTimeout {
    pub(crate) fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long the exchange was allowed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for ExchangeTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no whole response within {:.1} s (headers and body)",
            self.after.as_secs_f64()
        )
    }
}

impl std::error::Error for ExchangeTimeout {}

/// A response body is larger than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: u64,
    announced: Option<u64>,
}

impl BodyTooLarge {
    pub(crate) fn new(limit: u64, announced: Option<u64>) -> Self {
        Self { limit, announced }
    }

    /// The cap, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The size the response announced (`Content-Length`), if it did.
    pub fn announced(&self) -> Option<u64> {
        self.announced
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.announced {
            Some(len) => write!(
                f,
                "response body of {len} bytes is over the cap of {} bytes",
                self.limit
            ),
            None => write!(f, "response body is over the cap of {} bytes", self.limit),
        }
    }
}

impl std::error::Error for BodyTooLarge {}

/// Guards each exchange of the service it wraps: one clock for headers and body together
/// (the body fails with [`ExchangeTimeout`] when it runs out, however slowly its bytes come),
/// and a cap on the body's size ([`BodyTooLarge`], at once when `Content-Length` says so). Both
/// failures come from the body, not the call, so a retry layer that sees only the call's result
/// does not pay again for a `200`.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeGuardLayer {
    timeout: Duration,
    max_body: u64,
}

impl ExchangeGuardLayer {
    /// Allows each exchange `timeout`, headers and body together, and each body `max_body`
    /// bytes.
    pub const fn new(timeout: Duration, max_body: u64) -> Self {
        Self { timeout, max_body }
    }
}

impl<S> Layer<S> for ExchangeGuardLayer {
    type Service = ExchangeGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ExchangeGuard {
            inner,
            timeout: self.timeout,
            max_body: self.max_body,
        }
    }
}

/// The service [`ExchangeGuardLayer`] makes.
#[derive(Debug, Clone)]
pub struct ExchangeGuard<S> {
    inner: S,
    timeout: Duration,
    max_body: u64,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ExchangeGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<GuardedBody<ResBody>>;
    type Error = BoxError;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        GuardFuture {
            inner: self.inner.call(request),
            // tokio clamps a sleep past the end of its clock to "far in the future".
            clock: Some(Box::pin(tokio::time::sleep(self.timeout))),
            timeout: self.timeout,
            max_body: self.max_body,
        }
    }
}

pin_project! {
    /// The future [`ExchangeGuard`] returns: the response, its body on the exchange's clock.
    pub struct GuardFuture<F> {
        #[pin]
        inner: F,
        clock: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        max_body: u64,
    }
}

impl<F> fmt::Debug for GuardFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardFuture")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<GuardedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(clock) = this.clock.as_mut() else {
            return Poll::Ready(Err(
                "the exchange guard's future was polled after it ended".into()
            ));
        };
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let clock = this.clock.take();
            let (timeout, max_body) = (*this.timeout, *this.max_body);
            return Poll::Ready(result.map_err(Into::into).map(|response| {
                response.map(|body| GuardedBody {
                    inner: body,
                    clock,
                    timeout,
                    max_body,
                    read: 0,
                    failed: false,
                })
            }));
        }
        ready!(clock.as_mut().poll(cx));
        this.clock.take();
        Poll::Ready(Err(Box::new(ExchangeTimeout {
            after: *this.timeout,
        })))
    }
}

pin_project! {
    /// A response body on its exchange's clock and under the size cap.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        clock: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        max_body: u64,
        read: u64,
        failed: bool,
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("read", &self.read)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let limit = *this.max_body;
        let announced = this.inner.size_hint().exact();
        if *this.read == 0 && announced.is_some_and(|len| len > limit) {
            *this.failed = true;
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit, announced }))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.read = this.read.saturating_add(data.remaining() as u64);
                    if *this.read > limit {
                        *this.failed = true;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit,
                            announced: None,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some(clock) = this.clock.as_mut() {
                    ready!(clock.as_mut().poll(cx));
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(ExchangeTimeout {
                        after: *this.timeout,
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tollway_core::error::find_cause;
    use tower::ServiceExt;

    fn service<B: Send + 'static>(
        respond: impl Fn() -> B + Clone + Send + 'static,
        delay: Duration,
    ) -> impl Service<Request<()>, Response = Response<GuardedBody<B>>, Error = BoxError, Future: Send>
    {
        ExchangeGuardLayer::new(Duration::from_secs(5), 100).layer(tower::service_fn(
            move |_: Request<()>| {
                let respond = respond.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, BoxError>(Response::new(respond()))
                }
            },
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_time_out() {
        let svc = service(|| Full::new(Bytes::new()), Duration::from_secs(6));
        let started = tokio::time::Instant::now();
        let error = svc.oneshot(Request::new(())).await.unwrap_err();
        assert!(find_cause::<ExchangeTimeout>(&*error).is_some(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_times_out_on_the_same_clock() {
        let trickle = || {
            let bytes = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))), ()))
            });
            StreamBody::new(Box::pin(bytes))
        };
        let svc = service(trickle, Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let response = svc.oneshot(Request::new(())).await.unwrap();
        let error = response.into_body().collect().await.unwrap_err();
        let timeout = find_cause::<ExchangeTimeout>(&*error).unwrap();
        assert_eq!(timeout.after(), Duration::from_secs(5));
        // The headers took 1 s of the 5: the body had the other 4, not 5 of its own.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_over_the_cap_fail_announced_or_not() {
        let announced = service(|| Full::new(Bytes::from(vec![b'x'; 101])), Duration::ZERO);
        let body = announced
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .into_body();
        let error = body.collect().await.unwrap_err();
        let too_large = find_cause::<BodyTooLarge>(&*error).unwrap();
        assert_eq!((too_large.limit(), too_large.announced()), (100, Some(101)));

        let chunks = || {
            let frames =
                (0..4).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'y'; 30]))));
            StreamBody::new(futures_util::stream::iter(frames))
        };
        let streamed = service(chunks, Duration::ZERO);
        let body = streamed
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .into_body();
        let error = body.collect().await.unwrap_err();
        assert_eq!(
            find_cause::<BodyTooLarge>(&*error).unwrap().announced(),
            None
        );

        let fits = service(|| Full::new(Bytes::from(vec![b'z'; 100])), Duration::ZERO);
        let body = fits.oneshot(Request::new(())).await.unwrap().into_body();
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 100);
    }
}
