//! The body types of the request path. `ProxyBody` is what the proxy answers with: an
//! upstream body streamed through, or a local reply. `RequestBody` is the client's body on its
//! way upstream. Both count bytes into the request's record, and an upstream body carries what
//! must live exactly as long as it: the endpoint's active-request count, the request record
//! (in-flight count, metrics), and the pooled connection, which goes back to its pool only
//! once the body has been read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::downstream::{BodyError as RequestBodyError, Incoming};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::{ActiveGuard, ExchangeError, Release, ResponseBody};

use super::record::RequestRecord;

pub struct ProxyBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

struct UpstreamBody {
    inner: ResponseBody,
    release: Option<Release>,
    _active: Option<ActiveGuard>,
    record: Arc<RequestRecord>,
    /// The route timeout covers the response body too (Envoy: until the upstream response is
    /// complete); past it the stream is reset.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout_stat: Option<Arc<crate::metrics::ClusterStats>>,
}

/// Why a response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] ExchangeError),
    #[error("upstream request timeout while the response body was streaming")]
    Timeout,
}

/// A route timeout still running when the response headers arrived.
pub(crate) struct BodyDeadline {
    pub at: tokio::time::Instant,
    pub stats: Option<Arc<crate::metrics::ClusterStats>>,
}

/// The codecs' own replies (431, 408) are whole bodies.
impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> ProxyBody {
        ProxyBody::full(bytes)
    }
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody { kind: Kind::Empty }
    }

    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(crate) fn upstream(
        inner: ResponseBody,
        release: Option<Release>,
        active: Option<ActiveGuard>,
        record: Arc<RequestRecord>,
        deadline: Option<BodyDeadline>,
    ) -> ProxyBody {
        let mut release = release;
        let ended = inner.is_end_stream();
        // An empty body may never be polled; its connection is reusable right away.
        if inner.is_end_stream()
            && let Some(r) = release.take()
        {
            r.release();
        }
        ProxyBody {
            kind: Kind::Upstream(Box::new(UpstreamBody {
                inner,
                release,
                _active: active,
                record,
                deadline: match &deadline {
                    Some(d) if !ended => Some(Box::pin(tokio::time::sleep_until(d.at))),
                    _ => None,
                },
                timeout_stat: deadline.and_then(|d| d.stats),
            })),
        }
    }

    /// Bytes of a local reply's body.
    pub fn local_len(&self) -> u64 {
        match &self.kind {
            Kind::Full(Some(b)) => b.len() as u64,
            _ => 0,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(up) => {
                let polled = Pin::new(&mut up.inner).poll_frame(cx);
                if polled.is_pending()
                    && let Some(d) = &mut up.deadline
                    && d.as_mut().poll(cx).is_ready()
                {
                    up.deadline = None;
                    // The connection is mid-response: it must not go back to the pool.
                    up.release = None;
                    if let Some(s) = &up.timeout_stat {
                        s.upstream_rq_timeout.inc();
                    }
                    let status = up.record.status();
                    up.record
                        .set_status(status, Some(super::error::Flag::UpstreamRequestTimeout));
                    return Poll::Ready(Some(Err(BodyError::Timeout)));
                }
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        up.record
                            .response_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    } else if let Some(trailers) = frame.trailers_ref()
                        && let Some(s) = super::grpc_status_of(trailers)
                    {
                        up.record.set_grpc_status(s);
                    }
                }
                // The server stops polling once `is_end_stream` says so, so the end is noticed
                // after the last frame, not only at `None`.
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => up.inner.is_end_stream(),
                    _ => false,
                };
                if ended {
                    up.deadline = None;
                    if let Some(r) = up.release.take() {
                        r.release();
                    }
                }
                polled.map(|p| p.map(|r| r.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(up) => up.inner.size_hint(),
        }
    }
}

/// The client's request body on its way upstream, counted as it streams. A body that a
/// retry may need again is buffered (bounded by the caller) and can be replayed.
pub struct RequestBody {
    inner: ReqInner,
    record: Option<Arc<RequestRecord>>,
}

enum ReqInner {
    Stream(Incoming),
    /// Streamed while kept for a retry or mirror (unsized bodies); counted where it is kept.
    Kept(super::keep::KeptBody),
    Buffered {
        data: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
}

impl RequestBody {
    pub fn new(inner: Incoming, record: Option<Arc<RequestRecord>>) -> RequestBody {
        RequestBody {
            inner: ReqInner::Stream(inner),
            record,
        }
    }

    pub(crate) fn kept(inner: super::keep::KeptBody) -> RequestBody {
        RequestBody {
            inner: ReqInner::Kept(inner),
            record: None,
        }
    }

    /// A replayable copy of a buffered body.
    pub fn buffered(
        data: Bytes,
        trailers: Option<http::HeaderMap>,
        record: Option<Arc<RequestRecord>>,
    ) -> RequestBody {
        RequestBody {
            inner: ReqInner::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
            record,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            ReqInner::Stream(inner) => Pin::new(inner).poll_frame(cx),
            ReqInner::Kept(inner) => inner.poll_frame(cx),
            ReqInner::Buffered { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        };
        if let (Poll::Ready(Some(result)), Some(rec)) = (&polled, &this.record) {
            match result {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        rec.request_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                // Bad chunking and the like: the client's fault, answered 400, not 503.
                Err(_) => rec.set_downstream_body_failed(),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ReqInner::Stream(inner) => inner.is_end_stream(),
            ReqInner::Kept(inner) => inner.is_end_stream(),
            ReqInner::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ReqInner::Stream(inner) => inner.size_hint(),
            ReqInner::Kept(_) => SizeHint::default(),
            ReqInner::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}
