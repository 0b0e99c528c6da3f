//! Listeners and connection lifecycles: HTTP/1.1 and h2c prior knowledge on one port, the
//! header limits, and the drain sequence a sidecar needs on SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{ConnInfo, DrainState, Proxy};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line + headers, HTTP/1 and HTTP/2 alike (431 beyond it).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Time a client has to send its request headers (slowloris).
    pub header_read_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 1024,
        }
    }
}

/// Drain phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Readiness fails; existing connections are asked to close once idle; new connections
    /// are still accepted but served without keep-alive.
    Draining,
    /// The listener is closed; every connection is asked to finish.
    Closing,
}

/// The accept loop of the proxy listener.
pub struct ProxyListener {
    pub addr: SocketAddr,
    phase: watch::Sender<Phase>,
    state: Arc<DrainState>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyListener {
    pub fn spawn(
        listener: TcpListener,
        proxy: Arc<Proxy>,
        limits: Limits,
    ) -> std::io::Result<ProxyListener> {
        let addr = listener.local_addr()?;
        let (phase, rx) = watch::channel(Phase::Serving);
        let state = proxy.state.clone();
        let task = tokio::spawn(accept_loop(listener, proxy, limits, rx));
        Ok(ProxyListener {
            addr,
            phase,
            state,
            task,
        })
    }

    /// Runs the drain sequence: readiness fails now; after `delay` the listener closes; then
    /// waits up to `timeout` for open connections to finish. Returns true if all finished.
    pub async fn drain(self, delay: Duration, timeout: Duration) -> bool {
        self.state.draining.store(true, Ordering::Relaxed);
        let _ = self.phase.send(Phase::Draining);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = self.phase.send(Phase::Closing);
        self.task.abort();
        let state = self.state.clone();
        let wait = async move {
            loop {
                let idle = state.idle.notified();
                if state.connections.load(Ordering::Acquire) == 0
                    && state.in_flight.load(Ordering::Acquire) == 0
                {
                    return;
                }
                // Re-check periodically too: a notification can race the counters.
                let _ = tokio::time::timeout(Duration::from_millis(50), idle).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    phase: watch::Receiver<Phase>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(remote);
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let limits = limits.clone();
        let phase = phase.clone();
        tokio::spawn(serve_connection(
            stream,
            ConnInfo { remote, local },
            proxy,
            limits,
            phase,
        ));
    }
}

struct ConnGuard(Arc<DrainState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serves one downstream connection on any byte stream: TCP from the accept loop, or an
/// in-memory pipe (the front-door fuzz target and tests).
pub async fn serve_connection<S>(
    stream: S,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    proxy.state.connections.fetch_add(1, Ordering::AcqRel);
    let _guard = ConnGuard(proxy.state.clone());
    let draining_at_accept = *phase.borrow() >= Phase::Draining;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        // Connections accepted during drain serve one request and close.
        .keep_alive(!draining_at_accept);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32);
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, info).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut asked_to_close = false;
    let trigger = if draining_at_accept {
        Phase::Closing
    } else {
        Phase::Draining
    };
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(remote = %info.remote, error = %e, "downstream connection ended with an error");
                }
                break;
            }
            changed = phase.changed(), if !asked_to_close => {
                if changed.is_err() || *phase.borrow() >= trigger {
                    // HTTP/1: close once idle, `Connection: close` on the response in
                    // progress; HTTP/2: GOAWAY, streams in progress finish.
                    conn.as_mut().graceful_shutdown();
                    asked_to_close = true;
                }
            }
        }
    }
}
