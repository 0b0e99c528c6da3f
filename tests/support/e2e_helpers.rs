//! Helpers shared by the end-to-end suites (`routing_e2e`, `failures_e2e`, `protocol_e2e`):
//! YAML templating, concurrent tallies for split statistics, a flag tap that exposes the
//! proxy's response flag, and small raw-socket utilities.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::proxy::ConnInfo;
use switchyard::proxy::error::Flag;
use tokio::net::TcpListener;

use super::client::{Client, Proto, Reply};
use super::proxy::TestProxy;

/// Both downstream protocols, for loops over "HTTP/1.1 and HTTP/2".
pub const PROTOS: [Proto; 2] = [Proto::H1, Proto::H2];

/// Replaces each `$KEY` in `template` (longest keys first, so `$V10` is not eaten by `$V1`).
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut vars: Vec<&(&str, String)> = vars.iter().collect();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(k, v);
    }
    out
}

/// A ServiceEntry (STATIC, one port named `http`) in `ns` for `host` whose endpoints are
/// `(labels "k=v,k2=v2", addr)` pairs.
pub fn service_entry(
    name: &str,
    ns: &str,
    host: &str,
    protocol: &str,
    endpoints: &[(&str, SocketAddr)],
) -> String {
    let mut eps = String::new();
    for (labels, addr) in endpoints {
        eps.push_str(&format!(
            "  - address: {}\n    ports:\n      http: {}\n",
            addr.ip(),
            addr.port()
        ));
        let labels: Vec<(&str, &str)> = labels
            .split(',')
            .filter(|s| !s.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if !labels.is_empty() {
            eps.push_str("    labels:\n");
            for (k, v) in labels {
                eps.push_str(&format!("      {k}: {v}\n"));
            }
        }
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts:\n  - {host}\n  ports:\n  - number: 80\n    name: http\n    protocol: {protocol}\n  resolution: STATIC\n  endpoints:\n{eps}---\n"
    )
}

/// A DestinationRule in `ns` for `host` with one subset per `version` label value.
pub fn destination_rule(name: &str, ns: &str, host: &str, versions: &[&str]) -> String {
    let mut subsets = String::new();
    for v in versions {
        subsets.push_str(&format!("  - name: {v}\n    labels:\n      version: {v}\n"));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {host}\n  subsets:\n{subsets}---\n"
    )
}

/// Sends `total` requests over `clients` concurrent connections of `proto` and counts the
/// response bodies (non-200 answers are counted as `"<status> <body>"`).
pub async fn par_tally(
    addr: SocketAddr,
    proto: Proto,
    clients: usize,
    total: usize,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let n = total / clients + usize::from(i < total % clients);
        let authority = authority.to_string();
        let path = path.to_string();
        let headers = headers.clone();
        tasks.spawn(async move {
            let mut c = Client::connect(addr, proto).await;
            let hs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..n {
                let r = c.request("GET", &authority, &path, &hs).await;
                let key = if r.status == 200 {
                    r.text()
                } else {
                    format!("{} {}", r.status, r.text())
                };
                *counts.entry(key).or_insert(0) += 1;
            }
            counts
        });
    }
    let mut all = BTreeMap::new();
    while let Some(res) = tasks.join_next().await {
        for (k, v) in res.expect("tally task panicked") {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

/// `par_tally` over HTTP/1.1 and HTTP/2 at once: `total` requests, half per protocol, each
/// half over `clients` connections. Returns the (H1, H2) tallies.
pub async fn par_tally_both(
    addr: SocketAddr,
    clients: usize,
    total: usize,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let h1 = par_tally(
        addr,
        Proto::H1,
        clients,
        total / 2,
        authority,
        path,
        headers,
    );
    let h2 = par_tally(
        addr,
        Proto::H2,
        clients,
        total - total / 2,
        authority,
        path,
        headers,
    );
    tokio::join!(h1, h2)
}

/// Sum of two tallies.
pub fn merged(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_insert(0) += v;
    }
    out
}

/// Asserts `hits` of `n` Bernoulli(`p`) draws lies within 4 standard deviations of `n·p`.
pub fn assert_within_4_sigma(hits: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let dev = (hits as f64 - mean).abs();
    assert!(
        dev <= 4.0 * sd,
        "{what}: {hits} of {n} (expected {mean:.0} ± {:.1} at 4σ; off by {:.1}σ)",
        4.0 * sd,
        dev / sd
    );
}

/// Writes extra config files next to `config.yaml` (or removes them with `None`) without
/// reloading; call `p.reloader.reload()` afterwards.
pub fn write_config_files(p: &TestProxy, files: &[(&str, Option<&str>)]) {
    for (name, yaml) in files {
        let path = p.dir.path().join(name);
        match yaml {
            Some(y) => std::fs::write(&path, y).expect("write config file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// A second listener in front of the same `Proxy::handle` the real listener calls, which
/// copies the response flag the proxy attached (Envoy's `%RESPONSE_FLAGS%`) into a
/// `x-test-response-flag` header so tests can assert it. The request path is unchanged.
pub async fn flag_tap(p: &TestProxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind flag tap");
    let addr = listener.local_addr().expect("flag tap addr");
    let proxy = p.proxy.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                continue;
            };
            let local = stream.local_addr().unwrap_or(addr);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move {
                        let req = req.map(switchyard::downstream::Incoming::Hyper);
                        let mut resp = proxy.handle(req, ConnInfo { remote, local }).await;
                        let flag = resp.extensions().get::<Flag>().map(|f| f.as_str());
                        if let Some(f) = flag.and_then(|f| http::HeaderValue::from_str(f).ok()) {
                            resp.headers_mut().insert("x-test-response-flag", f);
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// GET on the admin listener.
pub async fn admin_get(p: &TestProxy, path: &str) -> Reply {
    let admin = p.admin.expect("proxy started with admin");
    Client::h1(admin).await.get("admin", path).await
}

/// The request headers an upstream `/echo` saw, one value per name (the first).
pub fn echoed(reply: &Reply, name: &str) -> Option<String> {
    reply.json()["headers"][name][0]
        .as_str()
        .map(str::to_string)
}

/// Every value of one request header an upstream `/echo` saw.
pub fn echoed_all(reply: &Reply, name: &str) -> Vec<String> {
    reply.json()["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The status code of a raw HTTP/1 answer (`HTTP/1.1 431 ...`), if any.
pub fn raw_status(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Polls `cond` every 10 ms for at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drains a streamed body to count its bytes without keeping it.
pub async fn count_body<B>(body: B) -> Result<(u64, Option<http::HeaderMap>), String>
where
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut n = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        match frame.into_data() {
            Ok(d) => n += bytes::Buf::remaining(&d) as u64,
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    Ok((n, trailers))
}

/// A loopback HTTP/1.1 "server" that answers every connection with fixed bytes: it reads the
/// request head (bounded), writes `reply`, optionally stalls, then closes the socket. For
/// upstream misbehaviour the real upstream cannot produce (hop-by-hop response headers, a
/// close before or in the middle of the response).
pub struct RawUpstream {
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start(reply: Vec<u8>) -> RawUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("raw upstream addr");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = connections.clone();
        let reply = std::sync::Arc::new(reply);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let read_head = async {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return false,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        true
                    };
                    match tokio::time::timeout(Duration::from_secs(5), read_head).await {
                        Ok(true) => {}
                        _ => return,
                    }
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.flush().await;
                    // Dropping the stream closes it (FIN), mid-response if `reply` is short.
                });
            }
        });
        RawUpstream {
            addr,
            connections,
            task,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
