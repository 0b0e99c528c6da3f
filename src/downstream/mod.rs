//! The client side: how requests arrive, below the proxy. Listeners, connection limits and
//! the drain ([`server`], [`workers`]) hand each connection to a codec: HTTP/1.1 is our own
//! ([`h1`]); HTTP/2 (h2c prior knowledge) is ours too ([`h2`]). A codec knows
//! only a [`Handler`]:
//! request in, response future out. The proxy is one; a test's stub is another. Requests
//! carry one body type, [`Incoming`], from either codec.

pub mod date;
pub mod h1;
pub mod h2;
pub mod server;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// What serves the requests a codec reads. Generic, not a trait object: the codec calls it
/// once per request and boxes the future itself (see `h1::serve`), so the handler's future is
/// built in place in that box, with no dynamic call and no second copy.
pub trait Handler: Send + Sync + 'static {
    /// The response body the codec writes.
    type Body: Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static>
        + From<Bytes>
        + Unpin
        + Send
        + 'static;

    /// One request, from its head to the response to send back.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;

    /// Connections, requests in flight and the drain flag, which readiness and the drain
    /// read and the codecs keep up to date.
    fn drain_state(&self) -> &Arc<DrainState>;

    /// Where the listeners count connections (Envoy's `downstream_cx_*`).
    fn metrics(&self) -> &Arc<crate::metrics::Registry>;
}

/// Per-connection facts the request path reads.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Shared state the drain sequence and readiness read.
#[derive(Debug, Default)]
pub struct DrainState {
    pub draining: AtomicBool,
    pub in_flight: AtomicUsize,
    pub connections: AtomicUsize,
    pub idle: Notify,
}

impl DrainState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

pub use h1::{OnUpgrade, Upgraded};

/// A client's request body.
pub enum Incoming {
    Empty,
    H1(h1::RequestBody),
    H2(h2::RequestBody),
    /// hyper's body: embedders serving the proxy with hyper.
    Hyper(hyper::body::Incoming),
}

/// Why a client's request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    H1(#[from] crate::wire::DecodeError),
    #[error(transparent)]
    H2(#[from] h2::StreamError),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// A retry took the body over: this attempt's copy stops.
    #[error("the request body went to a later attempt")]
    Superseded,
    /// A mirror's copy of a body too big to keep, or whose attempts all ended early.
    #[error("the request body could not be kept for a copy")]
    NotKept,
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Incoming::Empty => Poll::Ready(None),
            Incoming::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Incoming::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Incoming::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Incoming::Empty => true,
            Incoming::H1(b) => b.is_end_stream(),
            Incoming::H2(b) => b.is_end_stream(),
            Incoming::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Incoming::Empty => SizeHint::with_exact(0),
            Incoming::H1(b) => b.size_hint(),
            Incoming::H2(b) => b.size_hint(),
            Incoming::Hyper(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Incoming::Empty => "Incoming::Empty",
            Incoming::H1(_) => "Incoming::H1",
            Incoming::H2(_) => "Incoming::H2",
            Incoming::Hyper(_) => "Incoming::Hyper",
        })
    }
}
