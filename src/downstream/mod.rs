//! The client side of the proxy: how requests arrive. HTTP/1.1 is our own server codec
//! ([`h1`]); HTTP/2 (h2c prior knowledge) is hyper's. The proxy sees one request body type,
//! [`Incoming`], from either.

pub mod date;
pub mod h1;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use h1::{OnUpgrade, Upgraded};

/// A client's request body.
pub enum Incoming {
    Empty,
    H1(h1::RequestBody),
    /// hyper's body: HTTP/2 requests, and embedders serving the proxy with hyper.
    Hyper(hyper::body::Incoming),
}

/// Why a client's request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    H1(#[from] crate::wire::DecodeError),
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
            Incoming::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Incoming::Empty => true,
            Incoming::H1(b) => b.is_end_stream(),
            Incoming::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Incoming::Empty => SizeHint::with_exact(0),
            Incoming::H1(b) => b.size_hint(),
            Incoming::Hyper(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Incoming::Empty => "Incoming::Empty",
            Incoming::H1(_) => "Incoming::H1",
            Incoming::Hyper(_) => "Incoming::Hyper",
        })
    }
}
