//! A keep-alive HTTP/1.1 GET over loopback, straight to the upstream and through the real
//! proxy (same listener, table, pool and metrics as `run`), all on one current-thread runtime
//! the way a one-core sidecar runs. The difference between the two is what the proxy adds to
//! one request: routing, the upstream exchange on a pooled connection, header rewriting and
//! metrics, plus the kernel's extra loopback hop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use switchyard::config::ProxyIdentity;
use switchyard::downstream::server::{Limits, ProxyListener};
use switchyard::proxy::Proxy;
use switchyard::upstream::PoolRegistry;
use switchyard::{ReloadContext, Reloader};

const HOST: &str = "reviews";

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"v1\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The bench harness's config: a header rule to v2, then a 95/5 split.
fn config(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {HOST}}}
spec:
  hosts: [{HOST}.default.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {p1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {p2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}}}
spec:
  host: {HOST}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {HOST}}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-user-group: {{exact: beta}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {HOST}, subset: v1}}, weight: 95}}
    - {{destination: {{host: {HOST}, subset: v2}}, weight: 5}}
",
        p1 = v1.port(),
        p2 = v2.port()
    )
}

/// Serves `config` from a temporary directory; the directory must outlive the proxy.
async fn proxy(config: &str) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), config).expect("write config");
    let pools = Arc::new(PoolRegistry::default());
    let ctx = ReloadContext::new(
        dir.path().to_path_buf(),
        ProxyIdentity::default(),
        pools.clone(),
    );
    let metrics = ctx.metrics.clone();
    let (reloader, _warnings) = Reloader::start(ctx)
        .await
        .unwrap_or_else(|diags| panic!("bench config refused: {diags:?}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let proxy = Arc::new(Proxy::new(reloader.table.clone(), pools, metrics));
    // Leaked so the listener and its reload watcher live for the whole bench process.
    std::mem::forget(reloader);
    let listener = ProxyListener::spawn(listener, proxy, Limits::default()).expect("listener");
    std::mem::forget(listener);
    (addr, dir)
}

async fn client(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

async fn get(send: &mut SendRequest<Empty<Bytes>>) -> usize {
    send.ready().await.expect("connection ready");
    let req = Request::get("/")
        .header(http::header::HOST, HOST)
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    body.len()
}

fn bench(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut direct, mut proxied, _dir) = rt.block_on(async {
        let v1 = upstream().await;
        let v2 = upstream().await;
        let (addr, dir) = proxy(&config(v1, v2)).await;
        (client(v1).await, client(addr).await, dir)
    });
    // One warm request each: the proxy's first one dials the upstream.
    assert_eq!(rt.block_on(get(&mut direct)), 3);
    assert_eq!(rt.block_on(get(&mut proxied)), 3);

    let mut group = c.benchmark_group("loopback round trip, HTTP/1.1 keep-alive GET");
    group.bench_function("direct to the upstream", |b| {
        b.iter(|| rt.block_on(get(&mut direct)))
    });
    group.bench_function("through switchyard (header rule + 95/5 split)", |b| {
        b.iter(|| rt.block_on(get(&mut proxied)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
