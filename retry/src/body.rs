//! The request body the inner service sees.
//!
//! A body that may be resent is read into memory *before* the first send (its exact length is
//! known and within the replay limit, so this is bounded), and every attempt sends that copy.
//! So a request that fails before the inner service read anything (a refused connection, DNS,
//! TLS, a pool failure, an early 429 or 503) is resent with its whole body. Other bodies are
//! forwarded once, untouched.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body [`Retry`](crate::Retry) hands to the inner service.
    ///
    /// A body that may be resent (its exact length is known and within the policy's
    /// [replay limit](crate::RetryPolicyBuilder::max_replay_bytes)) was read into memory before
    /// the first send, and every attempt sends that copy: for [`Bytes`]-backed bodies such as
    /// `Full<Bytes>` the copy is a reference count. Any other body is forwarded frame by frame,
    /// once.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Forward { #[pin] body: B },
        /// What was read before the body turned out larger than it said, then the rest.
        Resume { prefix: VecDeque<Bytes>, body: Pin<Box<B>> },
        Replay { chunks: Chunks, trailers: Option<Box<HeaderMap>> },
    }
}

/// A buffered body's data, cheap to hand to each attempt.
#[derive(Debug, Clone, Default)]
pub(crate) enum Chunks {
    #[default]
    Empty,
    One(Bytes),
    Many {
        all: Arc<[Bytes]>,
        next: usize,
    },
}

impl Chunks {
    fn pop(&mut self) -> Option<Bytes> {
        match self {
            Self::Empty => None,
            Self::One(bytes) => {
                let bytes = std::mem::take(bytes);
                *self = Self::Empty;
                Some(bytes)
            }
            Self::Many { all, next } => {
                let chunk = all.get(*next)?.clone();
                *next += 1;
                Some(chunk)
            }
        }
    }

    fn remaining(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len() as u64,
            Self::Many { all, next } => all[*next..].iter().map(|c| c.len() as u64).sum(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::One(bytes) => bytes.is_empty(),
            Self::Many { all, next } => *next >= all.len(),
        }
    }
}

/// A body read into memory, sent by every attempt. (Trailers are boxed: rare, and this is
/// carried by every request's future.)
#[derive(Debug, Clone, Default)]
pub(crate) struct Replay {
    chunks: Chunks,
    trailers: Option<Box<HeaderMap>>,
}

impl Replay {
    /// The body for one attempt.
    pub(crate) fn body<B>(&self) -> ReplayBody<B> {
        ReplayBody {
            kind: Kind::Replay {
                chunks: self.chunks.clone(),
                trailers: self.trailers.clone(),
            },
        }
    }
}

/// Reads a body into memory before the first send.
#[derive(Debug)]
pub(crate) struct Buffer {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: u64,
    /// The most bytes the body may send: what it declared.
    limit: u64,
    /// Frames read so far: a body of `limit` bytes needs at most `limit` data frames, and one
    /// that sends many more (empty ones, say) is not read to its end before the first send.
    frames: u64,
}

/// Frames read in one poll before yielding to the executor.
const FRAMES_PER_POLL: u32 = 32;
/// Frames beyond the declared length a body may send (empty frames, trailers) while it is read.
const SPARE_FRAMES: u64 = 64;

impl Buffer {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            chunks: Vec::new(),
            trailers: None,
            len: 0,
            limit,
            frames: 0,
        }
    }

    /// Reads `body` until it ends, fails or sends more than it declared (in bytes, or in
    /// frames: `Err(Ok(()))`). Yields to the executor every few frames, so a body whose frames
    /// are always ready cannot hold the thread.
    pub(crate) fn poll_fill<B: Body>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Replay, Result<(), B::Error>>> {
        for _ in 0..FRAMES_PER_POLL {
            if body.is_end_stream() {
                return Poll::Ready(Ok(self.finish()));
            }
            self.frames += 1;
            if self.frames > self.limit.saturating_add(SPARE_FRAMES) {
                return Poll::Ready(Err(Ok(())));
            }
            let Some(frame) = ready!(body.as_mut().poll_frame(cx)) else {
                return Poll::Ready(Ok(self.finish()));
            };
            let frame = match frame {
                Ok(frame) => to_bytes(frame),
                Err(error) => return Poll::Ready(Err(Err(error))),
            };
            match frame.into_data() {
                Ok(data) => {
                    self.len = self.len.saturating_add(data.len() as u64);
                    if !data.is_empty() {
                        self.chunks.push(data);
                    }
                    if self.len > self.limit {
                        return Poll::Ready(Err(Ok(())));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn finish(&mut self) -> Replay {
        let mut chunks = std::mem::take(&mut self.chunks);
        let chunks = match chunks.len() {
            0 => Chunks::Empty,
            1 => Chunks::One(chunks.pop().expect("one chunk")),
            _ => Chunks::Many {
                all: chunks.into(),
                next: 0,
            },
        };
        Replay {
            chunks,
            trailers: self.trailers.take().map(Box::new),
        }
    }

    /// The body to send once after it turned out larger than declared: what was read, then
    /// the rest of it.
    pub(crate) fn resume<B>(&mut self, body: Pin<Box<B>>) -> ReplayBody<B> {
        ReplayBody {
            kind: Kind::Resume {
                prefix: std::mem::take(&mut self.chunks).into(),
                body,
            },
        }
    }
}

impl<B> ReplayBody<B> {
    /// Forwards `body` without keeping a copy.
    pub(crate) fn forward(body: B) -> Self {
        Self {
            kind: Kind::Forward { body },
        }
    }
}

impl<B> From<Bytes> for ReplayBody<B> {
    /// A body that sends `bytes` (what a resend looks like).
    fn from(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Replay {
                chunks: Chunks::One(bytes),
                trailers: None,
            },
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Forward { .. } => "forward",
            Kind::Resume { .. } => "resume",
            Kind::Replay { .. } => "replay",
        };
        f.debug_struct("ReplayBody").field("kind", &kind).finish()
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Forward { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|r| r.map(to_bytes)))
            }
            KindProj::Resume { prefix, body } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(ready!(body.as_mut().poll_frame(cx)).map(|r| r.map(to_bytes)))
            }
            KindProj::Replay { chunks, trailers } => {
                if let Some(chunk) = chunks.pop() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Forward { body } => body.is_end_stream(),
            Kind::Resume { prefix, body } => prefix.is_empty() && body.is_end_stream(),
            Kind::Replay { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Forward { body } => body.size_hint(),
            Kind::Resume { prefix, body } => {
                let read: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
            Kind::Replay { chunks, .. } => SizeHint::with_exact(chunks.remaining()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    async fn fill<B: Body + Unpin>(
        mut body: B,
        limit: u64,
    ) -> Result<Replay, Result<(), B::Error>> {
        let mut buffer = Buffer::new(limit);
        std::future::poll_fn(|cx| buffer.poll_fill(Pin::new(&mut body), cx)).await
    }

    #[tokio::test]
    async fn a_buffered_body_replays_byte_for_byte_every_time() {
        let replay = fill(Full::new(Bytes::from_static(b"hello")), 5)
            .await
            .unwrap();
        for _ in 0..3 {
            let again = replay.body::<Full<Bytes>>();
            assert_eq!(again.size_hint().exact(), Some(5));
            assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
        }
    }

    #[tokio::test]
    async fn keeps_every_chunk_and_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let replay = fill(StreamBody::new(futures_util::stream::iter(frames)), 4)
            .await
            .unwrap();
        let again = replay.body::<Full<Bytes>>().collect().await.unwrap();
        assert_eq!(again.trailers(), Some(&trailers));
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_failed_body_is_reported() {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("broken")),
        ];
        let result = fill(StreamBody::new(futures_util::stream::iter(frames)), 64).await;
        assert!(matches!(result, Err(Err(_))));
    }

    #[tokio::test]
    async fn endless_empty_frames_neither_hold_the_thread_nor_are_read_forever() {
        // Declares 3 bytes, then sends thousands of empty frames before them.
        let mut frames: Frames = (0..5_000).map(|_| Ok(Frame::data(Bytes::new()))).collect();
        frames.push(Ok(Frame::data(Bytes::from_static(b"abc"))));
        let mut body = Box::pin(StreamBody::new(futures_util::stream::iter(frames)));
        let mut buffer = Buffer::new(3);
        let mut pending = 0;
        let result = std::future::poll_fn(|cx| {
            let poll = buffer.poll_fill(body.as_mut(), cx);
            pending += u32::from(poll.is_pending());
            poll
        })
        .await;
        assert!(
            matches!(result, Err(Ok(()))),
            "given up after its spare frames"
        );
        assert!(pending >= 2, "yielded between batches of frames");
        // Sent once as it came: nothing lost.
        let sent = buffer.resume(body).collect().await.unwrap().to_bytes();
        assert_eq!(sent, "abc");
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_stops_the_copy_and_is_resumed_whole() {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"defg"))),
            Ok(Frame::data(Bytes::from_static(b"h"))),
        ];
        let mut body = Box::pin(StreamBody::new(futures_util::stream::iter(frames)));
        let mut buffer = Buffer::new(4);
        let result = std::future::poll_fn(|cx| buffer.poll_fill(body.as_mut(), cx)).await;
        assert!(matches!(result, Err(Ok(()))), "oversize");
        let resumed = buffer.resume(body).collect().await.unwrap().to_bytes();
        assert_eq!(resumed, "abcdefgh", "nothing lost, nothing repeated");
    }
}
