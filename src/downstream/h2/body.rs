//! A client's HTTP/2 request body: what the connection hands over from DATA and trailing
//! HEADERS frames, read by the proxy's upstream send. The connection and the body meet in one
//! small mutex-guarded queue; bytes read from it go back to the client's windows through the
//! connection (WINDOW_UPDATE only for what the upstream side has taken: a slow upstream holds
//! the client back instead of filling our memory).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::frame::Reason;

/// Why a client's HTTP/2 request body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the client reset the stream ({0})")]
    Reset(Reason),
    #[error("the request body was malformed ({0})")]
    Malformed(Reason),
    #[error("the HTTP/2 connection closed before the request body ended")]
    ConnectionGone,
}

impl StreamError {
    /// The code to reset a stream with when this error ends an exchange.
    pub fn reason(self) -> Reason {
        match self {
            StreamError::Reset(r) | StreamError::Malformed(r) => r,
            StreamError::ConnectionGone => Reason::CANCEL,
        }
    }
}

/// What the connection shares with its streams: which streams' bodies have bytes to give back
/// to the client's windows, which slots' wakers fired, and the connection task to wake for
/// either. Only the connection's thread touches it in practice; the mutexes make it `Sync`
/// and are never contended.
#[derive(Default)]
pub struct ConnShared {
    /// (stream, bytes) read or dropped by request bodies since the connection last looked.
    released: Mutex<Vec<(u32, usize)>>,
    ready: Mutex<Vec<u32>>,
    pub waker: AtomicWaker,
}

fn lock_ids<T>(ids: &Mutex<Vec<T>>) -> MutexGuard<'_, Vec<T>> {
    ids.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConnShared {
    /// What request bodies read or dropped since the last call, into `into` (emptied first).
    pub fn take_released(&self, into: &mut Vec<(u32, usize)>) {
        into.clear();
        std::mem::swap(&mut *lock_ids(&self.released), into);
    }

    fn release(&self, stream: u32, n: usize) {
        if n > 0 {
            lock_ids(&self.released).push((stream, n));
            self.waker.wake();
        }
    }

    pub fn queue_ready(&self, slot: u32) {
        lock_ids(&self.ready).push(slot);
        self.waker.wake();
    }

    /// The slots woken since the last call, into `into` (emptied first).
    pub fn take_ready(&self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(&mut *lock_ids(&self.ready), into);
    }

    pub fn has_ready(&self) -> bool {
        !lock_ids(&self.ready).is_empty()
    }
}

/// DATA payloads under this size are gathered into one block instead of queued one by one: a
/// client sending one-byte frames would otherwise hold a chunk (and its bookkeeping) per
/// byte of its window.
const SMALL: usize = 1024;
/// A gathered block is queued once it holds this much.
const GATHER: usize = 4096;

#[derive(Default)]
pub struct Queue {
    chunks: VecDeque<Bytes>,
    /// Small payloads gathered, after the chunks.
    tail: BytesMut,
    trailers: Option<HeaderMap>,
    ended: bool,
    error: Option<StreamError>,
    /// The body was dropped: DATA that still arrives is given back at once.
    dropped: bool,
    reader: Option<Waker>,
}

/// The connection's end of one stream's body.
pub struct Feed {
    queue: Arc<Mutex<Queue>>,
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Feed {
    pub fn new(stream: u32, shared: Arc<ConnShared>, declared: Option<u64>) -> (Feed, RequestBody) {
        let queue = Arc::new(Mutex::new(Queue::default()));
        (
            Feed {
                queue: queue.clone(),
            },
            RequestBody {
                queue,
                stream,
                shared,
                remaining: declared,
                done: false,
            },
        )
    }

    /// Hands over (a copy of) a DATA frame's bytes; false when the body is gone (the caller
    /// gives the bytes back to the client's windows itself).
    pub fn push(&self, data: &[u8]) -> bool {
        let mut q = lock(&self.queue);
        if q.dropped {
            return false;
        }
        if data.len() < SMALL {
            q.tail.extend_from_slice(data);
            if q.tail.len() >= GATHER {
                let block = q.tail.split().freeze();
                q.chunks.push_back(block);
            }
        } else {
            if !q.tail.is_empty() {
                let block = q.tail.split().freeze();
                q.chunks.push_back(block);
            }
            q.chunks.push_back(Bytes::copy_from_slice(data));
        }
        wake(&mut q);
        true
    }

    pub fn end(&self, trailers: Option<HeaderMap>) {
        let mut q = lock(&self.queue);
        q.trailers = trailers;
        q.ended = true;
        wake(&mut q);
    }

    pub fn fail(&self, error: StreamError) {
        let mut q = lock(&self.queue);
        if q.error.is_none() && !q.ended {
            q.error = Some(error);
        }
        wake(&mut q);
    }
}

/// A feed dropped before the client ended the body (the stream reset, the connection gone):
/// the reader learns it, rather than waiting for bytes that will never come.
impl Drop for Feed {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        if !q.ended && q.error.is_none() {
            q.error = Some(StreamError::ConnectionGone);
        }
        wake(&mut q);
    }
}

fn wake(q: &mut Queue) {
    if let Some(w) = q.reader.take() {
        w.wake();
    }
}

/// The proxy's end: DATA frames, then trailers.
pub struct RequestBody {
    queue: Arc<Mutex<Queue>>,
    stream: u32,
    shared: Arc<ConnShared>,
    /// Bytes the declared `content-length` has left, if one was declared.
    remaining: Option<u64>,
    done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut q = lock(&this.queue);
        let next = match q.chunks.pop_front() {
            Some(data) => Some(data),
            None if !q.tail.is_empty() => Some(q.tail.split().freeze()),
            None => None,
        };
        if let Some(data) = next {
            drop(q);
            this.shared.release(this.stream, data.len());
            if let Some(left) = this.remaining.as_mut() {
                *left = left.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(e) = q.error {
            this.done = true;
            return Poll::Ready(Some(Err(e)));
        }
        if q.ended {
            this.done = true;
            return Poll::Ready(q.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        match &q.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => q.reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let q = lock(&self.queue);
        q.ended && q.chunks.is_empty() && q.tail.is_empty() && q.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.dropped = true;
        let unread = q.chunks.drain(..).map(|c| c.len()).sum::<usize>() + q.tail.len();
        q.tail = BytesMut::new();
        q.reader = None;
        drop(q);
        self.shared.release(self.stream, unread);
    }
}
