//! Connections to one endpoint. HTTP/1.1 keeps a lock-free queue of idle connections per
//! worker, spoken with our own codec ([`super::h1`]); HTTP/2 shares one multiplexed hyper
//! connection per worker. Not hyper-util's pooled client, because the proxy needs three things
//! that client hides: the `:authority` of an HTTP/2 request must stay the service host while
//! we dial an endpoint address; a request that a stale keep-alive connection refused must be
//! told apart so it can be replayed; and a connect failure must be told apart from a failure
//! after bytes were sent.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response, request};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::h1;
use super::response::{ExchangeError, ResponseBody};
use super::tls::{Stream, TlsOrigin};
use crate::metrics::ClusterStats;
pub use crate::proxy::body::RequestBody as UpBody;

/// Idle HTTP/1.1 connections kept per endpoint, all workers together; more are closed when
/// released.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// Workers to give each new pool a shard for (see [`set_worker_count`]).
static WORKER_COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's worker, which picks its shard of every pool.
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers will send requests: pools made afterwards keep one shard of connections
/// per worker, as Envoy keeps a connection pool per worker thread. A connection then only
/// ever serves the thread whose runtime drives it, and a request never wakes another thread.
pub fn set_worker_count(count: usize) {
    WORKER_COUNT.store(count.max(1), Ordering::Relaxed);
}

/// Marks the calling thread as worker `index` (threads not marked use shard 0).
pub fn set_worker_index(index: usize) {
    WORKER_INDEX.with(|w| w.set(index));
}

/// One worker's connections to an endpoint.
struct Shard {
    idle: ArrayQueue<Box<H1Conn>>,
    shared_h2: ArcSwapOption<H2Conn>,
    /// A sweeper task is watching `idle` (see [`sweep`]).
    sweeping: AtomicBool,
}

/// Istio's default `connectionPool.http.idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How a cluster's connections are made and retired: TLS origination and the DestinationRule's
/// `maxRequestsPerConnection` / `idleTimeout`. Endpoints only share a pool when these agree.
#[derive(Debug)]
pub struct ConnSettings {
    pub tls: Option<TlsOrigin>,
    /// 0: unlimited (Istio's default).
    pub max_requests_per_connection: u32,
    pub idle_timeout: Duration,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            tls: None,
            max_requests_per_connection: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What makes two [`ConnSettings`] interchangeable.
type ConnKey = (Option<[u8; 32]>, u32, Duration);

impl ConnSettings {
    fn key(&self) -> ConnKey {
        (
            self.tls.as_ref().map(|t| t.key),
            self.max_requests_per_connection,
            self.idle_timeout,
        )
    }
}

/// The idle state of a connection driven by hyper (HTTP/2, Upgrade), shared by the pool and
/// the task driving the connection, which closes it once it has been idle for the idle
/// timeout.
struct ConnLife {
    /// [`BUSY`], [`CLOSED`], or the pool-relative millisecond (+1) it became idle.
    state: AtomicU64,
    /// HTTP/2: streams open on the connection.
    active: AtomicU32,
}

const BUSY: u64 = 0;
const CLOSED: u64 = u64::MAX;

impl ConnLife {
    /// HTTP/2: one more stream on the connection; false if its driver is closing it.
    fn begin_stream(&self) -> bool {
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s == CLOSED {
                return false;
            }
            if s == BUSY
                || self
                    .state
                    .compare_exchange(s, BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.active.fetch_add(1, Ordering::AcqRel);
                return true;
            }
        }
    }

    /// HTTP/2: a stream ended; the last one makes the connection idle.
    fn end_stream(&self, epoch: Instant) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.state.compare_exchange(
                BUSY,
                idle_mark(epoch),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Drives `conn` until it ends, or until it has sat idle for `timeout` (then dropping it
    /// closes the socket and the cluster's `upstream_cx_idle_timeout` counts it).
    ///
    /// The timer is never moved when a request takes or returns the connection: it is only
    /// ever due at or before the earliest moment the connection could expire, and when it
    /// fires it is set again from the state. A busy connection is checked once per timeout,
    /// and a request costs no timer work and no wake-up of this task.
    async fn drive<F: std::future::Future>(
        &self,
        conn: F,
        timeout: Duration,
        epoch: Instant,
        stats: Option<&Arc<ClusterStats>>,
    ) {
        tokio::pin!(conn);
        let check = tokio::time::sleep(timeout);
        tokio::pin!(check);
        loop {
            tokio::select! {
                biased;
                _ = &mut conn => return,
                _ = &mut check => {
                    let s = self.state.load(Ordering::Acquire);
                    let next = match s {
                        CLOSED => return,
                        BUSY => Instant::now() + timeout,
                        idle => {
                            let expires = epoch + Duration::from_millis(idle - 1) + timeout;
                            if Instant::now() < expires {
                                expires
                            } else if self.active.load(Ordering::Acquire) > 0 {
                                // A stream began as the last one ended; it marks the
                                // connection idle again when it ends.
                                Instant::now() + timeout
                            } else if self
                                .state
                                .compare_exchange(idle, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                                .is_ok()
                            {
                                if let Some(st) = stats {
                                    st.upstream_cx_idle_timeout.inc();
                                }
                                return;
                            } else {
                                // Claimed meanwhile: look again at once.
                                Instant::now()
                            }
                        }
                    };
                    check.as_mut().reset(next.into());
                }
            }
        }
    }
}

/// Envoy's transport failure reason for a failed TCP connect, `delayed connect error: 111`
/// for a refused one: the text operators search their logs for.
fn connect_error_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => format!("delayed connect error: {errno}"),
        None => e.to_string(),
    }
}

/// The idle state value for "idle since now".
fn idle_mark(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(CLOSED - 2) + 1
}

/// One stream on a shared HTTP/2 connection, held until its response body is done, so the
/// connection's idle timeout only counts time with no stream open.
pub struct H2Stream {
    life: Arc<ConnLife>,
    epoch: Instant,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.life.end_stream(self.epoch);
    }
}

/// A pooled HTTP/1.1 connection and how many requests it has carried.
pub struct H1Conn {
    pub(super) wire: h1::Conn,
    /// The shard of the worker whose runtime its socket is registered with.
    shard: usize,
    requests: u32,
    idle_since: Instant,
    /// Counts the connection as open for the cluster that opened it.
    gauge: ConnGauge,
}

/// A pooled connection lent to the HTTP/1.1 codec for one exchange.
pub struct Leased {
    conn: Box<H1Conn>,
    pool: Arc<EndpointPool>,
}

impl h1::Lease for Leased {
    #[inline]
    fn conn(&mut self) -> &mut h1::Conn {
        &mut self.conn.wire
    }

    fn give_back(self) {
        self.pool.put_back(self.conn);
    }
}

/// The shared HTTP/2 connection and how many streams it has been given.
struct H2Conn {
    sender: http2::SendRequest<UpBody>,
    streams: AtomicU32,
    life: Arc<ConnLife>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent: the body is handed back for a retry elsewhere (the caller kept
    /// the head).
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        addr: SocketAddr,
        reason: String,
        body: Box<UpBody>,
    },
    /// The request (or part of it) went out and the exchange failed.
    #[error("upstream {addr}: {source}")]
    Exchange {
        addr: SocketAddr,
        source: ExchangeError,
        /// On a pooled keep-alive connection: the upstream may have closed it while idle, just
        /// as the request went out (the request path replays those on a new connection).
        reused: bool,
    },
}

/// Counters an operator reads (surfaced by the admin and metrics issues).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub connections_opened: AtomicU64,
    pub connect_failures: AtomicU64,
    pub stale_replays: AtomicU64,
}

pub struct EndpointPool {
    pub addr: SocketAddr,
    pub h2: bool,
    pub settings: Arc<ConnSettings>,
    /// Carries Upgrade requests (WebSocket and friends): hyper, one connection each.
    upgrade: bool,
    shards: Box<[Shard]>,
    /// The pool this pool's Upgrade requests use, made on first use.
    upgrades: OnceLock<Arc<EndpointPool>>,
    /// Origin of the idle timestamps in [`ConnLife`].
    epoch: Instant,
    pub stats: PoolStats,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("addr", &self.addr)
            .field("h2", &self.h2)
            .field("tls", &self.settings.tls.is_some())
            .field("idle", &self.idle_connections())
            .finish()
    }
}

/// What a hyper response needs kept until its body is done: for HTTP/2 the response's stream,
/// which counts against the connection's idle timeout; for an Upgrade request its connection's
/// sender. (An HTTP/1.1 body from our codec holds its connection itself.)
pub struct Release(Held);

enum Held {
    /// An Upgrade request's connection, never pooled: dropping the sender closes it unless
    /// it was upgraded.
    Upgrade(#[allow(dead_code)] http1::SendRequest<UpBody>),
    /// A stream on a shared HTTP/2 connection, ended when dropped.
    H2(#[allow(dead_code)] H2Stream),
}

impl Release {
    /// The body is done.
    pub fn release(self) {
        drop(self.0);
    }
}

/// How often a pool's idle HTTP/1.1 connections are checked for an upstream close and for
/// their idle timeout: an eighth of the timeout, between 10 ms and 1 s.
fn sweep_tick(idle_timeout: Duration) -> Duration {
    (idle_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Watches one shard's idle connections while it has any: closes those the upstream closed
/// (so they do not linger in CLOSE_WAIT) and those idle for the idle timeout. It holds the
/// pool weakly, so a pool no table uses is still dropped.
async fn sweep(pool: Weak<EndpointPool>, shard: usize, tick: Duration) {
    let mut empty_rounds = 0;
    loop {
        tokio::time::sleep(tick).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let Some(s) = pool.shards.get(shard) else {
            return;
        };
        pool.sweep_shard(s);
        if !s.idle.is_empty() {
            empty_rounds = 0;
            continue;
        }
        empty_rounds += 1;
        if empty_rounds >= 3 {
            s.sweeping.store(false, Ordering::SeqCst);
            // A connection released meanwhile saw the flag still set: keep watching it,
            // unless a new sweeper already does.
            if s.idle.is_empty() || s.sweeping.swap(true, Ordering::SeqCst) {
                return;
            }
            empty_rounds = 0;
        }
    }
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, h2: bool) -> EndpointPool {
        Self::with_settings(addr, h2, Arc::new(ConnSettings::default()))
    }

    pub fn with_settings(addr: SocketAddr, h2: bool, settings: Arc<ConnSettings>) -> EndpointPool {
        EndpointPool {
            addr,
            h2,
            settings,
            upgrade: false,
            shards: {
                let n = WORKER_COUNT.load(Ordering::Relaxed);
                (0..n)
                    .map(|_| Shard {
                        idle: ArrayQueue::new((MAX_IDLE_PER_ENDPOINT / n).max(16)),
                        shared_h2: ArcSwapOption::empty(),
                        sweeping: AtomicBool::new(false),
                    })
                    .collect()
            },
            upgrades: OnceLock::new(),
            epoch: Instant::now(),
            stats: PoolStats::default(),
        }
    }

    /// The pool an Upgrade request (WebSocket and friends) goes out on: Upgrade exists only
    /// in HTTP/1.1, and the upgraded connection is handed to the proxy, so a sibling with the
    /// same settings sends it through hyper on a connection of its own.
    pub fn for_upgrade(self: &Arc<Self>) -> Arc<EndpointPool> {
        if self.upgrade {
            return self.clone();
        }
        self.upgrades
            .get_or_init(|| {
                let settings = ConnSettings {
                    tls: self.settings.tls.as_ref().map(TlsOrigin::for_http1),
                    max_requests_per_connection: self.settings.max_requests_per_connection,
                    idle_timeout: self.settings.idle_timeout,
                };
                let mut pool = EndpointPool::with_settings(self.addr, false, Arc::new(settings));
                pool.upgrade = true;
                Arc::new(pool)
            })
            .clone()
    }

    pub fn idle_connections(&self) -> usize {
        self.shards.iter().map(|s| s.idle.len()).sum()
    }

    /// The calling worker's shard.
    fn shard_index(&self) -> usize {
        WORKER_INDEX.with(Cell::get) % self.shards.len()
    }

    fn shard(&self) -> &Shard {
        &self.shards[self.shard_index()]
    }

    /// Sends the request `head` and `body` (the head already in origin-form with its Host /
    /// authority set) to this endpoint. The head is borrowed: HTTP/1.1 encodes it from the
    /// reference, so a caller that may retry keeps it without cloning its header map; only
    /// the paths through hyper (HTTP/2, upgrades) copy it.
    pub async fn send(
        self: &Arc<Self>,
        head: &request::Parts,
        body: UpBody,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<ResponseBody>, Option<Release>), SendError> {
        if self.upgrade {
            // Boxed: rare, and its future would otherwise grow every request's.
            Box::pin(self.send_upgrade(head, body, connect_timeout, stats))
                .await
                .map(|(r, rel)| (r.map(ResponseBody::Hyper), Some(rel)))
        } else if self.h2 {
            self.send_h2(head, body, connect_timeout, stats)
                .await
                .map(|(r, stream)| (r.map(ResponseBody::Hyper), Some(Release(Held::H2(stream)))))
        } else {
            self.send_h1(head, body, connect_timeout, stats, true)
                .await
                .map(|r| (r, None))
        }
    }

    /// Like [`send`](Self::send), on a new HTTP/1 connection: the replay of a request whose
    /// pooled connection died under it must not meet another stale one.
    pub async fn send_on_new_connection(
        self: &Arc<Self>,
        head: &request::Parts,
        body: UpBody,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<ResponseBody>, Option<Release>), SendError> {
        if self.h2 || self.upgrade {
            return self.send(head, body, connect_timeout, stats).await;
        }
        self.send_h1(head, body, connect_timeout, stats, false)
            .await
            .map(|r| (r, None))
    }

    /// The pooled connection is taken before the returned future first runs, so that future
    /// carries the body only until the head is written.
    // Inlined so that its future (~620 bytes) is built where `send` keeps it: outlined, it
    // was returned and then copied twice per request.
    #[inline(always)]
    fn send_h1<'a>(
        self: &Arc<Self>,
        head: &'a request::Parts,
        body: UpBody,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
        reuse: bool,
    ) -> impl Future<Output = Result<Response<ResponseBody>, SendError>> + Send + 'a {
        let pooled = if reuse { self.checkout() } else { None };
        let pool = self.clone();
        // Only a new connection needs them, for its gauge.
        let stats = if pooled.is_none() {
            stats.cloned()
        } else {
            None
        };
        async move {
            let (mut conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: dialing (and a TLS handshake) makes a future several times the size
                // of the pooled path's, and it would otherwise be copied with every request's
                // future.
                None => match Box::pin(pool.connect(connect_timeout)).await {
                    Ok(io) => (
                        Box::new(H1Conn {
                            wire: h1::Conn::new(io),
                            shard: pool.shard_index(),
                            requests: 0,
                            idle_since: pool.epoch,
                            gauge: ConnGauge::open(stats.as_ref()),
                        }),
                        false,
                    ),
                    Err(reason) => {
                        return Err(SendError::Connect {
                            addr: pool.addr,
                            reason,
                            body: Box::new(body),
                        });
                    }
                },
            };
            conn.requests += 1;
            match h1::exchange(&mut conn.wire, head, body).await {
                Ok(ex) => Ok(h1::Body::response(Leased { conn, pool }, ex).map(ResponseBody::H1)),
                // Dropping the connection closes it.
                Err(e) => Err(SendError::Exchange {
                    addr: pool.addr,
                    source: e.into(),
                    reused,
                }),
            }
        }
    }

    /// An idle connection of this worker's shard that the upstream has not closed and that
    /// has not outlived the idle timeout (the sweeper may not have got to it yet).
    fn checkout(&self) -> Option<Box<H1Conn>> {
        let shard = self.shard();
        let mut now = None;
        while let Some(mut conn) = shard.idle.pop() {
            if self.still_fit(&mut conn, *now.get_or_insert_with(Instant::now)) {
                return Some(conn);
            }
        }
        None
    }

    /// An idle connection may serve another request: within its idle timeout (past it, it is
    /// counted as timed out) and neither closed nor written to by the upstream. Dropping an
    /// unfit one closes it.
    fn still_fit(&self, conn: &mut H1Conn, now: Instant) -> bool {
        if now.saturating_duration_since(conn.idle_since) >= self.settings.idle_timeout {
            if let Some(s) = &conn.gauge.0 {
                s.upstream_cx_idle_timeout.inc();
            }
            return false;
        }
        conn.wire.is_idle_fit()
    }

    /// Takes back a connection whose response is complete: kept idle for the next request
    /// of its worker unless it reached `maxRequestsPerConnection` or the idle queue is full.
    pub(super) fn put_back(self: &Arc<Self>, mut conn: Box<H1Conn>) {
        let max = self.settings.max_requests_per_connection;
        if max > 0 && conn.requests >= max {
            // Envoy's `max_requests_per_connection`: dropping closes it.
            if let Some(s) = &conn.gauge.0 {
                s.upstream_cx_max_requests.inc();
            }
            return;
        }
        let index = conn.shard;
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        conn.idle_since = Instant::now();
        // A full queue drops the connection: that bounds idle sockets per endpoint.
        if shard.idle.push(conn).is_err() {
            return;
        }
        // SeqCst, as the queue's own operations and the sweeper's: either this sees the
        // sweeper's flag cleared, or the sweeper sees this connection.
        if !shard.sweeping.load(Ordering::SeqCst) && !shard.sweeping.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(sweep(
                        Arc::downgrade(self),
                        index,
                        sweep_tick(self.settings.idle_timeout),
                    ));
                }
                // No runtime to watch from: checkouts still test each connection.
                Err(_) => shard.sweeping.store(false, Ordering::SeqCst),
            }
        }
    }

    /// Closes the shard's idle connections that timed out or that the upstream closed.
    fn sweep_shard(&self, shard: &Shard) {
        let now = Instant::now();
        for _ in 0..shard.idle.len() {
            let Some(mut conn) = shard.idle.pop() else {
                break;
            };
            if self.still_fit(&mut conn, now) {
                let _ = shard.idle.push(conn);
            }
        }
    }

    /// An Upgrade request, through hyper on a connection of its own: the proxy takes the
    /// upgraded connection from hyper's response.
    async fn send_upgrade(
        self: &Arc<Self>,
        head: &request::Parts,
        body: UpBody,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<Incoming>, Release), SendError> {
        let io = match self.connect(connect_timeout).await {
            Ok(io) => TokioIo::new(io),
            Err(reason) => {
                return Err(SendError::Connect {
                    addr: self.addr,
                    reason,
                    body: Box::new(body),
                });
            }
        };
        let (mut sender, conn) = match http1::Builder::new().handshake(io).await {
            Ok(pair) => pair,
            Err(e) => {
                return Err(SendError::Connect {
                    addr: self.addr,
                    reason: e.to_string(),
                    body: Box::new(body),
                });
            }
        };
        // Errors end the connection; the request that saw them reports them.
        self.spawn_driver(conn.with_upgrades(), 0, stats);
        match sender
            .try_send_request(Request::from_parts(head.clone(), body))
            .await
        {
            Ok(resp) => Ok((resp, Release(Held::Upgrade(sender)))),
            Err(mut e) => match e.take_message() {
                Some(back) => Err(SendError::Connect {
                    addr: self.addr,
                    reason: e.into_error().to_string(),
                    body: Box::new(back.into_body()),
                }),
                None => Err(SendError::Exchange {
                    addr: self.addr,
                    source: e.into_error().into(),
                    reused: false,
                }),
            },
        }
    }

    /// Spawns the task that drives a new connection (busy, with `streams` HTTP/2 streams
    /// open) until it ends or sits idle for the idle timeout; its gauge counts it as active
    /// meanwhile.
    fn spawn_driver<F>(
        &self,
        conn: F,
        streams: u32,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Arc<ConnLife>
    where
        F: std::future::Future + Send + 'static,
    {
        let gauge = ConnGauge::open(stats);
        let life = Arc::new(ConnLife {
            state: AtomicU64::new(BUSY),
            active: AtomicU32::new(streams),
        });
        let driver = life.clone();
        let (timeout, epoch) = (self.settings.idle_timeout, self.epoch);
        let cluster_stats = stats.cloned();
        tokio::spawn(async move {
            driver
                .drive(conn, timeout, epoch, cluster_stats.as_ref())
                .await;
            drop(gauge);
        });
        life
    }

    /// The shared HTTP/2 connection if it may take one more stream. The stream that reaches
    /// `maxRequestsPerConnection` retires it: later requests open a new connection while the
    /// streams already on it finish.
    fn shared_sender(
        &self,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Option<(http2::SendRequest<UpBody>, H2Stream)> {
        let shared_h2 = &self.shard().shared_h2;
        let cur = shared_h2.load_full();
        let conn = cur.as_ref()?;
        if conn.sender.is_closed() || !conn.life.begin_stream() {
            return None;
        }
        let stream = H2Stream {
            life: conn.life.clone(),
            epoch: self.epoch,
        };
        let max = self.settings.max_requests_per_connection;
        let n = conn.streams.fetch_add(1, Ordering::AcqRel) + 1;
        if max > 0 && n >= max {
            let prev = shared_h2.compare_and_swap(&cur, None);
            let retired_now = match (&*prev, &cur) {
                (Some(p), Some(c)) => Arc::ptr_eq(p, c),
                _ => false,
            };
            if retired_now && let Some(s) = stats {
                s.upstream_cx_max_requests.inc();
            }
            if n > max {
                return None;
            }
        }
        Some((conn.sender.clone(), stream))
    }

    async fn send_h2(
        &self,
        head: &request::Parts,
        mut body: UpBody,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<Incoming>, H2Stream), SendError> {
        // One replay on a fresh connection if the shared one turned out to be gone.
        for _ in 0..2 {
            let (mut sender, stream) = match self.shared_sender(stats) {
                Some(s) => s,
                // Boxed for the same reason as HTTP/1's new connections.
                None => match Box::pin(self.connect_h2(connect_timeout, stats)).await {
                    Ok(s) => s,
                    Err(reason) => {
                        return Err(SendError::Connect {
                            addr: self.addr,
                            reason,
                            body: Box::new(body),
                        });
                    }
                },
            };
            match sender
                .try_send_request(Request::from_parts(head.clone(), body))
                .await
            {
                Ok(resp) => return Ok((resp, stream)),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        self.shard().shared_h2.store(None);
                        self.stats.stale_replays.fetch_add(1, Ordering::Relaxed);
                        body = back.into_body();
                    }
                    None => {
                        return Err(SendError::Exchange {
                            addr: self.addr,
                            source: e.into_error().into(),
                            reused: false,
                        });
                    }
                },
            }
        }
        Err(SendError::Connect {
            addr: self.addr,
            reason: "HTTP/2 connection closed before the request could be sent".to_string(),
            body: Box::new(body),
        })
    }

    async fn connect_h2(
        &self,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(http2::SendRequest<UpBody>, H2Stream), String> {
        let io = TokioIo::new(self.connect(connect_timeout).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        // Born with one stream, the request it is made for. The driver closes it once no
        // stream has been open for the idle timeout (Envoy's `idle_timeout` counts time
        // without active streams).
        let life = self.spawn_driver(conn, 1, stats);
        let stream = H2Stream {
            life: life.clone(),
            epoch: self.epoch,
        };
        // This request is the connection's first stream; with a limit of one it is also its
        // last, so the connection is never shared.
        if self.settings.max_requests_per_connection != 1 {
            self.shard().shared_h2.store(Some(Arc::new(H2Conn {
                sender: sender.clone(),
                streams: AtomicU32::new(1),
                life,
            })));
        } else if let Some(s) = stats {
            s.upstream_cx_max_requests.inc();
        }
        Ok((sender, stream))
    }

    /// TCP connect plus, for a TLS cluster, the handshake, both within the connect timeout
    /// (Envoy counts a connection as up once its transport socket is).
    async fn connect(&self, connect_timeout: Duration) -> Result<Stream, String> {
        let dial = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| connect_error_reason(&e))?;
            // Small request/response exchanges must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            match &self.settings.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => Ok(Stream::Tls(Box::new(tls.handshake(tcp, self.addr).await?))),
            }
        };
        let stream = match tokio::time::timeout(connect_timeout, dial).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(format!("timed out after {connect_timeout:?}"));
            }
        };
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }
}

/// Counts an open upstream connection for the cluster that opened it, until it closes.
struct ConnGauge(Option<Arc<ClusterStats>>);

impl ConnGauge {
    fn open(stats: Option<&Arc<ClusterStats>>) -> ConnGauge {
        if let Some(s) = stats {
            s.upstream_cx_total.inc();
            s.upstream_cx_active.inc();
        }
        ConnGauge(stats.cloned())
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.upstream_cx_active.dec();
        }
    }
}

/// Pools outlive route tables: a reload that keeps an endpoint and its connection settings
/// keeps its warm connections.
#[derive(Default)]
pub struct PoolRegistry {
    pools:
        std::sync::Mutex<std::collections::HashMap<(SocketAddr, bool, ConnKey), Arc<EndpointPool>>>,
    /// Circuit breakers by cluster name and limits, held by the tables that use them.
    limiters: std::sync::Mutex<
        std::collections::HashMap<(String, super::policy::LimitKey), Weak<super::policy::Limiter>>,
    >,
}

impl PoolRegistry {
    /// A pool with the default settings (plaintext, Istio's defaults).
    pub fn get(&self, addr: SocketAddr, h2: bool) -> Arc<EndpointPool> {
        let key = (addr, h2, (None, 0, DEFAULT_IDLE_TIMEOUT));
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry(key)
            .or_insert_with(|| Arc::new(EndpointPool::new(addr, h2)))
            .clone()
    }

    /// Called while compiling a table or refreshing DNS, never per request.
    pub fn get_with(
        &self,
        addr: SocketAddr,
        h2: bool,
        settings: &Arc<ConnSettings>,
    ) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry((addr, h2, settings.key()))
            .or_insert_with(|| Arc::new(EndpointPool::with_settings(addr, h2, settings.clone())))
            .clone()
    }

    /// The circuit breaker for cluster `name` with `policy`'s limits. A reload that leaves a
    /// cluster's limits alone keeps its breaker, with the requests it already counts: a new
    /// one per table would let a weight edit during a canary briefly double the cluster's
    /// capacity. Envoy likewise keeps a cluster (and its breakers) that CDS did not change.
    pub fn limiter(
        &self,
        name: &str,
        policy: &super::policy::ClusterPolicy,
        h2: bool,
    ) -> Option<Arc<super::policy::Limiter>> {
        let fresh = super::policy::Limiter::new(policy, h2)?;
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        limiters.retain(|_, l| l.strong_count() > 0);
        let key = (name.to_string(), fresh.key);
        if let Some(kept) = limiters.get(&key).and_then(Weak::upgrade) {
            return Some(kept);
        }
        let fresh = Arc::new(fresh);
        limiters.insert(key, Arc::downgrade(&fresh));
        Some(fresh)
    }

    /// Drops pools no table uses any more (only the registry holds them).
    pub fn prune(&self) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|_, p| Arc::strong_count(p) > 1);
    }
}
