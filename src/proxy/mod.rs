//! The request path: read the authority and path, route through the current table, forward to
//! an endpoint with Istio's default retry policy, stream the answer back. Local failures are
//! answered the way Envoy answers them (see `error`).

pub mod body;
pub(crate) mod deadline;
pub mod error;
pub mod headers;
pub(crate) mod keep;
pub mod record;
pub mod server;
pub mod workers;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::downstream::Incoming;
use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use rand::RngExt;
use tokio::sync::Notify;

use crate::access_log::AccessLog;
use crate::metrics::Registry;
use crate::metrics::istio::{DestLabels, DestMetrics};
use crate::route::action::{FormatContext, HeaderOps};
use crate::route::host::split_authority;
use crate::route::path::{normalize_path, split_path_query};
use crate::route::policy::{Abort, RetryPolicy, RoutePolicy};
use crate::route::{Decision, OutboundPolicy, RequestView, RouteTable};
use crate::upstream::{Cluster, Discovery, PoolRegistry, SendError};
use body::{ProxyBody, RequestBody};
use deadline::{Elapsed, Race};
use error::LocalReply;
use record::RequestRecord;

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

/// Counts one request as in flight until dropped (with its response body).
pub struct InFlight(Arc<DrainState>);

impl InFlight {
    fn new(state: &Arc<DrainState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub pools: Arc<PoolRegistry>,
    pub state: Arc<DrainState>,
    /// Our own listening sockets: ALLOW_ANY passthrough never forwards to them.
    pub own_addrs: Vec<SocketAddr>,
    pub hostname: String,
    pub metrics: Arc<Registry>,
    /// Empty when the access log is off (Istio's default); switchable while serving (the
    /// demo turns it on after its measured batches).
    pub access_log: arc_swap::ArcSwapOption<AccessLog>,
    /// Series of REGISTRY_ONLY refusals and ALLOW_ANY passthrough, named as Istio names them.
    blackhole: Arc<DestMetrics>,
    passthrough: Arc<DestMetrics>,
    mirror_slots: Arc<tokio::sync::Semaphore>,
}

/// Per-connection facts the request path reads.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

impl Proxy {
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        pools: Arc<PoolRegistry>,
        metrics: Arc<Registry>,
    ) -> Proxy {
        Proxy {
            blackhole: Arc::new(DestMetrics::new(
                metrics.clone(),
                DestLabels::service_only("BlackHoleCluster", None),
            )),
            passthrough: Arc::new(DestMetrics::new(
                metrics.clone(),
                DestLabels::service_only("PassthroughCluster", None),
            )),
            metrics,
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(MIRROR_IN_FLIGHT)),
            access_log: arc_swap::ArcSwapOption::empty(),
            table,
            pools,
            state: Arc::new(DrainState::default()),
            own_addrs: Vec::new(),
            hostname: std::env::var("HOSTNAME").unwrap_or_else(|_| "switchyard".to_string()),
        }
    }

    /// One request, from its head to the response to send back.
    ///
    /// Not an async fn: the work before the first await runs here, and the forwarding future
    /// is made here too, so the returned future holds that future and not also the request
    /// it consumed (an async fn keeps its arguments in its state for as long as it runs).
    // Inlined so that the caller's `Box::write` can build the returned future in the box.
    #[inline(always)]
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        let in_flight = InFlight::new(&self.state);
        let grpc = headers::is_grpc(req.headers());
        let record = Arc::new(RequestRecord::new(
            self.metrics.clone(),
            self.access_log.load_full(),
            grpc,
            in_flight,
        ));
        record.access(|a| fill_access(a, &req, conn));
        let h1 = req.version() != Version::HTTP_2;
        Handled {
            forwarded: self.clone().forward(req, conn, record.clone()),
            finish: Some(Finish {
                proxy: self,
                record,
                grpc,
                h1,
            }),
        }
    }

    #[allow(clippy::manual_async_fn)] // see the comment in the body
    fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        record: Arc<RequestRecord>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, LocalReply>> + Send + 'static {
        // Split here, not in the block: a request the block captured would keep its slot in
        // the block's state beside the parts it was split into.
        let (mut parts, body) = req.into_parts();
        // An async block, not an async fn: an async fn keeps a second copy of each argument
        // in its state, and this state is copied whole when the request's future is boxed.
        async move {
            let record = &record;
            // Istio routes on the authority: two Host headers make it ambiguous (an HTTP/2
            // request's `:authority` is not in the map).
            if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
                return Err(LocalReply::bad_request("duplicate Host header"));
            }
            let authority =
                request_authority(&parts).ok_or(LocalReply::bad_request("missing Host header"))?;
            let (raw_host, addressed_port) = split_authority(authority.as_str());
            let host: Cow<str> = lowercase(raw_host.trim_end_matches('.'));
            let port = addressed_port.unwrap_or(80);
            let (raw_path, query) = match parts.uri.path_and_query() {
                Some(pq) => split_path_query(pq.as_str()),
                None => ("/", None),
            };
            let path =
                normalize_path(raw_path).map_err(|_| LocalReply::bad_request("invalid path"))?;
            let upgrade = parts.version == Version::HTTP_11 && headers::is_upgrade(&parts.headers);
            let fmt = FormatContext {
                downstream_remote: conn.remote,
                downstream_local: conn.local,
                protocol: if parts.version == Version::HTTP_2 {
                    "HTTP/2"
                } else {
                    "HTTP/1.1"
                },
                hostname: &self.hostname,
            };

            // Decide under the table guard; keep only what the rest of the request needs.
            let plan = {
                let table = self.table.load();
                let view = RequestView {
                    method: parts.method.as_str(),
                    scheme: "http",
                    authority: authority.as_str(),
                    port,
                    path: &path,
                    query,
                    headers: &parts.headers,
                };
                let random: u64 = rand::rng().random();
                match table.route(&host, &view, random) {
                    Decision::UnknownHost => match table.outbound_policy {
                        OutboundPolicy::RegistryOnly => {
                            record.set_dest(&self.blackhole);
                            record.access(|a| a.upstream_cluster = "BlackHoleCluster".into());
                            return Err(LocalReply::blocked_host());
                        }
                        OutboundPolicy::AllowAny => {
                            record.set_dest(&self.passthrough);
                            record.access(|a| a.upstream_cluster = "PassthroughCluster".into());
                            Plan::passthrough()
                        }
                    },
                    Decision::NoRoute { vhost } => {
                        record.set_dest(&vhost.metrics);
                        return Err(LocalReply::no_route());
                    }
                    Decision::Redirect {
                        vhost,
                        route,
                        redirect,
                    } => {
                        route.stats.decisions.inc();
                        record.set_dest(&vhost.metrics);
                        record.set_status(redirect.code.as_u16(), None);
                        record.access(|a| {
                            a.route_name = route.name.clone();
                            a.details = "direct_response".into();
                        });
                        let location = redirect.location("http", authority.as_str(), &path, query);
                        let mut resp = Response::new(ProxyBody::empty());
                        *resp.status_mut() = redirect.code;
                        if let Ok(v) = HeaderValue::from_str(&location) {
                            resp.headers_mut().insert(header::LOCATION, v);
                        }
                        if let Some(ops) = &route.response_headers {
                            ops.apply(resp.headers_mut(), &fmt);
                        }
                        return Ok(resp);
                    }
                    Decision::Direct {
                        vhost,
                        route,
                        response,
                    } => {
                        route.stats.decisions.inc();
                        record.set_dest(&vhost.metrics);
                        record.set_status(response.status.as_u16(), None);
                        record.response_bytes.store(
                            response.body.as_ref().map_or(0, |b| b.len() as u64),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        record.access(|a| {
                            a.route_name = route.name.clone();
                            a.details = "direct_response".into();
                        });
                        let mut resp = Response::new(match &response.body {
                            Some(b) => ProxyBody::full(b.clone()),
                            None => ProxyBody::empty(),
                        });
                        *resp.status_mut() = response.status;
                        if response.body.is_some() {
                            resp.headers_mut().insert(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("text/plain"),
                            );
                        }
                        if let Some(ops) = &route.response_headers {
                            ops.apply(resp.headers_mut(), &fmt);
                        }
                        return Ok(resp);
                    }
                    Decision::Forward {
                        route,
                        target,
                        cluster,
                        ..
                    } => {
                        route.stats.decisions.inc();
                        record.set_route_target(
                            &cluster.stats,
                            &target.window,
                            &cluster.no_endpoint,
                        );
                        record.access(|a| {
                            a.route_name = route.name.clone();
                            a.upstream_cluster = cluster.name.clone();
                        });
                        let several = matches!(&route.action, crate::route::Action::Forward(p) if p.len() > 1);
                        let h = &mut parts.headers;
                        // Envoy applies weighted-cluster ops before route ops, and a lone
                        // destination's after them (reference §4.5).
                        if several {
                            target.request_headers.apply(h, &fmt);
                            route.request_headers.apply(h, &fmt);
                        } else {
                            route.request_headers.apply(h, &fmt);
                            target.request_headers.apply(h, &fmt);
                        }
                        let mut new_path = None;
                        let mut new_authority = None;
                        if let Some(rw) = &route.rewrite {
                            new_path = rw.rewrite_path(&path);
                            new_authority = rw.authority.clone();
                        }
                        if new_authority.is_none() {
                            new_authority = target.authority.clone();
                        }
                        let response_ops = match (&target.response_headers, &route.response_headers)
                        {
                            (None, None) => None,
                            (t, r) => Some(ResponseOps {
                                target: t.clone(),
                                route: r.clone(),
                                weighted: several,
                            }),
                        };
                        Plan {
                            cluster: Some(cluster.clone()),
                            new_path,
                            new_authority,
                            response_ops,
                            policy: Some(route.policy.clone()),
                            mirrors: route
                                .policy
                                .mirrors
                                .iter()
                                .map(|m| (table.clusters[m.cluster].clone(), m.per_million))
                                .collect(),
                        }
                    }
                }
            };

            let policy: &RoutePolicy = plan.policy.as_deref().unwrap_or(&DEFAULT_ROUTE_POLICY);
            // The fault filter runs before the router: delay, then abort, each its own draw.
            if let Some(fault) = &policy.fault {
                if let Some((delay, share)) = fault.delay
                    && draw_per_million() < share
                {
                    tokio::time::sleep(delay).await;
                    record.set_delay_injected();
                }
                if let Some((abort, share)) = fault.abort
                    && draw_per_million() < share
                {
                    return match abort {
                        Abort::Http(status) => Err(LocalReply::fault_abort(status)),
                        Abort::Grpc(code) => Ok(grpc_fault_abort(code, record)),
                    };
                }
            }
            let mut cors_reply: Option<HeaderValue> = None;
            if let Some(cors) = &policy.cors
                && let Some(origin) = parts.headers.get(header::ORIGIN).cloned()
            {
                let allowed = cors.allows(origin.as_bytes());
                let preflight = parts.method == http::Method::OPTIONS
                    && parts
                        .headers
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
                if preflight && allowed {
                    return Ok(cors_preflight(cors, origin, record));
                }
                if preflight && !cors.forward_unmatched_preflights {
                    let mut resp = Response::new(ProxyBody::empty());
                    resp.headers_mut()
                        .insert(header::SERVER, HeaderValue::from_static("envoy"));
                    record.set_status(200, None);
                    return Ok(resp);
                }
                if allowed {
                    cors_reply = Some(origin);
                }
            }
            // A client may amend the retry policy and the timeouts, as Envoy allows; the headers are
            // for us, not the upstream.
            let controls = headers::has_envoy_controls(&parts.headers);
            let amended_retry = if controls {
                policy.retry.amended_by(&parts.headers)
            } else {
                None
            };
            let retry: &RetryPolicy = amended_retry.as_ref().unwrap_or(&policy.retry);
            let (mut timeout, mut per_try) = (policy.timeout, retry.per_try_timeout);
            if controls {
                if amended_retry.is_some() {
                    for name in RetryPolicy::CLIENT_HEADERS {
                        parts.headers.remove(name);
                    }
                }
                if let Some(ms) = header_ms(&parts.headers, &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS) {
                    timeout = (ms > 0).then(|| Duration::from_millis(ms));
                }
                if let Some(ms) = header_ms(&parts.headers, &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS)
                {
                    per_try = (ms > 0).then(|| Duration::from_millis(ms));
                }
                parts.headers.remove(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS);
                parts
                    .headers
                    .remove(&X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS);
            }
            if let Some(t) = timeout {
                parts.headers.insert(
                    X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(),
                    headers::number(t.as_millis() as u64),
                );
            }

            // Build the upstream request.
            let down_upgrade = if upgrade {
                parts.extensions.remove::<crate::downstream::OnUpgrade>()
            } else {
                None
            };
            let original_pq = parts.uri.path_and_query().cloned();
            {
                let h = &mut parts.headers;
                headers::strip_hop_by_hop(h, upgrade);
                headers::ensure_request_id(h);
                headers::ensure_forwarded_proto(h, "http");
            }
            record.access(|a| {
                if let Some(id) = parts
                    .headers
                    .get(&headers::X_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                {
                    a.request_id = id.to_string();
                }
            });
            let path_changed = plan.new_path.is_some() || matches!(path, Cow::Owned(_));
            let pq: PathAndQuery = if path_changed {
                if plan.new_path.is_some()
                    && let Some(orig) = &original_pq
                    && let Ok(v) = HeaderValue::from_str(orig.as_str())
                {
                    parts
                        .headers
                        .insert(headers::X_ENVOY_ORIGINAL_PATH.clone(), v);
                }
                let p = plan.new_path.as_deref().unwrap_or(&path);
                let text = match query {
                    Some(q) => format!("{p}?{q}"),
                    None => p.to_string(),
                };
                PathAndQuery::try_from(text).map_err(|_| LocalReply::bad_request("invalid path"))?
            } else {
                original_pq.unwrap_or_else(|| PathAndQuery::from_static("/"))
            };
            let up_authority: Authority = match &plan.new_authority {
                Some(a) => Authority::try_from(a.as_bytes())
                    .map_err(|_| LocalReply::bad_request("invalid authority"))?,
                None => authority,
            };

            let (cluster, endpoint_override) = match plan.cluster {
                Some(c) => {
                    let over = if matches!(c.discovery, Discovery::OriginalDst) {
                        Some(
                            // Boxed: DNS lookups make a large future, and only PASSTHROUGH
                            // clusters and ALLOW_ANY traffic need one.
                            Box::pin(self.original_destination(up_authority.as_str(), Some(&c)))
                                .await?,
                        )
                    } else {
                        None
                    };
                    (Some(c), over)
                }
                None => (
                    None,
                    Some(Box::pin(self.original_destination(up_authority.as_str(), None)).await?),
                ),
            };
            let h2 = cluster.as_ref().is_some_and(|c| c.h2) && !upgrade;
            // A body a retry or mirror might have to send again: a small sized one is read
            // first; an unsized one streams to the first attempt while up to Envoy's buffer
            // limit of it is kept (past the limit, that request is no longer retried or
            // mirrored).
            // Also kept when no retry policy would resend it: a pooled connection the upstream
            // closed under the request is replayed on a new one (pingora's rule: reused, no
            // response byte, body still whole).
            let body = match keeping(&parts.headers, &body) {
                _ if upgrade => Replay::Stream(RequestBody::new(body, Some(record.clone()))),
                Keeping::Never => Replay::Stream(RequestBody::new(body, Some(record.clone()))),
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
                        cluster.as_ref().map(|c| c.stats.clone()),
                    );
                    Replay::Kept(keep, first)
                }
            };
            let mut set_cookie = None;
            // Built in a block: what only the first send needs (the request, its retry
            // template) then ends before the await instead of being kept in this future's
            // state, which is copied whole when the request's future is boxed.
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            // Pinned where it is built and raced in place, not wrapped (see `Race`); the block
            // ends the send future's life as soon as it has answered.
            let raced = {
                let send = pin!({
                    let (body, template) = match body {
                        Replay::Stream(b) => (b, None),
                        Replay::Buffered(data, trailers) => (
                            RequestBody::buffered(data.clone(), trailers.clone(), None),
                            Some(Template::Buffered {
                                body: data,
                                trailers,
                            }),
                        ),
                        Replay::Kept(keep, first) => {
                            (RequestBody::kept(first), Some(Template::Kept(keep)))
                        }
                    };
                    let mut req = Request::from_parts(parts, body);
                    if h2 {
                        let mut parts = http::uri::Parts::default();
                        parts.scheme = Some(Scheme::HTTP);
                        parts.authority = Some(up_authority.clone());
                        parts.path_and_query = Some(pq);
                        *req.uri_mut() = Uri::from_parts(parts)
                            .map_err(|_| LocalReply::bad_request("invalid uri"))?;
                        *req.version_mut() = Version::HTTP_2;
                        req.headers_mut().remove(header::HOST);
                    } else {
                        *req.uri_mut() = Uri::from(pq);
                        *req.version_mut() = Version::HTTP_11;
                        // Usually the client's Host already says it (no rewrite, origin-form).
                        let host = up_authority.as_str().as_bytes();
                        if req.headers().get(header::HOST).map(|v| v.as_bytes()) != Some(host)
                            && let Ok(v) =
                                HeaderValue::from_maybe_shared(crate::recycle::copy(host))
                        {
                            req.headers_mut().insert(header::HOST, v);
                        }
                    }

                    if !plan.mirrors.is_empty() {
                        self.mirror(&plan.mirrors, &req, template.as_ref(), &up_authority);
                    }
                    let key_hash = match cluster.as_deref().and_then(|c| c.policy.hash.as_ref()) {
                        Some(h) => hash_key(
                            &h.key,
                            req.headers(),
                            req.uri().query(),
                            conn,
                            &mut set_cookie,
                        ),
                        None => None,
                    };
                    let attempt = Attempt {
                        hash: key_hash,
                        upgrade,
                        cluster: cluster.as_deref(),
                        fixed: endpoint_override,
                        policy: retry,
                        per_try,
                        template,
                        record,
                    };
                    self.send_with_retries(req, attempt)
                });
                let sleep = pin!(deadline.map(tokio::time::sleep_until));
                Race::new(send, sleep).await
            };
            let sent = match raced {
                Ok(r) => r,
                Err(Elapsed) => {
                    if let Some(c) = &cluster {
                        c.stats.upstream_rq_timeout.inc();
                    }
                    Err(LocalReply::timeout())
                }
            };
            let (mut resp, release, active, started) = sent?;
            let service_time = started.elapsed();
            // The gRPC status, if any, was recorded where the response was judged for retry.
            record.set_status(resp.status().as_u16(), None);
            record.access(|a| {
                a.service_time_ms = Some(service_time.as_millis() as u64);
                a.details = "via_upstream".into();
            });

            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(down) = down_upgrade
            {
                let up = hyper::upgrade::on(&mut resp);
                let record = record.clone();
                tokio::spawn(async move {
                    if let (Some(mut down), Ok(up)) = (down.upgraded().await, up.await) {
                        let mut up = hyper_util::rt::TokioIo::new(up);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                    drop(active);
                    drop(record);
                });
                let (parts, _) = resp.into_parts();
                return Ok(Response::from_parts(parts, ProxyBody::empty()));
            }

            let (mut parts, incoming) = resp.into_parts();
            // TE.CL from the upstream: hyper decoded the chunks, so the length no longer describes
            // the body we send (RFC 9112 §6.3: Transfer-Encoding wins).
            if parts.headers.contains_key(header::TRANSFER_ENCODING) {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            headers::strip_hop_by_hop(&mut parts.headers, false);
            parts.headers.insert(
                headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                headers::number(service_time.as_millis() as u64),
            );
            parts
                .headers
                .insert(header::SERVER, HeaderValue::from_static("envoy"));
            if let Some(ResponseOps {
                target: target_ops,
                route: route_ops,
                weighted: several,
            }) = plan.response_ops
            {
                let apply = |ops: &Option<Arc<HeaderOps>>, h: &mut http::HeaderMap| {
                    if let Some(o) = ops {
                        o.apply(h, &fmt);
                    }
                };
                if several {
                    apply(&target_ops, &mut parts.headers);
                    apply(&route_ops, &mut parts.headers);
                } else {
                    apply(&route_ops, &mut parts.headers);
                    apply(&target_ops, &mut parts.headers);
                }
            }
            if let Some(cookie) = set_cookie {
                parts.headers.append(header::SET_COOKIE, cookie);
            }
            if let (Some(origin), Some(cors)) = (cors_reply, &policy.cors) {
                let h = &mut parts.headers;
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                if let Some(v) = &cors.expose_headers {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
                }
                if cors.allow_credentials {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
            parts.version = Version::HTTP_11;
            Ok(Response::from_parts(
                parts,
                ProxyBody::upstream(
                    incoming,
                    release,
                    active,
                    record.clone(),
                    deadline.map(|at| body::BodyDeadline {
                        at,
                        stats: cluster.as_ref().map(|c| c.stats.clone()),
                    }),
                ),
            ))
        }
    }

    /// Sends to an endpoint of the cluster (or to the fixed one), retrying as the route's
    /// policy says: on connect failures always when allowed (nothing was sent), on resets,
    /// per-try timeouts and retriable responses only when the body can be sent again. Other
    /// hosts are preferred for each retry, with Envoy's jittered back-off in between.
    #[allow(clippy::manual_async_fn)] // see the comment at `forward`
    fn send_with_retries<'a>(
        &'a self,
        first: Request<RequestBody>,
        a: Attempt<'a>,
    ) -> impl Future<Output = Result<Sent, LocalReply>> + Send + 'a {
        // The head stays in the block's state for every attempt (sends borrow it); a body is
        // either the first one, handed back by a failed connect, or rebuilt from the
        // template. Split here for the reason given at `forward`.
        let (head, first_body) = first.into_parts();
        let mut head = Head(head);
        let mut next = Some(first_body);
        // An async block for the reason given at `forward`.
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
                        let grpc = grpc_status_of(resp.headers());
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
                        return Ok((resp, release, Some(active), started));
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

    /// Fire-and-forget copies to the shadow clusters: never awaited, never retried, bounded
    /// in number (overflow is dropped and counted). A body of unknown size is copied as the
    /// attempts pull it; one over the buffer limit cuts its copies short, as in Envoy.
    fn mirror(
        &self,
        mirrors: &[(Arc<Cluster>, u32)],
        req: &Request<RequestBody>,
        template: Option<&Template>,
        authority: &Authority,
    ) {
        use http_body::Body as _;
        let copy = || match template {
            Some(Template::Buffered { body, trailers }) => {
                Some(RequestBody::buffered(body.clone(), trailers.clone(), None))
            }
            Some(Template::Kept(keep)) => keep.follow().map(RequestBody::kept),
            None if req.body().is_end_stream() => {
                Some(RequestBody::buffered(bytes::Bytes::new(), None, None))
            }
            None => None,
        };
        for (cluster, share) in mirrors {
            if draw_per_million() >= *share {
                continue;
            }
            let stats = &self.metrics.proxy;
            let Some(body) = copy() else {
                stats.mirror_dropped.inc();
                continue;
            };
            let Ok(permit) = self.mirror_slots.clone().try_acquire_owned() else {
                stats.mirror_dropped.inc();
                continue;
            };
            let Some(endpoint) = cluster.pick(rand::rng().random(), &[]) else {
                stats.mirror_dropped.inc();
                continue;
            };
            stats.mirror_sent.inc();
            let mut shadow = Request::new(body);
            *shadow.method_mut() = req.method().clone();
            *shadow.headers_mut() = req.headers().clone();
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            if cluster.h2 {
                let mut p = http::uri::Parts::default();
                p.scheme = Some(Scheme::HTTP);
                p.authority = Some(authority.clone());
                p.path_and_query = Some(pq);
                match Uri::from_parts(p) {
                    Ok(u) => *shadow.uri_mut() = u,
                    Err(_) => continue,
                }
                *shadow.version_mut() = Version::HTTP_2;
                shadow.headers_mut().remove(header::HOST);
            } else {
                *shadow.uri_mut() = Uri::from(pq);
                *shadow.version_mut() = Version::HTTP_11;
            }
            let timeout = cluster.connect_timeout;
            let stats = cluster.stats.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _active = endpoint.begin();
                let (head, body) = shadow.into_parts();
                if let Ok((resp, release)) =
                    endpoint.pool.send(&head, body, timeout, Some(&stats)).await
                {
                    use http_body_util::BodyExt as _;
                    // Read the answer to the end so the connection can be reused.
                    if resp.into_body().collect().await.is_ok()
                        && let Some(r) = release
                    {
                        r.release();
                    }
                }
            });
        }
    }

    /// ALLOW_ANY passthrough (no cluster) and PASSTHROUGH or `resolution: NONE` clusters:
    /// the address the request names, but never one of our own listeners (that would loop
    /// forever). A cluster's port decides the default port and the protocol (HTTP/2 for an
    /// HTTP2 or GRPC port), as for its other endpoints.
    async fn original_destination(
        &self,
        authority: &str,
        cluster: Option<&Cluster>,
    ) -> Result<Arc<crate::upstream::Endpoint>, LocalReply> {
        let (host, port) = split_authority(authority);
        let port = port.unwrap_or(cluster.map_or(80, |c| c.port));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Some(addr) = crate::upstream::dns::resolve_passthrough(host, port).await else {
            return Err(LocalReply::no_healthy_upstream());
        };
        let is_self = self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || addr.ip().is_loopback()
                    || addr.ip().is_unspecified()
                    || own.ip().is_unspecified())
        });
        if is_self {
            tracing::warn!(%addr, "refused to forward a request to our own listener");
            return Err(LocalReply::blocked_host());
        }
        Ok(Arc::new(crate::upstream::Endpoint {
            addr,
            weight: 1,
            labels: Default::default(),
            workload_name: None,
            active: Default::default(),
            pool: match cluster {
                Some(c) => self.pools.get_with(addr, c.h2, &c.conn),
                None => self.pools.get(addr, false),
            },
            // A named service's traffic is its own (Istio labels an ORIGINAL_DST cluster of a
            // ServiceEntry with that service); only ALLOW_ANY traffic is PassthroughCluster.
            metrics: match cluster {
                Some(c) => c.no_endpoint.clone(),
                None => self.passthrough.clone(),
            },
            outlier: Default::default(),
        }))
    }
}

/// The gRPC status a response carries in its headers (trailers-only) or trailers.
pub(crate) fn grpc_status_of(h: &http::HeaderMap) -> Option<u8> {
    h.get(&headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn fill_access(a: &mut record::AccessInfo, req: &Request<Incoming>, conn: ConnInfo) {
    let h = req.headers();
    let text = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    a.method = req.method().to_string();
    a.path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    a.protocol = match req.version() {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    a.authority = req
        .uri()
        .authority()
        .map(|x| x.to_string())
        .unwrap_or_else(|| text("host"));
    a.forwarded_for = text("x-forwarded-for");
    a.user_agent = text("user-agent");
    a.request_id = text("x-request-id");
    a.downstream_local = Some(conn.local);
    a.downstream_remote = Some(conn.remote);
}

/// What routing decided, owned, so the table guard can be released before any await.
struct Plan {
    cluster: Option<Arc<Cluster>>,
    new_path: Option<String>,
    new_authority: Option<HeaderValue>,
    response_ops: Option<ResponseOps>,
    /// The matched route's timeout, retries and faults; `None`: Istio's defaults.
    policy: Option<Arc<RoutePolicy>>,
    /// Shadow clusters with their share per million (empty almost always).
    mirrors: Vec<(Arc<Cluster>, u32)>,
}

/// Response header operations of the matched route and destination, applied once the
/// upstream answers.
struct ResponseOps {
    target: Option<Arc<HeaderOps>>,
    route: Option<Arc<HeaderOps>>,
    /// Several weighted destinations: Envoy applies the destination's ops first.
    weighted: bool,
}

impl Plan {
    fn passthrough() -> Plan {
        Plan {
            cluster: None,
            new_path: None,
            new_authority: None,
            response_ops: None,
            policy: None,
            mirrors: Vec::new(),
        }
    }
}

/// The request headers a client may use to set timeouts (Envoy honours them on internal
/// requests, which a sidecar's outbound requests are).
static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

fn header_ms(h: &http::HeaderMap, name: &http::HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Sleeps Envoy's back-off before retry number `attempt + 1`.
async fn retry_wait(policy: &RetryPolicy, attempt: usize) {
    let wait = policy.backoff(attempt as u32, rand::rng().random());
    tokio::time::sleep(wait).await;
}

fn draw_per_million() -> u32 {
    rand::rng().random_range(0..crate::route::policy::PER_MILLION)
}

/// A gRPC fault abort: HTTP 200 with the configured `grpc-status`, as Envoy's fault filter
/// answers gRPC requests.
fn grpc_fault_abort(code: u8, record: &RequestRecord) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert(
        "grpc-message",
        HeaderValue::from_static("fault filter abort"),
    );
    record.set_status(200, Some(error::Flag::FaultInjected));
    record.set_grpc_status(code);
    resp
}

/// Envoy's CORS filter answering a preflight whose origin is allowed.
fn cors_preflight(
    cors: &crate::route::policy::Cors,
    origin: HeaderValue,
    record: &RequestRecord,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(v) = &cors.allow_methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
    }
    if let Some(v) = &cors.allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    if let Some(v) = &cors.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(header::SERVER, HeaderValue::from_static("envoy"));
    record.set_status(200, None);
    resp
}

/// The consistent-hash key of a request (Istio `consistentHash`). A missing cookie with a TTL
/// is generated and handed back in `set_cookie`, as Envoy does, so the client sticks from its
/// next request on.
fn hash_key(
    key: &crate::upstream::hash::HashKey,
    headers: &http::HeaderMap,
    query: Option<&str>,
    conn: ConnInfo,
    set_cookie: &mut Option<HeaderValue>,
) -> Option<u64> {
    use crate::upstream::hash::{HashKey, hash_bytes};
    match key {
        HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(hash_bytes(conn.remote.ip().to_string().as_bytes())),
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

/// The policy of a route that sets none (Istio's defaults), shared instead of built per
/// request.
static DEFAULT_ROUTE_POLICY: std::sync::LazyLock<RoutePolicy> =
    std::sync::LazyLock::new(RoutePolicy::default);

/// Mirror requests in flight at once; more are dropped (and counted), never queued.
pub const MIRROR_IN_FLIGHT: usize = 1024;

/// Envoy's default per-stream buffer limit: bodies up to this size can be retried.
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// How a request body is made ready for a retry or a mirror.
enum Keeping {
    /// Empty, or its declared length fits the retry buffer: read it whole before the first
    /// attempt (one buffer, no sharing between attempts).
    ReadFirst,
    /// No declared length: kept as it streams, until it outgrows the buffer.
    AsItStreams,
    /// Declared longer than the buffer: it could never be sent whole twice, so it streams
    /// and only an attempt that sent none of it (a failed connect) is retried.
    Never,
}

fn keeping(headers: &http::HeaderMap, body: &Incoming) -> Keeping {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Keeping::ReadFirst;
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
) -> Result<(bytes::Bytes, Option<http::HeaderMap>), crate::downstream::BodyError> {
    use http_body_util::BodyExt as _;
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

enum Replay {
    Stream(RequestBody),
    Buffered(bytes::Bytes, Option<http::HeaderMap>),
    Kept(keep::Keep, keep::KeptBody),
}

pin_project_lite::pin_project! {
    /// The future `Proxy::handle` returns: the forwarding future, then the local reply for
    /// its error if it failed. A plain struct rather than an async block, which would keep the
    /// forwarding future twice in its state (once captured, once being awaited).
    struct Handled<F> {
        #[pin]
        forwarded: F,
        finish: Option<Finish>,
    }
}

/// What turns the forwarding's outcome into the response.
struct Finish {
    proxy: Arc<Proxy>,
    record: Arc<RequestRecord>,
    grpc: bool,
    h1: bool,
}

impl Finish {
    fn response(self, forwarded: Result<Response<ProxyBody>, LocalReply>) -> Response<ProxyBody> {
        let record = &self.record;
        let mut resp = match forwarded {
            Ok(resp) => resp,
            Err(local) => {
                let flag = local.flag;
                let details = local.details();
                let resp = local.into_response(self.grpc);
                record.set_status(resp.status().as_u16(), Some(flag));
                if let Some(s) = grpc_status_of(resp.headers()) {
                    record.set_grpc_status(s);
                }
                record.response_bytes.store(
                    resp.body().local_len(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                record.access(|a| a.details = details);
                resp
            }
        };
        server::close_http1_when_draining(&mut resp, self.h1, &self.proxy.state);
        resp
    }
}

impl<F> Future for Handled<F>
where
    F: Future<Output = Result<Response<ProxyBody>, LocalReply>>,
{
    type Output = Response<ProxyBody>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let forwarded = std::task::ready!(this.forwarded.poll(cx));
        // Like any future, this one is not polled again once it has answered.
        let finish = this
            .finish
            .take()
            .expect("Handled polled after it completed");
        std::task::Poll::Ready(finish.response(forwarded))
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

/// What a retry needs besides the head, which the sends only borrow: the body again.
enum Template {
    /// Read whole before the first attempt.
    Buffered {
        body: bytes::Bytes,
        trailers: Option<http::HeaderMap>,
    },
    /// Kept as it streams, while it fits the buffer limit.
    Kept(keep::Keep),
}

impl Template {
    fn body(&self) -> RequestBody {
        match self {
            Template::Buffered { body, trailers } => {
                RequestBody::buffered(body.clone(), trailers.clone(), None)
            }
            Template::Kept(keep) => RequestBody::kept(keep.replay()),
        }
    }

    fn replayable(&self) -> bool {
        match self {
            Template::Buffered { .. } => true,
            Template::Kept(keep) => keep.replayable(),
        }
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

type Sent = (
    Response<crate::upstream::ResponseBody>,
    Option<crate::upstream::Release>,
    Option<crate::upstream::ActiveGuard>,
    Instant,
);

/// The authority from an absolute-form URI or HTTP/2 `:authority`, else the Host header.
fn request_authority(head: &http::request::Parts) -> Option<Authority> {
    if let Some(a) = head.uri.authority() {
        return Some(a.clone());
    }
    let host = head.headers.get(header::HOST)?.as_bytes();
    // A keep-alive client names the same host on every request, and validating it again cost
    // more than a copy and a compare (about 360 instructions for a cluster-local name). The
    // same bytes always parse to the same authority, so this thread's last one is reused.
    LAST_HOST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(a) = last.as_ref()
            && a.as_str().as_bytes() == host
        {
            return Some(a.clone());
        }
        let a = Authority::from_maybe_shared(crate::recycle::copy(host)).ok()?;
        *last = Some(a.clone());
        Some(a)
    })
}

thread_local! {
    static LAST_HOST: std::cell::RefCell<Option<Authority>> = const { std::cell::RefCell::new(None) };
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::request_authority;

    fn parsed(host: &[u8]) -> Option<String> {
        let mut req = http::Request::new(());
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(host).expect("a header value"),
        );
        request_authority(&req.into_parts().0).map(|a| a.to_string())
    }

    #[test]
    fn the_cached_host_never_stands_in_for_a_different_one() {
        let reviews = "reviews.default.svc.cluster.local:9080";
        assert_eq!(parsed(reviews.as_bytes()).as_deref(), Some(reviews));
        // Same bytes again: served from the cache, same answer.
        assert_eq!(parsed(reviews.as_bytes()).as_deref(), Some(reviews));
        // A different host, an invalid one, and a case variant are each parsed on their own,
        // and the invalid one leaves no wrong entry behind.
        let ratings = "ratings.default.svc.cluster.local";
        assert_eq!(parsed(ratings.as_bytes()).as_deref(), Some(ratings));
        assert_eq!(parsed(b"bad host"), None);
        let upper = "Ratings.default.svc.cluster.local";
        for _ in 0..2 {
            assert_eq!(parsed(upper.as_bytes()).as_deref(), Some(upper));
        }
        assert_eq!(parsed(b"bad host"), None);
    }
}
