//! `switchyard demo`: the seed articles' point made visible. It starts built-in upstreams for
//! the config's loopback endpoints (each answers with its `version` label), serves the config,
//! sends a batch of plain requests and a batch with `X-User-Group: beta`, and prints the
//! configured against the observed share per subset.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use switchyard::config::registry::Registry;
use switchyard::config::{LoadOptions, load};
use switchyard::route::{Action, Decision, RequestView, RouteTable};

use crate::{DemoArgs, Ready};

const DEMO_HOST: &str = "frontend";
const BETA_HEADER: (&str, &str) = ("x-user-group", "beta");
/// Concurrent client connections the demo load uses.
const CLIENTS: usize = 8;

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let upstreams = start_upstreams(&args).await?;
    for (addr, label) in &upstreams {
        println!("upstream {label:<4} listening on {addr}");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = args.config.clone();
    let serve = args.serve.clone();
    let server = tokio::spawn(async move { crate::run(config, serve, Some(tx)).await });
    let ready: Ready = match rx.await {
        Ok(r) => r,
        Err(_) => {
            return match server.await {
                Ok(Ok(code)) => Ok(code),
                Ok(Err(e)) => Err(e),
                Err(e) => bail!("proxy task failed: {e}"),
            };
        }
    };
    let target = match ready.proxy.ip() {
        ip if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), ready.proxy.port())
        }
        _ => ready.proxy,
    };
    println!("proxy listening on {}\n", ready.proxy);

    let table = ready.reloader.table.load_full();
    report_batch(&table, target, args.requests, None).await?;
    report_batch(&table, target, args.beta_requests, Some(BETA_HEADER)).await?;

    if args.exit {
        ready.quit.notify_one();
    } else {
        // Istio's default profile logs nothing; the demo shows each request from here on.
        if args.serve_access_log_is_default() {
            match switchyard::access_log::AccessLog::start(
                switchyard::access_log::Sink::Stdout,
                switchyard::access_log::Format::Envoy,
                ready.server.metrics.clone(),
            ) {
                Ok(log) => {
                    ready
                        .server
                        .access_log
                        .store(Some(std::sync::Arc::new(log)));
                    println!("Access log on (stdout, Istio's format).");
                }
                Err(e) => eprintln!("access log unavailable: {e}"),
            }
        }
        println!(
            "\nStill serving. Try:\n  curl -H 'Host: {DEMO_HOST}' http://localhost:{port}/\n  curl -H 'Host: {DEMO_HOST}' -H 'X-User-Group: beta' http://localhost:{port}/\nCtrl-C stops it.",
            port = ready.proxy.port()
        );
    }
    match server.await {
        Ok(r) => r,
        Err(e) => bail!("proxy task failed: {e}"),
    }
}

/// One built-in upstream per loopback STATIC endpoint in the config, answering its `version`
/// label (or its WorkloadEntry name).
async fn start_upstreams(args: &DemoArgs) -> Result<Vec<(SocketAddr, String)>> {
    let identity = args.serve_identity()?;
    let res = load(
        &args.config,
        &LoadOptions {
            default_namespace: identity.namespace.clone(),
        },
    );
    if let Some(err) = res.diagnostics.iter().find(|d| d.is_error()) {
        bail!("{}: {err}", args.config.display());
    }
    let registry = Registry::build(&res, &identity);
    let mut wanted: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for svc in &registry.services {
        for port in &svc.ports {
            for ep in &svc.endpoints {
                let Ok(ip) = ep.address.parse::<IpAddr>() else {
                    continue;
                };
                if !ip.is_loopback() {
                    continue;
                }
                let label = ep
                    .labels
                    .get("version")
                    .cloned()
                    .or_else(|| ep.workload_name.clone())
                    .unwrap_or_else(|| ep.address.clone());
                wanted.insert(SocketAddr::new(ip, ep.port_for(port)), label);
            }
        }
    }
    if wanted.is_empty() {
        bail!(
            "{}: no loopback endpoints to start demo upstreams for",
            args.config.display()
        );
    }
    let mut started = Vec::new();
    for (addr, label) in wanted {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("demo upstream {label}: cannot listen on {addr}"))?;
        let body = Bytes::from(label.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        started.push((addr, label));
    }
    Ok(started)
}

/// The configured share per subset for a request, read from the table the proxy serves.
fn configured(table: &RouteTable, header: Option<(&str, &str)>) -> BTreeMap<String, f64> {
    let mut headers = http::HeaderMap::new();
    if let Some((k, v)) = header
        && let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        )
    {
        headers.insert(k, v);
    }
    let view = RequestView {
        method: "GET",
        scheme: "http",
        authority: DEMO_HOST,
        port: 80,
        path: "/",
        query: None,
        headers: &headers,
    };
    let mut out = BTreeMap::new();
    if let Decision::Forward { route, .. } = table.route(DEMO_HOST, &view, 0)
        && let Action::Forward(pick) = &route.action
    {
        for (i, (_, t)) in pick.iter().enumerate() {
            let subset = table.clusters[t.cluster].subset.clone();
            *out.entry(subset).or_insert(0.0) += pick.share(i);
        }
    }
    out
}

async fn report_batch(
    table: &RouteTable,
    target: SocketAddr,
    n: usize,
    header: Option<(&'static str, &'static str)>,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let count = n / CLIENTS + usize::from(i < n % CLIENTS);
        tasks.push(tokio::spawn(client(target, count, header)));
    }
    let mut observed: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.context("demo client failed")?? {
            *observed.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    let configured = configured(table, header);
    match header {
        None => {
            println!("{n} requests, Host: {DEMO_HOST} (one independent weighted draw per request)")
        }
        Some((k, v)) => {
            println!("{n} requests, Host: {DEMO_HOST}, {k}: {v} (header match: no draw)")
        }
    }
    println!(
        "  {:<10} {:>10} {:>10} {:>8}",
        "subset", "configured", "observed", "count"
    );
    let mut names: Vec<&String> = configured.keys().chain(observed.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let c = configured.get(name).copied().unwrap_or(0.0);
        let count = observed.get(name).copied().unwrap_or(0);
        let o = count as f64 / n as f64;
        let sigma = (c * (1.0 - c) / n as f64).sqrt();
        let z = if sigma > 0.0 {
            (o - c).abs() / sigma
        } else {
            0.0
        };
        println!(
            "  {name:<10} {:>9.1}% {:>9.2}% {count:>8}   ({z:.1} standard deviations from configured)",
            c * 100.0,
            o * 100.0
        );
    }
    println!(
        "  ({:.0} requests/s through the proxy from {CLIENTS} connections)\n",
        n as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

async fn client(
    target: SocketAddr,
    n: usize,
    header: Option<(&'static str, &'static str)>,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    let mut sender = None;
    for _ in 0..n {
        if sender.is_none() {
            let stream = TcpStream::connect(target)
                .await
                .with_context(|| format!("cannot connect to the proxy at {target}"))?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut req = Request::get("/").header("host", DEMO_HOST);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            s.send_request(req.body(Empty::<Bytes>::new())?),
        )
        .await
        .context("request through the proxy timed out")??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let key = if status.is_success() {
            String::from_utf8_lossy(&body).trim().to_string()
        } else {
            format!("HTTP {}", status.as_u16())
        };
        *counts.entry(key).or_default() += 1;
        if s.is_closed() {
            sender = None;
        }
    }
    Ok(counts)
}
