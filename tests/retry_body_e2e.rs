//! Bodies of unknown size (gRPC over HTTP/2, chunked HTTP/1.1 uploads) are retried and
//! mirrored as Envoy does: streamed to the first attempt while up to 1 MiB is kept, replayed
//! on a retry; past 1 MiB, no retry and no mirror (`retry_or_shadow_abandoned`).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::e2e_helpers::{admin_get, eventually};
use support::*;
use tokio::net::TcpListener;

/// How a scripted upstream answers attempt N (0-based); later attempts reuse the last entry.
#[derive(Clone, Copy)]
enum Answer {
    /// HTTP 200, trailers-only gRPC answer with this `grpc-status`.
    Grpc(u8),
    /// Plain HTTP status with a short body.
    Status(u16),
}

/// A real HTTP/1.1 + h2c server that reads each request body whole and records its length,
/// then answers as scripted.
struct Scripted {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let script = script.clone();
                        async move {
                            let body = req.into_body().collect().await;
                            let body = body.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let n = {
                                let mut seen = seen.lock().expect("lock");
                                seen.push(body);
                                seen.len() - 1
                            };
                            let answer = script[n.min(script.len() - 1)];
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            match answer {
                                Answer::Grpc(code) => {
                                    let h = resp.headers_mut();
                                    h.insert(
                                        "content-type",
                                        HeaderValue::from_static("application/grpc"),
                                    );
                                    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
                                }
                                Answer::Status(s) => {
                                    *resp.status_mut() =
                                        http::StatusCode::from_u16(s).expect("status");
                                    *resp.body_mut() = Full::new(Bytes::from_static(b"scripted"));
                                }
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Scripted { addr, bodies }
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// `svc` on a GRPC (HTTP/2) or HTTP port, with `extra` YAML on its one route.
fn config(primary: SocketAddr, shadow: Option<SocketAddr>, protocol: &str, extra: &str) -> String {
    let mut eps = format!(
        "  - {{address: {}, ports: {{p: {}}}, labels: {{version: v1}}}}\n",
        primary.ip(),
        primary.port()
    );
    if let Some(s) = shadow {
        eps.push_str(&format!(
            "  - {{address: {}, ports: {{p: {}}}, labels: {{version: v2}}}}\n",
            s.ip(),
            s.port()
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc.default.svc.cluster.local]
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc}}
spec:
  host: svc
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc}}
spec:
  hosts: [svc]
  http:
  - name: main
{extra}    route: [{{destination: {{host: svc, subset: v1}}}}]
"
    )
}

/// A length-prefixed gRPC message, as a gRPC client frames it.
fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

const GRPC_HEADERS: [(&str, &str); 2] = [("content-type", "application/grpc"), ("te", "trailers")];

/// Streams `chunks` as a body with no declared length, then ends it.
fn unsized_body(chunks: Vec<Vec<u8>>) -> TestBody {
    let (tx, body) = body_channel(4);
    tokio::spawn(async move {
        for c in chunks {
            if !tx.send_data(c).await {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    body
}

/// One unary gRPC call with an unsized body; its `grpc-status`.
async fn grpc_call(c: &mut Client, chunks: Vec<Vec<u8>>) -> Option<String> {
    let r = c
        .request_with_body(
            "POST",
            "svc",
            "/pkg.Svc/Call",
            &GRPC_HEADERS,
            unsized_body(chunks),
        )
        .await;
    r.header("grpc-status")
        .or_else(|| r.trailer("grpc-status"))
        .map(str::to_string)
}

async fn abandoned(p: &TestProxy) -> u64 {
    stat(
        p,
        "envoy_cluster_retry_or_shadow_abandoned{cluster_name=\"outbound|80|v1|svc.default.svc.cluster.local\"} ",
    )
    .await
}

async fn stat(p: &TestProxy, line_prefix: &str) -> u64 {
    admin_get(p, "/stats/prometheus")
        .await
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_without_content_length_is_retried_on_unavailable_by_istios_default_policy() {
    // UNAVAILABLE twice (trailers-only), then OK: Istio's default policy retries twice.
    let up = Scripted::start(vec![Answer::Grpc(14), Answer::Grpc(14), Answer::Grpc(0)]).await;
    let p = TestProxy::start(&config(up.addr, None, "GRPC", "")).await;
    let mut c = Client::h2(p.addr).await;
    let message = grpc_message(&[7u8; 3000]);
    let chunks = vec![message[..1000].to_vec(), message[1000..].to_vec()];
    assert_eq!(grpc_call(&mut c, chunks).await.as_deref(), Some("0"));
    let bodies = up.bodies();
    assert_eq!(bodies.len(), 3, "1 attempt + 2 retries reached the server");
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b, &message, "attempt {i} carried the whole message");
    }
    let retries = stat(
        &p,
        "envoy_cluster_upstream_rq_retry{cluster_name=\"outbound|80|v1|svc.default.svc.cluster.local\"} ",
    )
    .await;
    assert_eq!(retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_grpc_retries_are_flagged_urx() {
    let up = Scripted::start(vec![Answer::Grpc(14)]).await;
    let extra = "    retries: {attempts: 2, retryOn: unavailable}\n";
    let p = TestProxy::start(&config(up.addr, None, "GRPC", extra)).await;
    let mut c = Client::h2(p.addr).await;
    let chunks = vec![grpc_message(b"hello")];
    assert_eq!(grpc_call(&mut c, chunks).await.as_deref(), Some("14"));
    assert_eq!(up.bodies().len(), 3);
    let flagged = "istio_requests_total{";
    let found = eventually(Duration::from_secs(3), || {
        p.metrics
            .encode()
            .lines()
            .any(|l| l.starts_with(flagged) && l.contains("response_flags=\"URX\""))
    })
    .await;
    assert!(found, "{}", p.metrics.encode());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_http1_upload_is_replayed_on_retry() {
    let up = Scripted::start(vec![Answer::Status(503), Answer::Status(200)]).await;
    let extra = "    retries: {attempts: 2, retryOn: 5xx}\n";
    let p = TestProxy::start(&config(up.addr, None, "HTTP", extra)).await;
    let mut c = Client::h1(p.addr).await;
    let chunks: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 10_000]).collect();
    let whole: Vec<u8> = chunks.concat();
    let r = c
        .request_with_body("POST", "svc", "/upload", &[], unsized_body(chunks))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.bodies(), vec![whole.clone(), whole]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_one_mib_is_not_retried_and_counted_abandoned() {
    for proto in [Proto::H1, Proto::H2] {
        let up = Scripted::start(vec![Answer::Status(503), Answer::Status(200)]).await;
        let extra = "    retries: {attempts: 2, retryOn: 5xx}\n";
        let p = TestProxy::start(&config(up.addr, None, "HTTP", extra)).await;
        let mut c = Client::connect(p.addr, proto).await;
        // 2 MiB in 64 KiB chunks, no declared length.
        let chunks: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 64 * 1024]).collect();
        let r = c
            .request_with_body("POST", "svc", "/upload", &[], unsized_body(chunks))
            .await;
        assert_eq!(
            r.status, 503,
            "{proto:?}: the failed attempt's answer, not retried"
        );
        let bodies = up.bodies();
        assert_eq!(bodies.len(), 1, "{proto:?}: one attempt only");
        assert_eq!(
            bodies[0].len(),
            2 * 1024 * 1024,
            "{proto:?}: the whole body streamed"
        );
        let abandoned = abandoned(&p).await;
        assert_eq!(abandoned, 1, "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_without_content_length_are_mirrored_whole() {
    let primary = Scripted::start(vec![Answer::Grpc(0)]).await;
    let shadow = Scripted::start(vec![Answer::Grpc(0)]).await;
    let extra = "    mirror: {host: svc, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let p = TestProxy::start(&config(primary.addr, Some(shadow.addr), "GRPC", extra)).await;
    let mut c = Client::h2(p.addr).await;
    let message = grpc_message(&[9u8; 50_000]);
    for _ in 0..5 {
        let chunks = message.chunks(16_000).map(<[u8]>::to_vec).collect();
        assert_eq!(grpc_call(&mut c, chunks).await.as_deref(), Some("0"));
    }
    assert!(
        eventually(Duration::from_secs(5), || shadow.bodies().len() == 5).await,
        "every call mirrored: {}",
        shadow.bodies().len()
    );
    for b in shadow.bodies().iter().chain(primary.bodies().iter()) {
        assert_eq!(b, &message);
    }
    // Over the limit: the primary is served whole, the copy is cut short and counted.
    let big: Vec<Vec<u8>> = (0..24u8).map(|i| vec![i; 64 * 1024]).collect();
    assert_eq!(grpc_call(&mut c, big).await.as_deref(), Some("0"));
    assert_eq!(primary.bodies().last().map(Vec::len), Some(24 * 64 * 1024));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        shadow.bodies().iter().all(|b| b.len() != 24 * 64 * 1024),
        "a body over the limit never reaches the mirror whole"
    );
    let abandoned = abandoned(&p).await;
    assert_eq!(abandoned, 1);
}
