//! Our HTTP/2 server (h2c prior knowledge), on the `h2` crate's connection and streams. Each
//! stream's handler future is polled inside the connection's own task rather than spawned:
//! hyper's server gave every stream a task of its own (an aligned allocation, a trip through
//! the scheduler and a wake-up between tasks per request). The settings are those hyper was
//! given, so the limits the abuse probes pin (concurrent streams, header list size, rapid
//! reset, CONTINUATION floods) are `h2`'s as before.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::server::{H2_FIELD_OVERHEAD, Limits, over_header_limit, request_timed_out};
use super::{ConnInfo, Handler, Incoming, h1};

/// hyper's defaults for its HTTP/2 server, kept when we left it: 1 MiB windows for the
/// connection and each stream, 16 KiB frames, 400 KiB of queued response data per stream, and
/// at most 1,024 streams reset for our own protocol errors before the connection goes.
const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves one HTTP/2 connection until it closes, the client goes, or it has finished the
/// streams it had when `shutdown` asked it to (GOAWAY first).
pub async fn serve<S, H>(
    io: S,
    info: ConnInfo,
    proxy: Arc<H>,
    limits: &Limits,
    shutdown: &h1::Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let h2_list = limits.max_header_bytes + H2_FIELD_OVERHEAD * (limits.max_headers + 8);
    let mut builder = ::h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(u32::try_from(h2_list).unwrap_or(u32::MAX))
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    let mut conn = tokio::select! {
        r = builder.handshake::<_, Bytes>(io) => match r {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(remote = %info.remote, error = %e, "downstream HTTP/2 handshake failed");
                return;
            }
        },
        // No stream can have started: nothing to finish.
        () = shutdown.wait() => return,
    };
    let request_timeout = (!limits.request_timeout.is_zero()).then_some(limits.request_timeout);
    let mut streams = FuturesUnordered::new();
    let mut asked = false;
    let ended = poll_fn(|cx| {
        if !asked && shutdown.asked() {
            conn.graceful_shutdown();
            asked = true;
        }
        loop {
            // The streams first, so that what they queue goes out with the connection's
            // poll below rather than on a later wake-up.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    streams.push(stream(&proxy, info, limits, request_timeout, req, respond));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(remote = %info.remote, error = %e, "downstream HTTP/2 connection ended with an error");
    }
}

/// One stream, from its head: the handler's future (built at once, boxed) and what the
/// stream will need to answer. Nothing of the request is kept here.
fn stream<H: Handler>(
    proxy: &Arc<H>,
    info: ConnInfo,
    limits: &Limits,
    request_timeout: Option<Duration>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Stream<impl Future<Output = Response<H::Body>> + Send + use<H>, H::Body> {
    let connect = req.method() == Method::CONNECT;
    let (parts, recv) = req.into_parts();
    let declared = content_length(&parts.headers);
    let state = if connect && declared.is_some_and(|n| n != 0) {
        // A CONNECT carries no body here: tunnels over HTTP/2 are not served (as under hyper,
        // whose upgrade nobody took).
        respond.send_reset(Reason::INTERNAL_ERROR);
        State::Done
    } else {
        let body = if connect || recv.is_end_stream() {
            Incoming::Empty
        } else {
            Incoming::H2(RequestBody {
                recv,
                remaining: declared,
                data_done: false,
            })
        };
        let req = Request::from_parts(parts, body);
        match over_header_limit(&req, limits) {
            Some(refused) => State::Answer(Some(refused)),
            // Boxed per request: the request path's future is several KB, and the stream's
            // own state stays small while its body streams. Written into a box allocated
            // first, as in `downstream::h1`, so it is built in place rather than copied whole
            // from the stack.
            None => State::Handling {
                handled: Box::into_pin(Box::write(
                    Box::new_uninit(),
                    proxy.clone().handle(req, info),
                )),
                deadline: request_timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            },
        }
    };
    Stream {
        respond,
        connect,
        state,
    }
}

/// One stream's work after its head arrived: the handler's response, then its body, both
/// given up if the client resets the stream.
struct Stream<F, B> {
    respond: SendResponse<Bytes>,
    connect: bool,
    state: State<F, B>,
}

enum State<F, B> {
    Handling {
        handled: Pin<Box<F>>,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    /// A response the codec gives itself (431).
    Answer(Option<Response<B>>),
    Body {
        body: B,
        tx: SendStream<Bytes>,
        /// A chunk read from the body and waiting for window.
        held: Option<(Bytes, bool)>,
    },
    Done,
}

impl<F, B> Future for Stream<F, B>
where
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + From<Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let resp = match &mut this.state {
                State::Handling { handled, deadline } => {
                    if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
                        resp
                    } else if let Some(d) = deadline
                        && d.as_mut().poll(cx).is_ready()
                    {
                        request_timed_out()
                    } else if this.respond.poll_reset(cx).is_ready() {
                        // A reset from the client drops the handler, and with it the upstream
                        // exchange.
                        this.state = State::Done;
                        return Poll::Ready(());
                    } else {
                        return Poll::Pending;
                    }
                }
                State::Answer(resp) => match resp.take() {
                    Some(resp) => resp,
                    None => return Poll::Ready(()),
                },
                State::Body { body, tx, held } => return poll_body(body, tx, held, cx),
                State::Done => return Poll::Ready(()),
            };
            // The handler's box goes before the response is sent.
            this.state = State::Done;
            this.state = start_response(&mut this.respond, this.connect, resp);
        }
    }
}

/// Sends a response's head; the state that sends its body, if it has one.
fn start_response<F, B: Body<Data = Bytes>>(
    respond: &mut SendResponse<Bytes>,
    connect: bool,
    resp: Response<B>,
) -> State<F, B> {
    let (mut head, body) = resp.into_parts();
    strip_connection_headers(&mut head.headers);
    if !head.headers.contains_key(header::DATE) {
        head.headers.insert(header::DATE, super::date::now());
    }
    if connect && head.status.is_success() {
        head.headers.remove(header::CONTENT_LENGTH);
        if respond
            .send_response(Response::from_parts(head, ()), false)
            .is_ok()
        {
            respond.send_reset(Reason::CANCEL);
        }
        return State::Done;
    }
    let end = body.is_end_stream();
    if !end
        && let Some(len) = body.size_hint().exact()
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(tx) if !end => State::Body {
            body,
            tx,
            held: None,
        },
        Ok(_) => State::Done,
        Err(e) => {
            tracing::debug!(error = %e, "downstream HTTP/2 response could not be sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            State::Done
        }
    }
}

/// Streams a response body within the client's flow-control window, then its trailers.
fn poll_body<B: Body<Data = Bytes> + Unpin>(
    body: &mut B,
    tx: &mut SendStream<Bytes>,
    held: &mut Option<(Bytes, bool)>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    B::Error: std::error::Error + 'static,
{
    loop {
        if tx.poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        if held.is_some() {
            while tx.capacity() == 0 {
                match tx.poll_capacity(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                }
            }
            let Some((data, eos)) = held.take() else {
                continue;
            };
            if tx.send_data(data, eos).is_err() || eos {
                return Poll::Ready(());
            }
            continue;
        }
        // The next frame before any window is asked for: window reserved for a body that has
        // nothing to send yet would be held from the connection's other streams.
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                let _ = tx.send_data(Bytes::new(), true);
                return Poll::Ready(());
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "downstream HTTP/2 response body failed");
                tx.send_reset(reset_reason(&e));
                return Poll::Ready(());
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let eos = body.is_end_stream();
                    if data.is_empty() {
                        if tx.send_data(data, eos).is_err() || eos {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    // One byte is enough to wait on: `send_data` queues the whole chunk and
                    // asks for the rest itself.
                    tx.reserve_capacity(1);
                    *held = Some((data, eos));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        tx.reserve_capacity(0);
                        let _ = tx.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                }
            },
        }
    }
}

/// The reason to reset a stream whose response body failed: an HTTP/2 error's own if one
/// caused it, else INTERNAL_ERROR.
fn reset_reason(e: &(dyn std::error::Error + 'static)) -> Reason {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(reason) = err
            .downcast_ref::<::h2::Error>()
            .and_then(::h2::Error::reason)
        {
            return reason;
        }
        cause = err.source();
    }
    Reason::INTERNAL_ERROR
}

/// Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2): `h2` refuses to send
/// a head carrying them, so they go, with any field `Connection` names.
fn strip_connection_headers(headers: &mut HeaderMap) {
    // One pass over the names first: a proxied response has none of them (the proxy strips
    // hop-by-hop fields), and six removals by name cost four times the scan.
    if !headers.keys().any(is_connection_field) {
        return;
    }
    const FIELDS: [HeaderName; 5] = [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ];
    for name in FIELDS {
        headers.remove(name);
    }
    if let Some(named) = headers.remove(header::CONNECTION)
        && let Ok(named) = named.to_str()
    {
        for name in named.split(',') {
            headers.remove(name.trim());
        }
    }
}

fn is_connection_field(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The request's `content-length`, when every copy of it agrees (`h2` has refused a stream
/// whose copies do not parse).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first: u64 = values.next()?.to_str().ok()?.trim().parse().ok()?;
    values
        .all(|v| v.to_str().ok().and_then(|v| v.trim().parse().ok()) == Some(first))
        .then_some(first)
}

/// A client's HTTP/2 request body: DATA frames, then trailers. Each frame read gives its
/// bytes back to the client's window.
pub struct RequestBody {
    recv: RecvStream,
    /// Bytes the declared `content-length` has left, if one was declared.
    remaining: Option<u64>,
    data_done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ::h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ::h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = this.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) after a response is the client saying it is done
                // sending (RFC 9113 §8.1): the body ends, without an error.
                Poll::Ready(Some(Err(e))) if e.reason() == Some(Reason::NO_ERROR) => {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(trailers)) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Poll::Ready(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_and_the_fields_they_name_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop, close"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        for name in ["proxy-connection", "upgrade", "te"] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_connection_headers(&mut h);
            assert!(h.is_empty(), "{name}");
        }
    }

    #[test]
    fn content_length_needs_every_copy_to_agree() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(content_length(&h), Some(5));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(content_length(&h), Some(5));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert_eq!(content_length(&h), None);
    }
}
