//! The one response body type the proxy returns: an upstream body streamed through, or a
//! local reply. Streaming an upstream body also carries what must live exactly as long as it:
//! the endpoint's active-request count, the in-flight count that drain waits for, and the
//! pooled connection, which goes back to its pool only after the body has been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::{ActiveGuard, Release};

use super::InFlight;

pub struct ProxyBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
    _active: Option<ActiveGuard>,
    _in_flight: Option<InFlight>,
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
        inner: Incoming,
        release: Option<Release>,
        active: Option<ActiveGuard>,
        in_flight: Option<InFlight>,
    ) -> ProxyBody {
        let mut release = release;
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
                _in_flight: in_flight,
            })),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(up) => {
                let polled = Pin::new(&mut up.inner).poll_frame(cx);
                // The server stops polling once `is_end_stream` says so, so the end is noticed
                // after the last frame, not only at `None`.
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => up.inner.is_end_stream(),
                    _ => false,
                };
                if ended && let Some(r) = up.release.take() {
                    r.release();
                }
                polled
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
