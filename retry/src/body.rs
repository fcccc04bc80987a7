//! The request body the inner service sees: the caller's body on the first send, recorded when
//! it can be replayed, and the recording on every resend.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use pin_project_lite::pin_project;

pin_project! {
    /// The body [`Retry`](crate::Retry) hands to the inner service.
    ///
    /// On the first send it forwards the caller's body frame by frame (as [`Bytes`]); when the
    /// body's exact length is known and within the policy's replay limit, it keeps a copy of
    /// each frame as it passes (for [`Bytes`]-backed bodies such as `Full<Bytes>` that is a
    /// reference count, not a copy). Resends replay that copy.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Forward { #[pin] body: B },
        Record { #[pin] body: B, recording: Arc<Mutex<Recording>> },
        Replay { chunks: VecDeque<Bytes>, trailers: Option<HeaderMap> },
    }
}

/// A copy of a body taken as it was first sent.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    complete: bool,
    /// Bytes recorded so far, and the most that will be: a body that sends more than its size
    /// hint promised stops being recorded rather than growing without bound.
    len: u64,
    limit: u64,
    overflowed: bool,
}

/// How a request's body can be sent again.
#[derive(Debug)]
pub(crate) enum Replay {
    /// Nothing to send: an empty body.
    Empty,
    /// A recording taken during the first send (complete only if the inner service read it all).
    Recorded(Arc<Mutex<Recording>>),
}

impl Replay {
    /// The body for a resend, or `None` when the recording is incomplete.
    pub(crate) fn body<B>(&self) -> Option<ReplayBody<B>> {
        let (chunks, trailers) = match self {
            Self::Empty => (VecDeque::new(), None),
            Self::Recorded(recording) => {
                let recording = recording.lock();
                if !recording.complete {
                    return None;
                }
                (
                    recording.chunks.iter().cloned().collect(),
                    recording.trailers.clone(),
                )
            }
        };
        Some(ReplayBody {
            kind: Kind::Replay { chunks, trailers },
        })
    }

    pub(crate) fn is_complete(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Recorded(recording) => recording.lock().complete,
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

    /// Forwards `body`, keeping a copy for resends.
    pub(crate) fn record(body: B, limit: u64) -> (Self, Replay) {
        let recording = Arc::new(Mutex::new(Recording {
            limit,
            ..Recording::default()
        }));
        let body = Self {
            kind: Kind::Record {
                body,
                recording: Arc::clone(&recording),
            },
        };
        (body, Replay::Recorded(recording))
    }
}

impl<B> From<Bytes> for ReplayBody<B> {
    /// A body that sends `bytes` (what a resend looks like).
    fn from(bytes: Bytes) -> Self {
        let mut chunks = VecDeque::new();
        if !bytes.is_empty() {
            chunks.push_back(bytes);
        }
        Self {
            kind: Kind::Replay {
                chunks,
                trailers: None,
            },
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Forward { .. } => "forward",
            Kind::Record { .. } => "record",
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
            KindProj::Record {
                mut body,
                recording,
            } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                let mut recording = recording.lock();
                match frame {
                    None => {
                        recording.complete = !recording.overflowed;
                        Poll::Ready(None)
                    }
                    Some(Err(error)) => Poll::Ready(Some(Err(error))),
                    Some(Ok(frame)) => {
                        let frame = to_bytes(frame);
                        if let Some(data) = frame.data_ref() {
                            recording.len = recording.len.saturating_add(data.len() as u64);
                            if recording.len > recording.limit {
                                recording.overflowed = true;
                                recording.chunks = Vec::new();
                            } else if !recording.overflowed {
                                recording.chunks.push(data.clone());
                            }
                        } else if let Some(trailers) = frame.trailers_ref() {
                            recording.trailers = Some(trailers.clone());
                        }
                        // hyper stops polling a body once it reports its end (after the last
                        // byte of a known length), so the final `None` may never come.
                        if body.is_end_stream() {
                            recording.complete = !recording.overflowed;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
            KindProj::Replay { chunks, trailers } => {
                if let Some(chunk) = chunks.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Forward { body } | Kind::Record { body, .. } => body.is_end_stream(),
            Kind::Replay { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Forward { body } | Kind::Record { body, .. } => body.size_hint(),
            Kind::Replay { chunks, .. } => {
                SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn records_while_forwarding_then_replays() {
        let (body, replay) = ReplayBody::record(Full::new(Bytes::from_static(b"hello")), 64);
        assert!(replay.body::<Full<Bytes>>().is_none(), "not read yet");
        let first = body.collect().await.unwrap().to_bytes();
        assert_eq!(first, "hello");
        assert!(replay.is_complete());
        for _ in 0..2 {
            let again = replay.body::<Full<Bytes>>().unwrap();
            assert_eq!(again.size_hint().exact(), Some(5));
            assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
        }
    }

    #[tokio::test]
    async fn complete_when_the_body_says_it_ended_without_a_final_poll() {
        // Reads frames the way hyper does: stop as soon as the body reports its end.
        let (mut body, replay) = ReplayBody::record(Full::new(Bytes::from_static(b"hi")), 64);
        let mut read = Vec::new();
        while !body.is_end_stream() {
            let frame = body.frame().await.unwrap().unwrap();
            read.extend_from_slice(frame.data_ref().unwrap());
        }
        assert_eq!(read, b"hi");
        assert!(replay.is_complete());
    }

    #[tokio::test]
    async fn keeps_every_chunk_and_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let (body, replay) = ReplayBody::record(stream, 64);
        body.collect().await.unwrap();
        let again = replay
            .body::<Full<Bytes>>()
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(again.trailers(), Some(&trailers));
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_failed_body_is_not_replayable() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("broken")),
        ];
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let (body, replay) = ReplayBody::record(stream, 64);
        assert!(body.collect().await.is_err());
        assert!(!replay.is_complete());
    }

    #[tokio::test]
    async fn a_body_longer_than_promised_is_not_kept() {
        let (body, replay) = ReplayBody::record(Full::new(Bytes::from_static(b"too long")), 4);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "too long");
        assert!(!replay.is_complete());
    }
}
