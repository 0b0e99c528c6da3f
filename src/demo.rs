//! `switchyard demo`: the seed articles' point made visible. It starts built-in upstreams for
//! the config's loopback endpoints (each answers with its `version` label), serves the config,
//! sends a batch of plain requests and a batch with `X-User-Group: beta`, and prints the
//! configured against the observed share per subset.
//!
//! The upstreams listen where the config's endpoints say (127.0.0.1:18081/18082 in the shipped
//! `config/`). With `--free-upstream-ports` each listens on a port the OS picks instead, and
//! the demo serves a copy of the config whose loopback endpoints name those ports.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
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
    let started = start_upstreams(&args).await?;
    for u in &started.upstreams {
        match u.configured {
            Some(was) => println!(
                "upstream {:<4} listening on {} (the config says {was})",
                u.label, u.addr
            ),
            None => println!("upstream {:<4} listening on {}", u.label, u.addr),
        }
    }
    let config = match &started.moved {
        Some(copy) => {
            println!(
                "serving a copy of {} with those endpoints moved: {} (edits to {} are not followed)",
                args.config.display(),
                copy.path.display(),
                args.config.display()
            );
            copy.path.clone()
        }
        None => args.config.clone(),
    };
    let result = serve(&args, config).await;
    drop(started);
    result
}

async fn serve(args: &DemoArgs, config: PathBuf) -> Result<ExitCode> {
    let (tx, rx) = tokio::sync::oneshot::channel();
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

/// A built-in upstream: where it listens, what it answers, and where the config put it if
/// it was moved.
struct DemoUpstream {
    addr: SocketAddr,
    label: String,
    configured: Option<SocketAddr>,
}

/// The upstreams, and the config copy that names their ports if they were moved.
struct Started {
    upstreams: Vec<DemoUpstream>,
    moved: Option<ConfigCopy>,
}

/// A temporary directory, removed when dropped.
struct ConfigCopy {
    path: PathBuf,
}

impl Drop for ConfigCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The loopback endpoints of the config at `path`, each with its `version` label (or its
/// WorkloadEntry name).
fn loopback_endpoints(path: &Path, args: &DemoArgs) -> Result<BTreeMap<SocketAddr, String>> {
    let identity = args.serve_identity()?;
    let res = load(
        path,
        &LoadOptions {
            default_namespace: identity.namespace.clone(),
        },
    );
    if let Some(err) = res.diagnostics.iter().find(|d| d.is_error()) {
        bail!("{}: {err}", path.display());
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
    Ok(wanted)
}

/// One built-in upstream per loopback STATIC endpoint in the config, answering its `version`
/// label (or its WorkloadEntry name).
async fn start_upstreams(args: &DemoArgs) -> Result<Started> {
    let wanted = loopback_endpoints(&args.config, args)?;
    if wanted.is_empty() {
        bail!(
            "{}: no loopback endpoints to start demo upstreams for",
            args.config.display()
        );
    }
    let mut upstreams = Vec::new();
    for (addr, label) in &wanted {
        let bind = if args.free_upstream_ports {
            SocketAddr::new(addr.ip(), 0)
        } else {
            *addr
        };
        let listener = match TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "demo upstream {label}: {addr} is already in use by another program.\n\
                 The demo starts its upstreams where the endpoints in {config} say. Either rerun \
                 with --free-upstream-ports (the upstreams take free ports and the demo serves \
                 a copy of {config} with those endpoints moved), or stop what listens on {addr}.",
                config = args.config.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("demo upstream {label}: cannot listen on {bind}"));
            }
        };
        let local = listener.local_addr()?;
        spawn_upstream(listener, Bytes::from(label.clone()));
        upstreams.push(DemoUpstream {
            addr: local,
            label: label.clone(),
            configured: args.free_upstream_ports.then_some(*addr),
        });
    }
    let moved = if args.free_upstream_ports {
        let ports: BTreeMap<SocketAddr, u16> = upstreams
            .iter()
            .filter_map(|u| Some((u.configured?, u.addr.port())))
            .collect();
        let copy = copy_with_ports(&args.config, &ports, args)?;
        // The copy must name exactly the ports the upstreams took.
        let now: Vec<SocketAddr> = loopback_endpoints(&copy.path, args)?.into_keys().collect();
        let bound: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
        let mut bound_sorted = bound.clone();
        bound_sorted.sort();
        if now != bound_sorted {
            bail!(
                "{}: could not move every loopback endpoint (only ServiceEntry endpoints and \
                 WorkloadEntry `ports` are rewritten): the copy names {now:?}, the upstreams \
                 listen on {bound:?}",
                args.config.display()
            );
        }
        Some(copy)
    } else {
        None
    };
    Ok(Started { upstreams, moved })
}

fn spawn_upstream(listener: TcpListener, body: Bytes) {
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
}

/// Writes every file the config at `config` consists of, in load order, into a new
/// temporary directory, with each loopback endpoint's port replaced as `ports` says
/// (configured address → new port).
fn copy_with_ports(
    config: &Path,
    ports: &BTreeMap<SocketAddr, u16>,
    args: &DemoArgs,
) -> Result<ConfigCopy> {
    let identity = args.serve_identity()?;
    let res = load(
        config,
        &LoadOptions {
            default_namespace: identity.namespace.clone(),
        },
    );
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = ConfigCopy { path: dir };
    for (i, file) in res.files.iter().enumerate() {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut out = String::new();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let mut value = <yaml_serde::Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("{}: YAML", file.display()))?;
            if value.is_null() {
                continue;
            }
            move_ports(&mut value, ports);
            out.push_str("---\n");
            out.push_str(&yaml_serde::to_string(&value)?);
        }
        let name = file
            .file_name()
            .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
        // The index keeps the load order (it decides between conflicting resources).
        let target = copy.path.join(format!("{i:03}-{name}"));
        std::fs::write(&target, out).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(copy)
}

/// Rewrites one resource's loopback endpoint ports: ServiceEntry `spec.endpoints[].ports`
/// (filled in from `spec.ports` where an endpoint names none) and WorkloadEntry `spec.ports`.
fn move_ports(doc: &mut yaml_serde::Value, ports: &BTreeMap<SocketAddr, u16>) {
    use yaml_serde::Value;
    let loopback = |v: &Value| {
        v.as_str()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .filter(IpAddr::is_loopback)
    };
    let as_port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    match doc["kind"].as_str() {
        Some("ServiceEntry") => {
            // (name, the port an endpoint without a `ports` entry uses)
            let svc_ports: Vec<(String, u16)> = doc["spec"]["ports"]
                .as_sequence()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            let name = p["name"].as_str()?.to_string();
                            let default = p
                                .get("targetPort")
                                .and_then(as_port)
                                .or_else(|| as_port(&p["number"]))?;
                            Some((name, default))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let Some(eps) = doc["spec"]
                .get_mut("endpoints")
                .and_then(Value::as_sequence_mut)
            else {
                return;
            };
            for ep in eps {
                let Some(ip) = ep.get("address").and_then(loopback) else {
                    continue;
                };
                for (name, default) in &svc_ports {
                    let old = ep["ports"].get(name.as_str()).and_then(as_port);
                    let Some(new) = ports.get(&SocketAddr::new(ip, old.unwrap_or(*default))) else {
                        continue;
                    };
                    if ep.get("ports").is_none_or(Value::is_null)
                        && let Some(m) = ep.as_mapping_mut()
                    {
                        m.insert("ports".into(), Value::Mapping(Default::default()));
                    }
                    if let Some(m) = ep.get_mut("ports").and_then(Value::as_mapping_mut) {
                        m.insert(name.as_str().into(), Value::from(*new));
                    }
                }
            }
        }
        Some("WorkloadEntry") => {
            let Some(ip) = loopback(&doc["spec"]["address"]) else {
                return;
            };
            if let Some(m) = doc["spec"].get_mut("ports").and_then(Value::as_mapping_mut) {
                for (_, port) in m.iter_mut() {
                    if let Some(new) =
                        as_port(port).and_then(|p| ports.get(&SocketAddr::new(ip, p)))
                    {
                        *port = Value::from(*new);
                    }
                }
            }
        }
        _ => {}
    }
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
