//! A request body of unknown size (chunked HTTP/1.1, HTTP/2 without `content-length`: every
//! gRPC call) streamed to the first attempt while what passes is kept, so a retry can send it
//! again and a mirror can copy it. Envoy's router does the same: it buffers the body as it
//! streams, up to the buffer limit (Istio: 1 MiB); past the limit the request is no longer
//! retried or shadowed and `retry_or_shadow_abandoned` counts it.
//!
//! One source, several readers. The attempt now being sent pulls from the source (after
//! replaying what was kept); an attempt that a retry replaced gets an error on its next poll,
//! so a body pipe still running for it (hyper's HTTP/2 client polls from its own task) cannot
//! steal a chunk from the new one. Mirrors follow: they read only what the puller has kept
//! and wait for more. Shared through a mutex that is never contended in the common case (one
//! reader at a time); sized bodies up to the limit never come here.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::downstream::{BodyError, Incoming};
use crate::metrics::ClusterStats;

use super::record::RequestRecord;

struct State {
    source: Incoming,
    /// What has passed so far, while it fits the limit; a chunk already handed to the last
    /// reader that needs it is replaced by an empty one to free it.
    chunks: Vec<Bytes>,
    kept_len: u64,
    trailers: Option<http::HeaderMap>,
    ended: bool,
    failed: bool,
    /// Went over the limit: nothing is kept any more, no retry or mirror can have the body.
    abandoned: bool,
    /// Which attempt may pull from the source.
    epoch: u32,
    puller_alive: bool,
    /// How far the current attempt has read `chunks`.
    puller_pos: usize,
    /// A retry may still need the kept body (until the response is accepted).
    for_retry: bool,
    followers: usize,
    waiters: Vec<Waker>,
    limit: u64,
    record: Arc<RequestRecord>,
    stats: Option<Arc<ClusterStats>>,
}

impl State {
    fn needed(&self) -> bool {
        self.for_retry || self.followers > 0
    }

    fn wake_followers(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn abandon(&mut self) {
        if !self.abandoned {
            self.abandoned = true;
            self.chunks = Vec::new();
            self.kept_len = 0;
            if let Some(s) = &self.stats {
                s.retry_or_shadow_abandoned.inc();
            }
            self.wake_followers();
        }
    }
}

/// The request's handle on a kept body: hands out the body of each attempt and of mirrors.
pub(crate) struct Keep {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A reader that panicked left the state as consistent as any poll does.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Keep {
    /// Starts keeping `source`; the returned body is the first attempt's.
    pub(crate) fn new(
        source: Incoming,
        limit: u64,
        record: Arc<RequestRecord>,
        stats: Option<Arc<ClusterStats>>,
    ) -> (Keep, KeptBody) {
        let state = Arc::new(Mutex::new(State {
            source,
            chunks: Vec::new(),
            kept_len: 0,
            trailers: None,
            ended: false,
            failed: false,
            abandoned: false,
            epoch: 0,
            puller_alive: true,
            puller_pos: 0,
            for_retry: true,
            followers: 0,
            waiters: Vec::new(),
            limit,
            record,
            stats,
        }));
        let first = KeptBody::puller(state.clone(), 0);
        (Keep { state }, first)
    }

    /// The whole body can still be sent again.
    pub(crate) fn replayable(&self) -> bool {
        let s = lock(&self.state);
        !s.abandoned && !s.failed
    }

    /// The body of a new attempt: what was kept, then the rest of the source. Any earlier
    /// attempt's body stops here.
    pub(crate) fn replay(&self) -> KeptBody {
        let mut s = lock(&self.state);
        s.epoch = s.epoch.wrapping_add(1);
        s.puller_alive = true;
        s.puller_pos = 0;
        let epoch = s.epoch;
        drop(s);
        KeptBody::puller(self.state.clone(), epoch)
    }

    /// A mirror's copy: what the attempts pull, as they pull it. `None` once the body is too
    /// big to keep.
    pub(crate) fn follow(&self) -> Option<KeptBody> {
        let mut s = lock(&self.state);
        if s.abandoned || s.failed {
            return None;
        }
        s.followers += 1;
        drop(s);
        Some(KeptBody {
            state: self.state.clone(),
            role: Role::Follower,
            pos: 0,
            trailers_sent: false,
        })
    }
}

/// The request is done with its attempts (the response was accepted, or it failed): no retry
/// will need the body again.
impl Drop for Keep {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.for_retry = false;
        if !s.needed() {
            // What the current attempt has yet to send stays; the rest is freed.
            let sent = s.puller_pos.min(s.chunks.len());
            s.chunks[..sent].fill(Bytes::new());
        }
        // No attempt will pull again: followers waiting for more must give up.
        if !s.puller_alive {
            s.wake_followers();
        }
    }
}

enum Role {
    /// Pulls from the source while its epoch is current.
    Puller(u32),
    /// Reads what the pullers kept.
    Follower,
}

/// One attempt's (or one mirror's) view of a kept body.
pub(crate) struct KeptBody {
    state: Arc<Mutex<State>>,
    role: Role,
    /// Next kept chunk to hand out.
    pos: usize,
    trailers_sent: bool,
}

impl KeptBody {
    fn puller(state: Arc<Mutex<State>>, epoch: u32) -> KeptBody {
        KeptBody {
            state,
            role: Role::Puller(epoch),
            pos: 0,
            trailers_sent: false,
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        let pulling = match self.role {
            Role::Puller(epoch) if epoch != s.epoch => {
                return Poll::Ready(Some(Err(BodyError::Superseded)));
            }
            Role::Puller(_) => true,
            Role::Follower => false,
        };
        if !s.abandoned && self.pos < s.chunks.len() {
            let chunk = if pulling && !s.needed() {
                std::mem::take(&mut s.chunks[self.pos])
            } else {
                s.chunks[self.pos].clone()
            };
            self.pos += 1;
            if pulling {
                s.puller_pos = self.pos;
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !pulling && (s.abandoned || s.failed) {
            return Poll::Ready(Some(Err(BodyError::NotKept)));
        }
        if s.ended {
            if self.trailers_sent {
                return Poll::Ready(None);
            }
            self.trailers_sent = true;
            return Poll::Ready(s.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        if !pulling {
            let gone = !s.puller_alive && !s.for_retry;
            if gone {
                return Poll::Ready(Some(Err(BodyError::NotKept)));
            }
            s.waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let polled = std::pin::Pin::new(&mut s.source).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    s.record
                        .request_bytes
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                    if !s.abandoned && s.needed() {
                        if s.kept_len + len > s.limit {
                            s.abandon();
                        } else {
                            s.kept_len += len;
                            s.chunks.push(data.clone());
                            self.pos = s.chunks.len();
                            s.puller_pos = self.pos;
                            s.wake_followers();
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    self.trailers_sent = true;
                    s.ended = true;
                    s.wake_followers();
                }
            }
            Poll::Ready(None) => {
                s.ended = true;
                self.trailers_sent = true;
                s.wake_followers();
            }
            Poll::Ready(Some(Err(_))) => {
                // Bad chunking and the like: the client's fault, answered 400, not 503.
                s.failed = true;
                s.record.set_downstream_body_failed();
                s.wake_followers();
            }
            Poll::Pending => {}
        }
        polled
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        let s = lock(&self.state);
        s.ended && self.trailers_sent && (s.abandoned || self.pos >= s.chunks.len())
    }
}

impl Drop for KeptBody {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        match self.role {
            Role::Follower => s.followers = s.followers.saturating_sub(1),
            Role::Puller(epoch) if epoch == s.epoch => {
                s.puller_alive = false;
                if !s.for_retry {
                    s.wake_followers();
                }
            }
            Role::Puller(_) => {}
        }
    }
}
