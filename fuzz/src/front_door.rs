//! Raw bytes into the proxy's front door: `serve_connection` (HTTP/1.1 and h2c prior knowledge
//! on one socket) over an in-memory pipe, with a table whose only upstream refuses
//! connections (127.0.0.1:1), so every forwarded request ends in a local reply.
//!
//! Oracle: no panic, and the connection ends within a bounded (virtual) time once the client
//! has sent everything and closed its side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard::downstream::server::{Limits, Phase, serve_connection};
use switchyard::proxy::{ConnInfo, Proxy};
use switchyard::upstream::PoolRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Routes that reach every kind of answer: forward (refused upstream, with retries), header
/// match, redirect, direct response, fault abort, rewrite, and a host with no route.
pub const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 1}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 1}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: web, subset: v2}}]
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: connect-failure}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 301}
  - match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: teapot}}
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {regex: "/re/[a-z]+"}}]
    rewrite: {uri: /rewritten}
    route: [{destination: {host: web, subset: v1}}]
    timeout: 200ms
  - route:
    - {destination: {host: web, subset: v1}, weight: 50}
    - {destination: {host: web, subset: v2}, weight: 50}
"#;

/// How long the proxy must stay silent before the client closes its side (virtual time).
pub const QUIET: Duration = Duration::from_secs(1);
/// After the client closed: far beyond any timer in CONFIG (10 s header timeout at most), so
/// only a real hang trips it (virtual time).
pub const DEADLINE: Duration = Duration::from_secs(120);

pub struct FrontDoor {
    proxy: Arc<Proxy>,
    limits: Limits,
}

impl FrontDoor {
    pub fn new() -> FrontDoor {
        let pools = Arc::new(PoolRegistry::default());
        let metrics = Arc::new(switchyard::metrics::Registry::default());
        let table = crate::table::served(CONFIG, &pools, &metrics).unwrap_or_else(|errors| {
            panic!("front-door config refused: {errors:?}");
        });
        let proxy = Proxy::new(Arc::new(ArcSwap::from_pointee(table)), pools, metrics);
        FrontDoor {
            proxy: Arc::new(proxy),
            limits: Limits {
                header_read_timeout: Duration::from_secs(2),
                ..Limits::default()
            },
        }
    }

    /// Feeds one input; returns the bytes the proxy wrote back. The first byte picks the
    /// drain phase the connection sees (serving, draining at accept, or closing mid-way).
    ///
    /// Runs on a paused tokio clock: the client keeps its side open until the proxy has been
    /// idle for QUIET (so answers are not lost to an early EOF: hyper drops a request whose
    /// client half-closed), then closes it; the connection must then end within DEADLINE.
    /// Both are virtual time, so waiting costs nothing.
    pub async fn run(&self, data: &[u8]) -> Vec<u8> {
        let (mode, bytes) = match data.split_first() {
            Some((m, rest)) => (*m, rest.to_vec()),
            None => (0, Vec::new()),
        };
        let (phase_tx, phase_rx) = watch::channel(if mode % 4 == 1 {
            Phase::Draining
        } else {
            Phase::Serving
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let info = ConnInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 15001)),
        };
        let conn = tokio::spawn(serve_connection(
            server,
            info,
            self.proxy.clone(),
            self.limits.clone(),
            phase_rx,
        ));
        let (mut rd, mut wr) = tokio::io::split(client);
        let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(async move {
            tokio::select! {
                // The proxy may stop reading or close first; a failed write is part of the game.
                _ = wr.write_all(&bytes) => {
                    let _ = (&mut close_rx).await;
                }
                _ = &mut close_rx => {}
            }
            let _ = wr.shutdown().await;
        });
        if mode % 4 == 2 {
            // Closing while requests may be in flight: graceful shutdown mid-connection.
            tokio::task::yield_now().await;
            let _ = phase_tx.send(Phase::Closing);
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut close_tx = Some(close_tx);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let wait = if close_tx.is_some() {
                tokio::time::Instant::now() + QUIET
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait, rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => match close_tx.take() {
                    Some(tx) => {
                        let _ = tx.send(());
                    }
                    None => panic!("connection still open {DEADLINE:?} after the client closed"),
                },
            }
        }
        drop(close_tx);
        let ended = tokio::time::timeout_at(deadline + QUIET, conn).await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("serve_connection panicked: {e}"),
            Err(_) => panic!("serve_connection still running after its peer closed"),
        }
        let _ = writer.await;
        drop(phase_tx);
        out
    }
}

impl Default for FrontDoor {
    fn default() -> Self {
        FrontDoor::new()
    }
}
