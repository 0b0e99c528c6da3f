//! Connections to one endpoint. HTTP/1.1 keeps a lock-free queue of idle connections; HTTP/2
//! shares one multiplexed connection. Built on `hyper::client::conn` rather than hyper-util's
//! pooled client because the proxy needs three things that client hides: the `:authority` of
//! an HTTP/2 request must stay the service host while we dial an endpoint address; a request
//! that a stale keep-alive connection refused must come back to us untouched so it can be
//! replayed; and a connect failure must be told apart from a failure after bytes were sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::metrics::ClusterStats;
pub use crate::proxy::body::RequestBody as UpBody;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when released.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent: the request is handed back for a retry elsewhere.
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        addr: SocketAddr,
        reason: String,
        request: Box<Request<UpBody>>,
    },
    /// The request (or part of it) went out and the exchange failed.
    #[error("upstream {addr}: {source}")]
    Exchange {
        addr: SocketAddr,
        source: hyper::Error,
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
    idle: ArrayQueue<http1::SendRequest<UpBody>>,
    shared_h2: ArcSwapOption<http2::SendRequest<UpBody>>,
    pub stats: PoolStats,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("addr", &self.addr)
            .field("h2", &self.h2)
            .field("idle", &self.idle.len())
            .finish()
    }
}

/// Gives an HTTP/1.1 connection back to its pool once the response body has been read to the
/// end; dropping it earlier closes the connection, because it may still carry unread bytes.
pub struct Release {
    sender: Option<http1::SendRequest<UpBody>>,
    pool: Arc<EndpointPool>,
}

impl Release {
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            // A full queue drops the connection: that bounds idle sockets per endpoint.
            let _ = self.pool.idle.push(sender);
        }
    }
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, h2: bool) -> EndpointPool {
        EndpointPool {
            addr,
            h2,
            idle: ArrayQueue::new(MAX_IDLE_PER_ENDPOINT),
            shared_h2: ArcSwapOption::empty(),
            stats: PoolStats::default(),
        }
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// Sends `req` (already in origin-form with its Host / authority set) to this endpoint.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpBody>,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<Incoming>, Option<Release>), SendError> {
        if self.h2 {
            self.send_h2(req, connect_timeout, stats)
                .await
                .map(|r| (r, None))
        } else {
            self.send_h1(req, connect_timeout, stats)
                .await
                .map(|(r, rel)| (r, Some(rel)))
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<UpBody>,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<(Response<Incoming>, Release), SendError> {
        while let Some(mut sender) = self.idle.pop() {
            if sender.is_closed() || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.release_handle(sender))),
                Err(mut e) => match e.take_message() {
                    // The upstream closed this idle connection before our request went out:
                    // the request is untouched, so replaying it is always safe.
                    Some(back) => {
                        self.stats.stale_replays.fetch_add(1, Ordering::Relaxed);
                        req = back;
                    }
                    None => {
                        return Err(SendError::Exchange {
                            addr: self.addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        let io = match self.connect(connect_timeout).await {
            Ok(io) => io,
            Err(reason) => {
                return Err(SendError::Connect {
                    addr: self.addr,
                    reason,
                    request: Box::new(req),
                });
            }
        };
        let (mut sender, conn) = match http1::Builder::new().handshake(io).await {
            Ok(pair) => pair,
            Err(e) => {
                return Err(SendError::Connect {
                    addr: self.addr,
                    reason: e.to_string(),
                    request: Box::new(req),
                });
            }
        };
        let gauge = ConnGauge::open(stats);
        tokio::spawn(async move {
            // Errors end the connection; the request that saw them reports them.
            let _ = conn.with_upgrades().await;
            drop(gauge);
        });
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.release_handle(sender))),
            Err(mut e) => match e.take_message() {
                Some(back) => Err(SendError::Connect {
                    addr: self.addr,
                    reason: e.into_error().to_string(),
                    request: Box::new(back),
                }),
                None => Err(SendError::Exchange {
                    addr: self.addr,
                    source: e.into_error(),
                }),
            },
        }
    }

    fn release_handle(self: &Arc<Self>, sender: http1::SendRequest<UpBody>) -> Release {
        Release {
            sender: Some(sender),
            pool: self.clone(),
        }
    }

    async fn send_h2(
        &self,
        mut req: Request<UpBody>,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<Response<Incoming>, SendError> {
        // One replay on a fresh connection if the shared one turned out to be gone.
        for _ in 0..2 {
            let mut sender = match self.shared_h2.load_full() {
                Some(s) if !s.is_closed() => (*s).clone(),
                _ => match self.connect_h2(connect_timeout, stats).await {
                    Ok(s) => s,
                    Err(reason) => {
                        return Err(SendError::Connect {
                            addr: self.addr,
                            reason,
                            request: Box::new(req),
                        });
                    }
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        self.shared_h2.store(None);
                        self.stats.stale_replays.fetch_add(1, Ordering::Relaxed);
                        req = back;
                    }
                    None => {
                        return Err(SendError::Exchange {
                            addr: self.addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        Err(SendError::Connect {
            addr: self.addr,
            reason: "HTTP/2 connection closed before the request could be sent".to_string(),
            request: Box::new(req),
        })
    }

    async fn connect_h2(
        &self,
        connect_timeout: Duration,
        stats: Option<&Arc<ClusterStats>>,
    ) -> Result<http2::SendRequest<UpBody>, String> {
        let io = self.connect(connect_timeout).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let gauge = ConnGauge::open(stats);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(gauge);
        });
        self.shared_h2.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    async fn connect(&self, connect_timeout: Duration) -> Result<TokioIo<TcpStream>, String> {
        let stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e.to_string());
                }
                Err(_) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(format!("timed out after {connect_timeout:?}"));
                }
            };
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(TokioIo::new(stream))
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

/// Pools outlive route tables: a reload that keeps an endpoint keeps its warm connections.
#[derive(Default)]
pub struct PoolRegistry {
    pools: std::sync::Mutex<std::collections::HashMap<(SocketAddr, bool), Arc<EndpointPool>>>,
}

impl PoolRegistry {
    /// Called while compiling a table or refreshing DNS, never per request.
    pub fn get(&self, addr: SocketAddr, h2: bool) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry((addr, h2))
            .or_insert_with(|| Arc::new(EndpointPool::new(addr, h2)))
            .clone()
    }

    /// Drops pools no table uses any more (only the registry holds them).
    pub fn prune(&self) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|_, p| Arc::strong_count(p) > 1);
    }
}
