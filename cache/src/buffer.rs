//! Reading a response body into memory, up to a cap.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

/// A body read for storing, or as much of it as was read before it proved unstorable.
pub(crate) enum Buffered<B> {
    /// The whole body, within the cap.
    Whole(Bytes),
    /// Known too large before reading a byte.
    Untouched(B),
    /// Over the cap (or carrying trailers) after reading `read`.
    Partial(VecDeque<Frame<Bytes>>, Pin<Box<B>>),
}

/// Reads `body` whole if it has at most `cap` bytes and no trailers.
pub(crate) async fn buffer<B>(body: B, cap: usize) -> Result<Buffered<B>, B::Error>
where
    B: Body<Data = Bytes>,
{
    if body.size_hint().lower() > cap as u64 {
        return Ok(Buffered::Untouched(body));
    }
    let mut body = Box::pin(body);
    let mut read = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            // Trailers cannot be stored: hand back what was read.
            read.push_back(frame);
            return Ok(Buffered::Partial(read, body));
        };
        len += data.len();
        read.push_back(frame);
        if len > cap {
            return Ok(Buffered::Partial(read, body));
        }
    }
    let whole = if read.len() == 1 {
        read.pop_front()
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default()
    } else {
        let mut joined = BytesMut::with_capacity(len);
        for frame in read {
            if let Some(data) = frame.data_ref() {
                joined.extend_from_slice(data);
            }
        }
        joined.freeze()
    };
    Ok(Buffered::Whole(whole))
}
