//! The request path: `Proxy::forward` runs a request through named stages, each in its own
//! file, in the order Envoy's filters and router would: where it is addressed (`authority`),
//! the route decision (`decide`, with the replies a route gives itself in `local`), fault
//! injection (`fault`), CORS (`cors`), the client's amendments to retries and timeouts
//! (`amend`), the upstream request's head (`upstream_request`), original destination
//! (`destination`), body keeping for replay (`replay`, `keep`), the send with retries and
//! mirrors (`send`, `mirror`) raced against the route's deadline, and the response on its way
//! back (`response`). A stage that ends the request early says so with a `Stop`; local failures
//! are answered the way Envoy answers them (see `error`).
//!
//! Sync stages are plain functions; only stages that await are async. The request future is
//! boxed per request, so what its state keeps across awaits is a cost on every request: the
//! stages take what they need by reference and the send future is pinned where it is built.
//! The sync stages are `#[inline]`: each runs once per request, and without it a build with
//! several codegen units calls each across units (callgrind: about 300 instructions more per
//! HTTP/1.1 request in the `perf` profile).

mod amend;
mod authority;
pub mod body;
mod cors;
mod decide;
mod destination;
pub mod error;
mod fault;
pub mod headers;
pub(crate) mod keep;
mod local;
mod mirror;
mod ratelimit;
pub mod record;
mod replay;
mod response;
mod send;
mod upstream_request;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use http::{Request, Response, Version};
use rand::RngExt;

use crate::access_log::AccessLog;
use crate::deadline::Race;
use crate::downstream::Incoming;
pub use crate::downstream::{ConnInfo, DrainState};
use crate::metrics::Registry;
use crate::metrics::istio::{DestLabels, DestMetrics};
use crate::route::RouteTable;
use crate::route::action::FormatContext;
use crate::upstream::PoolRegistry;
use body::ProxyBody;
use error::LocalReply;
use record::RequestRecord;

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

/// What every stage may read about the request it serves.
struct Ctx<'a> {
    proxy: &'a Proxy,
    record: &'a Arc<RequestRecord>,
    /// The connection and protocol, as header operations' `%...%` values read them.
    fmt: FormatContext<'a>,
}

/// How a stage ends a request before an upstream answers it.
enum Stop {
    /// A reply of the proxy's own that is not a failure: a redirect, a direct response, a CORS
    /// preflight, a gRPC fault abort. Boxed: these are rare next to forwarded requests, and
    /// every stage's result would otherwise be as large as a response.
    Reply(Box<Response<ProxyBody>>),
    /// A local failure, answered as Envoy answers it.
    Fail(LocalReply),
}

impl From<LocalReply> for Stop {
    fn from(local: LocalReply) -> Stop {
        Stop::Fail(local)
    }
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
        Handled {
            forwarded: self.forward(req, conn, record.clone()),
            finish: Some(Finish { record, grpc }),
        }
    }

    #[allow(clippy::manual_async_fn)]
    // see the comment in the body
    // Inlined into `handle`, so its future is built in the box `handle`'s caller writes:
    // returned from an outlined call it was copied whole (~390 bytes) once more.
    #[inline(always)]
    fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        record: Arc<RequestRecord>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Stop>> + Send + 'static {
        // Split here, not in the block: a request the block captured would keep its slot in
        // the block's state beside the parts it was split into.
        let (mut head, body) = req.into_parts();
        // An async block, not an async fn: an async fn keeps a second copy of each argument
        // in its state, and this state is copied whole when the request's future is boxed.
        async move {
            let cx = Ctx {
                proxy: &self,
                record: &record,
                fmt: FormatContext {
                    downstream_remote: conn.remote,
                    downstream_local: conn.local,
                    protocol: if head.version == Version::HTTP_2 {
                        "HTTP/2"
                    } else {
                        "HTTP/1.1"
                    },
                    hostname: &self.hostname,
                },
            };
            let to = authority::read(&mut head)?;
            let plan = decide::decide(&cx, &head.method, &mut head.headers, &to)?;
            let policy = plan.policy();
            ratelimit::check(
                policy.rate_limit.as_deref(),
                &head.headers,
                plan.cluster.as_deref().map(|c| c.name.as_str()),
                to.port,
                &record,
            )?;
            fault::inject(policy.fault.as_ref(), &record).await?;
            let cors_origin =
                cors::check(policy.cors.as_ref(), &head.method, &head.headers, &record)?;
            let limits = amend::limits(policy, &mut head.headers);
            let mut up = upstream_request::prepare(&mut head, to, &plan, &record)?;
            up.fixed = destination::fixed(&self, plan.cluster.as_deref(), &up.authority).await?;
            let body = replay::ready(
                &head.headers,
                body,
                up.upgrade,
                plan.cluster.as_deref(),
                &record,
            )
            .await?;

            // The route's deadline starts once the body is ready, and also bounds the body.
            let deadline = limits.timeout.map(|t| tokio::time::Instant::now() + t);
            let mut set_cookie = None;
            // Pinned where it is built and raced in place, not wrapped (see `Race`); the block
            // ends the send future's life as soon as it has answered.
            let raced = {
                let send = pin!(send::start(
                    &cx,
                    head,
                    body,
                    &plan,
                    &limits,
                    &mut up,
                    &mut set_cookie
                ));
                let sleep = pin!(deadline.map(tokio::time::sleep_until));
                Race::new(send, sleep).await
            };
            let sent = send::within_deadline(raced, plan.cluster.as_deref())?;
            Ok(response::finish(
                &cx,
                sent,
                &plan,
                up.down_upgrade,
                cors_origin,
                set_cookie,
                deadline,
            ))
        }
    }
}

impl crate::downstream::Handler for Proxy {
    type Body = ProxyBody;

    #[inline(always)]
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        Proxy::handle(self, req, conn)
    }

    fn drain_state(&self) -> &Arc<DrainState> {
        &self.state
    }

    fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
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

/// One uniform draw out of a million, for the shares of faults and mirrors.
fn draw_per_million() -> u32 {
    rand::rng().random_range(0..crate::route::policy::PER_MILLION)
}

/// Mirror requests in flight at once; more are dropped (and counted), never queued.
pub const MIRROR_IN_FLIGHT: usize = 1024;

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
    record: Arc<RequestRecord>,
    grpc: bool,
}

impl Finish {
    fn response(self, forwarded: Result<Response<ProxyBody>, Stop>) -> Response<ProxyBody> {
        let record = &self.record;
        match forwarded {
            Ok(resp) => resp,
            Err(Stop::Reply(resp)) => *resp,
            Err(Stop::Fail(local)) => {
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
        }
    }
}

impl<F> Future for Handled<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Stop>>,
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

#[cfg(test)]
mod tests {
    /// The request future is boxed per request and copied whole where it is built, so its
    /// size is a cost on every request (see `handle`). Printed so a change can quote it.
    #[test]
    fn the_request_future_stays_small() {
        use super::{ConnInfo, Proxy};
        use crate::route::{OutboundPolicy, RouteTable};
        use std::sync::Arc;

        let table = RouteTable {
            version: 0,
            source_hash: String::new(),
            loaded_at: std::time::SystemTime::UNIX_EPOCH,
            outbound_policy: OutboundPolicy::RegistryOnly,
            vhosts: Vec::new(),
            index: Default::default(),
            clusters: Vec::new(),
            dns_task: None,
        };
        let proxy = Arc::new(Proxy::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(table)),
            Arc::new(crate::upstream::PoolRegistry::default()),
            Arc::new(crate::metrics::Registry::default()),
        ));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let conn = ConnInfo {
            remote: addr,
            local: addr,
        };
        let handled = proxy.handle(http::Request::new(crate::downstream::Incoming::Empty), conn);
        let size = std::mem::size_of_val(&handled);
        println!("request future: {size} bytes");
    }
}
