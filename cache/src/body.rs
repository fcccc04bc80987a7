//! The response body the cache returns.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body from [`Cache`](crate::Cache): either a whole body held in memory (hits,
    /// and the responses the cache stored or shared) or the inner service's body streaming
    /// through (responses that are not cached, or too large to be), after the frames the cache
    /// already read from it.
    ///
    /// A concrete type rather than a boxed body: a hit costs no allocation for the body, and
    /// the streaming case adds one branch per frame.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Inner { #[pin] body: B },
        Partial { read: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>> },
    }
}

impl<B> CacheBody<B> {
    /// A whole body.
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner service's body, untouched.
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// `read` (frames already taken from `rest`), then what is left of `rest`.
    pub(crate) fn partial(read: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Partial { read, rest },
        }
    }

    /// The inner service's body passed through untouched, as the cache returns responses it
    /// does not store: for stacks that switch the cache off yet keep one response type (such
    /// as the `tollway` crate's client stack).
    pub fn uncached(body: B) -> Self {
        Self::inner(body)
    }

    /// Whether this body is held in memory whole (served from or stored in the cache).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { data } => f
                .debug_struct("CacheBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Inner { .. } => f.debug_struct("CacheBody::Inner").finish_non_exhaustive(),
            Kind::Partial { read, .. } => f
                .debug_struct("CacheBody::Partial")
                .field("frames_read", &read.len())
                .finish_non_exhaustive(),
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Partial { read, rest } => match read.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Partial { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Partial { read, rest } => {
                let buffered: u64 = read
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.len() as u64)
                    .sum();
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + buffered);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + buffered);
                }
                sum
            }
        }
    }
}
