//! Our HTTP/2 server (h2c prior knowledge): framing, HPACK, flow control and stream states of
//! our own, driven from one task per connection.
//!
//! `h2` (under hyper, then driven directly) cost about 13k instructions per request of the
//! ~44k a proxied HTTP/2 request took: a lock around all stream state, a slab and queues per
//! stream, frames copied through several buffers, and an HPACK encoder that indexes and
//! Huffman-codes every response field. Here a stream is a slot in the connection, polled when
//! its waker fires; responses are encoded straight into one output buffer; the encoder writes
//! literal fields with static-table names (cheap to write, a few more bytes on the wire). The
//! limits the abuse probes pin keep their values: 1,024 concurrent streams (REFUSED_STREAM
//! past it), the header-list limit (431 past it), CONTINUATION floods and rapid resets cut
//! off with GOAWAY.

mod body;
mod conn;
mod frame;
mod hpack;
mod huffman;
mod ids;
mod request;

use std::future::poll_fn;
use std::sync::Arc;

pub use body::{RequestBody, StreamError};
use tokio::io::{AsyncRead, AsyncWrite};

use super::server::{H2_FIELD_OVERHEAD, Limits};
use super::{ConnInfo, Handler, h1};
use crate::wire::RecvBuf;

/// Serves one HTTP/2 connection until it closes, the client goes, or it has finished the
/// streams it had when `shutdown` asked it to (GOAWAY first). `rb` holds what was read while
/// telling the protocol apart: the connection preface at least.
pub async fn serve<S, H>(
    io: S,
    rb: RecvBuf,
    info: ConnInfo,
    proxy: Arc<H>,
    limits: &Limits,
    shutdown: &h1::Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let config = conn::Config {
        max_streams: limits.h2_max_concurrent_streams,
        list_limit: limits.max_header_bytes + H2_FIELD_OVERHEAD * (limits.max_headers + 8),
        request_timeout: (!limits.request_timeout.is_zero()).then_some(limits.request_timeout),
        limits: limits.clone(),
    };
    let mut conn = conn::Conn::new(io, rb, config, move |req| proxy.clone().handle(req, info));
    if let Err(e) = poll_fn(|cx| conn.poll_serve(cx, shutdown.asked())).await {
        tracing::debug!(remote = %info.remote, error = %e, "downstream HTTP/2 connection ended with an error");
    }
}
