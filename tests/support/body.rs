//! Request/response bodies for the toolkit: the proxy under test must be fed
//! bodies whose framing (chunk boundaries, trailers, mid-stream errors) the test
//! controls, which `Full`/`Empty` alone cannot express.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use tokio::sync::mpsc;

pub type TestBody = BoxBody<Bytes, io::Error>;

pub fn empty_body() -> TestBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full_body(data: impl Into<Bytes>) -> TestBody {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body that yields each chunk as its own DATA frame, then the trailers.
/// Its size is deliberately unknown so hyper sends it chunked (h1) rather than
/// with a Content-Length.
pub fn body_from_chunks(chunks: Vec<Bytes>, trailers: Option<HeaderMap>) -> TestBody {
    ChunkBody {
        chunks: chunks.into(),
        trailers,
    }
    .boxed()
}

struct ChunkBody {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }
}

/// A body fed from another task, so a test can hold the stream open, pace it,
/// or abort it half-way (to check the proxy streams instead of buffering and
/// propagates client aborts).
pub fn body_channel(capacity: usize) -> (BodySender, TestBody) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BodySender { tx }, ChannelBody { rx }.boxed())
}

pub struct BodySender {
    tx: mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
}

impl BodySender {
    /// Returns false once the receiving side (the connection) is gone.
    pub async fn send_data(&self, data: impl Into<Bytes>) -> bool {
        self.tx.send(Ok(Frame::data(data.into()))).await.is_ok()
    }

    /// Ends the body with trailers; dropping the sender ends it without.
    pub async fn send_trailers(self, trailers: HeaderMap) -> bool {
        self.tx.send(Ok(Frame::trailers(trailers))).await.is_ok()
    }

    /// Fails the body mid-stream, which makes hyper reset the stream (h2) or
    /// close the connection (h1) like a client that died.
    pub async fn abort(self) {
        let _ = self
            .tx
            .send(Err(io::Error::other("test aborted the body")))
            .await;
    }
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx)
    }
}

/// `len` bytes of `'x'` in frames of at most `frame` bytes, then `trailers`.
pub(crate) struct RepeatBody {
    pub(crate) remaining: usize,
    pub(crate) frame: usize,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining > 0 {
            let n = self.remaining.min(self.frame);
            self.remaining -= n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.trailers.is_none()
    }

    // Not exact on purpose: an exact hint would make hyper add Content-Length
    // and drop the chunked framing that carries h1 trailers.
    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}
