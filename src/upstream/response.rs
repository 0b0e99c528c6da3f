//! What an upstream exchange yields, whichever client carried it: our HTTP/1.1 codec for
//! pooled connections, or hyper for HTTP/2 and Upgrade requests.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1;

/// A response body from upstream.
pub enum ResponseBody {
    H1(h1::Body<super::pool::Leased>),
    Hyper(Incoming),
}

/// Why an exchange with an upstream failed after the connection was up.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    H1(#[from] h1::Error),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl ExchangeError {
    /// The upstream closed (or reset) the connection before answering: on a reused
    /// keep-alive connection, the idle-close race, which is safe to replay.
    pub fn is_stale_close(&self) -> bool {
        match self {
            ExchangeError::H1(e) => e.is_stale_close(),
            ExchangeError::Hyper(e) => hyper_stale_close(e),
        }
    }

    /// The response was not valid HTTP (Envoy's `UPE`).
    pub fn is_protocol_error(&self) -> bool {
        match self {
            ExchangeError::H1(e) => matches!(e, h1::Error::Invalid(_) | h1::Error::HeadTooLarge),
            ExchangeError::Hyper(e) => {
                e.is_parse() || e.is_parse_too_large() || e.is_parse_status()
            }
        }
    }

    /// The connection ended mid-exchange (Envoy's `UC`, "connection termination"), as
    /// opposed to a reset or a protocol error.
    pub fn is_termination(&self) -> bool {
        match self {
            ExchangeError::H1(e) => e.is_termination(),
            ExchangeError::Hyper(e) => e.is_incomplete_message() || e.is_closed(),
        }
    }
}

fn hyper_stale_close(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        cause = c.source();
    }
    false
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        match self.get_mut() {
            ResponseBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::from))),
            ResponseBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(b) => b.is_end_stream(),
            ResponseBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::H1(b) => b.size_hint(),
            ResponseBody::Hyper(b) => b.size_hint(),
        }
    }
}
