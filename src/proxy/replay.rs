//! Body keeping for replay: a body a retry or a mirror might have to send again. A small
//! sized one is read first; an unsized one streams to the first attempt while up to Envoy's
//! buffer limit of it is kept (`keep`); past the limit, that request is no longer retried or
//! mirrored. Also kept when no retry policy would resend it: a pooled connection the upstream
//! closed under the request is replayed on a new one (pingora's rule: reused, no response
//! byte, body still whole).

use std::sync::Arc;

use http::HeaderMap;
use http::header;

use super::body::RequestBody;
use super::error::LocalReply;
use super::keep;
use super::record::RequestRecord;
use crate::downstream::Incoming;
use crate::upstream::Cluster;

/// Envoy's default per-stream buffer limit: bodies up to this size can be retried.
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// The body, ready for its first send and for what may send it again.
pub(super) enum Replay {
    Stream(RequestBody),
    Buffered(bytes::Bytes, Option<HeaderMap>),
    Kept(keep::Keep, keep::KeptBody),
}

/// What a retry needs besides the head, which the sends only borrow: the body again.
pub(super) enum Template {
    /// Read whole before the first attempt.
    Buffered {
        body: bytes::Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Kept as it streams, while it fits the buffer limit.
    Kept(keep::Keep),
}

/// Reads or wraps the request body as what it may be needed for says.
pub(super) async fn ready(
    headers: &HeaderMap,
    body: Incoming,
    upgrade: bool,
    cluster: Option<&Cluster>,
    record: &Arc<RequestRecord>,
) -> Result<Replay, LocalReply> {
    Ok(match keeping(headers, &body) {
        _ if upgrade => Replay::Stream(RequestBody::new(body, Some(record.clone()))),
        Keeping::Never => Replay::Stream(RequestBody::new(body, Some(record.clone()))),
        // Most requests (every GET): nothing to read, so no collecting future runs at all.
        Keeping::Empty => Replay::Buffered(bytes::Bytes::new(), None),
        Keeping::ReadFirst => match collect_bounded(body).await {
            Ok((data, trailers)) => {
                record
                    .request_bytes
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Replay::Buffered(data, trailers)
            }
            Err(_) => return Err(LocalReply::bad_request("request body read failed")),
        },
        Keeping::AsItStreams => {
            let (keep, first) = keep::Keep::new(
                body,
                RETRY_BUFFER_LIMIT,
                record.clone(),
                cluster.map(|c| c.stats.clone()),
            );
            Replay::Kept(keep, first)
        }
    })
}

// === impl Replay ===

impl Replay {
    /// The first attempt's body, and the template later ones are made from.
    #[inline]
    pub fn split(self) -> (RequestBody, Option<Template>) {
        match self {
            Replay::Stream(b) => (b, None),
            Replay::Buffered(data, trailers) => (
                RequestBody::buffered(data.clone(), trailers.clone(), None),
                Some(Template::Buffered {
                    body: data,
                    trailers,
                }),
            ),
            Replay::Kept(keep, first) => (RequestBody::kept(first), Some(Template::Kept(keep))),
        }
    }
}

// === impl Template ===

impl Template {
    pub fn body(&self) -> RequestBody {
        match self {
            Template::Buffered { body, trailers } => {
                RequestBody::buffered(body.clone(), trailers.clone(), None)
            }
            Template::Kept(keep) => RequestBody::kept(keep.replay()),
        }
    }

    pub fn replayable(&self) -> bool {
        match self {
            Template::Buffered { .. } => true,
            Template::Kept(keep) => keep.replayable(),
        }
    }
}

/// How a request body is made ready for a retry or a mirror.
enum Keeping {
    /// Already ended (no body, or an HTTP/2 HEADERS frame with END_STREAM): no trailers
    /// can follow either.
    Empty,
    /// Its declared length fits the retry buffer: read it whole before the first
    /// attempt (one buffer, no sharing between attempts).
    ReadFirst,
    /// No declared length: kept as it streams, until it outgrows the buffer.
    AsItStreams,
    /// Declared longer than the buffer: it could never be sent whole twice, so it streams
    /// and only an attempt that sent none of it (a failed connect) is retried.
    Never,
}

fn keeping(headers: &HeaderMap, body: &Incoming) -> Keeping {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Keeping::Empty;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n <= RETRY_BUFFER_LIMIT => Keeping::ReadFirst,
        Some(_) => Keeping::Never,
        None => Keeping::AsItStreams,
    }
}

async fn collect_bounded(
    body: Incoming,
) -> Result<(bytes::Bytes, Option<HeaderMap>), crate::downstream::BodyError> {
    use http_body_util::BodyExt as _;
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}
