//! The send with retries: the upstream request assembled from its head and body, copies
//! handed to the mirrors, then sent to an endpoint of the cluster (or to the fixed one) and
//! retried as the route's policy says, each try under its per-try timeout. The caller races
//! the whole of it against the route's deadline.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use rand::RngExt;

use super::amend::Limits;
use super::body::RequestBody;
use super::decide::Plan;
use super::error::{self, LocalReply};
use super::record::RequestRecord;
use super::replay::{Replay, Template};
use super::upstream_request::Upstream;
use super::{Ctx, grpc_status_of, headers, mirror};
use crate::deadline::{Elapsed, Race};
use crate::route::policy::RetryPolicy;
use crate::upstream::{Cluster, SendError};

/// An upstream's answer and what its body must keep until the last byte.
pub(super) struct Sent {
    pub resp: Response<crate::upstream::ResponseBody>,
    pub release: Option<crate::upstream::Release>,
    pub active: Option<crate::upstream::ActiveGuard>,
    /// When the answering attempt began: its service time.
    pub started: Instant,
}

/// The send of one request, to be pinned where it is built and raced against the route's
/// deadline (see `Race`). What only the first send needs (the request, its retry template)
/// is built here, before the future, so it is not kept in the future's state, which is
/// copied whole when the request's future is boxed.
#[inline]
pub(super) fn start<'a>(
    cx: &'a Ctx<'a>,
    head: http::request::Parts,
    replay: Replay,
    plan: &'a Plan,
    limits: &'a Limits<'a>,
    up: &mut Upstream,
    set_cookie: &mut Option<HeaderValue>,
) -> impl Future<Output = Result<Sent, LocalReply>> + Send + use<'a> {
    let (body, template) = replay.split();
    let req = Request::from_parts(head, body);
    if !plan.mirrors.is_empty() {
        mirror::mirror(
            cx.proxy,
            &plan.mirrors,
            &req,
            template.as_ref(),
            &up.authority,
        );
    }
    let cluster = plan.cluster.as_deref();
    let hash = match cluster.and_then(|c| c.policy.hash.as_ref()) {
        Some(h) => hash_key(
            &h.key,
            req.headers(),
            req.uri().query(),
            cx.fmt.downstream_remote,
            set_cookie,
        ),
        None => None,
    };
    let attempt = Attempt {
        hash,
        upgrade: up.upgrade,
        cluster,
        fixed: up.fixed.take(),
        policy: &limits.retry,
        per_try: limits.per_try,
        template,
        record: cx.record,
    };
    send_with_retries(req, attempt)
}

/// The send's answer, or the route timeout's 504 if its deadline came first.
#[inline]
pub(super) fn within_deadline(
    raced: Result<Result<Sent, LocalReply>, Elapsed>,
    cluster: Option<&Cluster>,
) -> Result<Sent, LocalReply> {
    raced.unwrap_or_else(|Elapsed| {
        if let Some(c) = cluster {
            c.stats.upstream_rq_timeout.inc();
        }
        Err(LocalReply::timeout())
    })
}

/// Sends to an endpoint of the cluster (or to the fixed one), retrying as the route's
/// policy says: on connect failures always when allowed (nothing was sent), on resets,
/// per-try timeouts and retriable responses only when the body can be sent again. Other
/// hosts are preferred for each retry, with Envoy's jittered back-off in between.
#[allow(clippy::manual_async_fn)] // see the comment at `Proxy::forward`
fn send_with_retries<'a>(
    first: Request<RequestBody>,
    a: Attempt<'a>,
) -> impl Future<Output = Result<Sent, LocalReply>> + Send + 'a {
    // The head stays in the block's state for every attempt (sends borrow it); a body is
    // either the first one, handed back by a failed connect, or rebuilt from the
    // template. Split here for the reason given at `Proxy::forward`.
    let (head, first_body) = first.into_parts();
    let mut head = Head(head);
    let mut next = Some(first_body);
    // An async block for the reason given at `Proxy::forward`.
    async move {
        let connect_timeout = a
            .cluster
            .map_or(crate::upstream::DEFAULT_CONNECT_TIMEOUT, |c| {
                c.connect_timeout
            });
        let stats = a.cluster.map(|c| &c.stats);
        let limiter = a.cluster.and_then(|c| c.limiter.as_ref());
        // The circuit breaker: a slot for this request, queued if the pending queue has room.
        let mut slot = None;
        if let Some(l) = limiter {
            match l.acquire().await {
                Some(p) => slot = Some(p),
                None => {
                    if let Some(s) = stats {
                        s.upstream_rq_pending_overflow.inc();
                    }
                    if let Some(c) = a.cluster {
                        a.record.set_dest(&c.no_endpoint);
                    }
                    return Err(LocalReply::overflow());
                }
            }
        }
        let outcome = |e: &crate::upstream::Endpoint, o: crate::upstream::policy::Outcome| {
            if let Some(c) = a.cluster {
                c.record_outcome(e, o);
            }
        };
        let mut retry_guard = None;
        let max_attempts = a.policy.retries as usize + 1;
        // Hosts already tried, for the previous-hosts predicate; on the stack, because every
        // request passes here and few are retried more than a handful of times.
        let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); 8];
        let mut tried_len = 0usize;
        let mut last_reason = String::new();
        let mut last_endpoint = None;
        for attempt in 0..max_attempts {
            // Unreachable: a retry after sending only happens with a template.
            if next.is_none() && !a.can_resend() {
                break;
            }
            let endpoint = match (&a.fixed, a.cluster) {
                (Some(e), _) => e.clone(),
                (None, Some(c)) => match match a.hash {
                    // Consistent hash keeps retries on the same host, as Istio omits the
                    // previous-hosts predicate then.
                    Some(h) => c.pick_hashed(h, rand::rng().random()),
                    None => c.pick(rand::rng().random(), &tried[..tried_len]),
                } {
                    Some(e) => e,
                    None => {
                        a.record.set_dest(&c.no_endpoint);
                        return Err(LocalReply::no_healthy_upstream());
                    }
                },
                (None, None) => return Err(LocalReply::no_healthy_upstream()),
            };
            if attempt > 0 {
                // Envoy's `max_retries` breaker: retries in flight across the cluster.
                if let Some(l) = limiter {
                    match l.try_retry() {
                        Some(g) => retry_guard = Some(g),
                        None => break,
                    }
                }
            }
            if let Some(s) = stats {
                s.upstream_rq_total.inc();
                if attempt > 0 {
                    s.upstream_rq_retry.inc();
                }
            }
            if tried_len < tried.len() {
                tried[tried_len] = endpoint.addr;
                tried_len += 1;
            } else {
                tried.rotate_left(1);
                tried[tried.len() - 1] = endpoint.addr;
            }
            a.record.access(|x| x.upstream_host = Some(endpoint.addr));
            last_endpoint = Some(endpoint.clone());
            let last = attempt + 1 == max_attempts;
            let mut active = endpoint.begin();
            let started = Instant::now();
            let pool = if a.upgrade {
                endpoint.pool.for_upgrade()
            } else {
                endpoint.pool.clone()
            };
            let template = a.template.as_ref();
            head.0.headers.insert(
                headers::X_ENVOY_ATTEMPT_COUNT.clone(),
                headers::number(attempt as u64 + 1),
            );
            let head = &head.0;
            // The body lives in this block and then only inside the send future, not
            // also in this future's state across the await.
            let raced = {
                // No body (unreachable: a retry after sending only happens with a
                // template) leaves no send; `break` cannot leave from inside `pin!`.
                let send = pin!({
                    let body = next.take().or_else(|| template.map(|t| t.body()));
                    body.map(|body| async move {
                        match pool.send(head, body, connect_timeout, stats).await {
                            Err(SendError::Exchange {
                                source,
                                addr,
                                reused: true,
                            }) if source.is_stale_close() => match template {
                                Some(t) if t.replayable() => {
                                    pool.stats.stale_replays.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(%addr, error = %source, "pooled connection closed under the request; replaying on a new one");
                                    // Boxed: rare, and a second inlined send would double the
                                    // size of every request's future.
                                    Box::pin(pool.send_on_new_connection(
                                        head,
                                        t.body(),
                                        connect_timeout,
                                        stats,
                                    ))
                                    .await
                                }
                                _ => Err(SendError::Exchange {
                                    source,
                                    addr,
                                    reused: true,
                                }),
                            },
                            other => other,
                        }
                    })
                });
                let Some(send) = send.as_pin_mut() else {
                    break;
                };
                let sleep = pin!(a.per_try.map(tokio::time::sleep));
                Race::new(send, sleep).await
            };
            let result = match raced {
                Ok(r) => r,
                Err(Elapsed) => {
                    outcome(&endpoint, crate::upstream::policy::Outcome::LocalFailure);
                    if let Some(s) = stats {
                        s.upstream_rq_timeout.inc();
                    }
                    if !last && a.policy.on_reset() && a.can_resend() {
                        retry_wait(a.policy, attempt).await;
                        continue;
                    }
                    a.record.set_dest(&endpoint.metrics);
                    return Err(LocalReply::timeout());
                }
            };
            match result {
                Ok((resp, release)) => {
                    let status = resp.status().as_u16();
                    outcome(&endpoint, crate::upstream::policy::Outcome::Status(status));
                    // Only gRPC requests record it, and only gRPC conditions retry on it: a
                    // plain request under a plain policy skips the lookup.
                    let grpc = if a.record.grpc || a.policy.retries_on_grpc_status() {
                        grpc_status_of(resp.headers())
                    } else {
                        None
                    };
                    let retry_wanted = a.policy.on_response(status, grpc);
                    if !last && retry_wanted && a.can_resend() {
                        drop((resp, release));
                        retry_wait(a.policy, attempt).await;
                        continue;
                    }
                    a.record.set_dest(&endpoint.metrics);
                    if attempt > 0 && retry_wanted {
                        a.record
                            .set_status(status, Some(error::Flag::RetriesExhausted));
                    }
                    if let Some(s) = grpc {
                        a.record.set_grpc_status(s);
                    }
                    drop(retry_guard);
                    active.hold(slot);
                    return Ok(Sent {
                        resp,
                        release,
                        active: Some(active),
                        started,
                    });
                }
                Err(SendError::Connect { body, reason, addr }) => {
                    tracing::debug!(%addr, %reason, attempt = attempt + 1, "upstream connect failed");
                    outcome(&endpoint, crate::upstream::policy::Outcome::LocalFailure);
                    if let Some(s) = stats {
                        s.upstream_cx_connect_fail.inc();
                    }
                    last_reason = reason;
                    if last || !a.policy.on_connect_failure() {
                        break;
                    }
                    // Nothing was sent: the same request goes to the next host.
                    next = Some(*body);
                    retry_wait(a.policy, attempt).await;
                }
                Err(SendError::Exchange { source, addr, .. }) => {
                    tracing::debug!(%addr, error = %source, "upstream exchange failed");
                    if a.record.downstream_body_failed() {
                        // Not the upstream's failure: no outlier strike, no retry.
                        return Err(LocalReply::bad_request("malformed request body"));
                    }
                    outcome(&endpoint, crate::upstream::policy::Outcome::LocalFailure);
                    if !last && a.policy.on_reset() && a.can_resend() {
                        retry_wait(a.policy, attempt).await;
                        continue;
                    }
                    a.record.set_dest(&endpoint.metrics);
                    if source.is_protocol_error() {
                        return Err(LocalReply::upstream_protocol_error());
                    }
                    let terminated = source.is_termination();
                    return Err(LocalReply::upstream_reset(String::new(), terminated));
                }
            }
        }
        if let Some(e) = last_endpoint {
            a.record.set_dest(&e.metrics);
        }
        a.record
            .access(|x| x.transport_failure = last_reason.clone());
        Err(LocalReply::connect_failure(
            a.policy.retries > 0,
            last_reason,
        ))
    }
}

/// One request's send: where, with which policy, and how to resend it.
struct Attempt<'a> {
    cluster: Option<&'a Cluster>,
    fixed: Option<Arc<crate::upstream::Endpoint>>,
    policy: &'a RetryPolicy,
    per_try: Option<Duration>,
    template: Option<Template>,
    record: &'a RequestRecord,
    /// The request's consistent-hash key, when the cluster balances by one.
    hash: Option<u64>,
    /// An HTTP/1.1 Upgrade: it needs an HTTP/1.1 connection whatever the cluster speaks.
    upgrade: bool,
}

impl Attempt<'_> {
    /// Another attempt can send the whole body.
    fn can_resend(&self) -> bool {
        self.template.as_ref().is_some_and(Template::replayable)
    }
}

/// A request's head while its attempts are sent; its header map then goes back to the
/// thread's spares.
struct Head(http::request::Parts);

impl Drop for Head {
    fn drop(&mut self) {
        crate::recycle::give_back(std::mem::take(&mut self.0.headers));
    }
}

/// Sleeps Envoy's back-off before retry number `attempt + 1`.
async fn retry_wait(policy: &RetryPolicy, attempt: usize) {
    let wait = policy.backoff(attempt as u32, rand::rng().random());
    tokio::time::sleep(wait).await;
}

/// The consistent-hash key of a request (Istio `consistentHash`). A missing cookie with a TTL
/// is generated and handed back in `set_cookie`, as Envoy does, so the client sticks from its
/// next request on.
fn hash_key(
    key: &crate::upstream::hash::HashKey,
    headers: &http::HeaderMap,
    query: Option<&str>,
    remote: SocketAddr,
    set_cookie: &mut Option<HeaderValue>,
) -> Option<u64> {
    use crate::upstream::hash::{HashKey, hash_bytes};
    match key {
        HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(hash_bytes(remote.ip().to_string().as_bytes())),
        HashKey::Query(name) => query.and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| hash_bytes(v.as_bytes()))
            })
        }),
        HashKey::Cookie { name, path, ttl } => {
            let found = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.to_string())
                });
            match (found, ttl) {
                (Some(v), _) => Some(hash_bytes(v.as_bytes())),
                (None, Some(ttl)) => {
                    let value = format!("{:016x}", rand::rng().random::<u64>());
                    let mut cookie = format!("{name}={value}; Max-Age={}; HttpOnly", ttl.as_secs());
                    if let Some(p) = path {
                        cookie.push_str("; Path=");
                        cookie.push_str(p);
                    }
                    *set_cookie = HeaderValue::from_str(&cookie).ok();
                    Some(hash_bytes(value.as_bytes()))
                }
                (None, None) => None,
            }
        }
    }
}
