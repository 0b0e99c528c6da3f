//! `switchyard demo --rollout`: an automated canary rollout, twice, with real traffic. First a
//! healthy v2 goes 5 → 25 → 50 → 100 under background analysis; then a v2 that answers 500 to
//! 30% of requests is aborted by the analysis and all traffic returns to v1. A timeline prints
//! each step with the canary share observed and the analysis' measured values.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::{DemoArgs, Ready};

const ROUTING: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: frontend-vs
spec:
  hosts:
  - frontend
  http:
  - name: canary-split
    route:
    - destination:
        host: frontend
        subset: v1
      weight: 100
    - destination:
        host: frontend
        subset: v2
      weight: 0
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: frontend-dr
spec:
  host: frontend
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
";

const ROLLOUT: &str = "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: frontend
spec:
  strategy:
    canary:
      trafficRouting:
        istio:
          virtualService: {name: frontend-vs, routes: [canary-split]}
          destinationRule: {name: frontend-dr, canarySubsetName: v2, stableSubsetName: v1}
      analysis:
        templates: [{templateName: canary-health}]
      steps:
      - setWeight: 5
      - pause: {duration: 2s}
      - setWeight: 25
      - pause: {duration: 2s}
      - setWeight: 50
      - pause: {duration: 2s}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: canary-health
spec:
  metrics:
  - name: success-rate
    interval: 500ms
    inconclusiveLimit: 20
    successCondition: result.canary.success_rate >= 0.95
    provider:
      plugin:
        switchyard/subsets: {window: 2s, minRequests: 10}
";

/// An upstream answering its name, and 500 to `fail_per_10` of every 10 requests.
async fn upstream(name: &'static str, fail_per_10: u64) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        if n % 10 < fail_per_10 {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn write_folder(dir: &Path, v1: SocketAddr, v2: SocketAddr) -> Result<()> {
    let entry = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: frontend
spec:
  hosts: [frontend.default.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}
",
        v1.port(),
        v2.port()
    );
    std::fs::write(dir.join("frontend-endpoints.yaml"), entry)?;
    std::fs::write(dir.join("frontend-routing.yaml"), ROUTING)?;
    std::fs::write(dir.join("frontend-rollout.yaml"), ROLLOUT)?;
    Ok(())
}

/// Traffic from a few connections until `stop`: counts of v2 answers, all answers, failures.
#[derive(Default)]
struct Counts {
    v2: AtomicU64,
    all: AtomicU64,
    failed: AtomicU64,
}

fn load(target: SocketAddr, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    for _ in 0..4 {
        let counts = counts.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
            else {
                return;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = Request::builder()
                    .uri("/")
                    .header("host", "frontend")
                    .body(Full::new(Bytes::new()));
                let Ok(req) = req else { return };
                let Ok(resp) = sender.send_request(req).await else {
                    return;
                };
                let ok = resp.status().is_success();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                counts.all.fetch_add(1, Ordering::Relaxed);
                if body.as_ref() == b"v2" {
                    counts.v2.fetch_add(1, Ordering::Relaxed);
                }
                if !ok {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
                // About 1,000 requests a second in all: enough for every measurement.
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        });
    }
}

/// Runs one scenario; returns the phase it ended in.
async fn scenario(args: &DemoArgs, title: &str, fail_per_10: u64) -> Result<String> {
    println!("\n== {title}");
    let v1 = upstream("v1", 0).await?;
    let v2 = upstream("v2", fail_per_10).await?;
    let dir = tempfile_dir()?;
    write_folder(&dir.0, v1, v2)?;
    let mut serve = args.serve.clone();
    serve.rollouts = true;
    serve.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    serve.admin = crate::OptionalAddr(None);
    serve.metrics = crate::OptionalAddr(None);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = dir.0.clone();
    let server = tokio::spawn(async move { crate::run(config, serve, Some(tx)).await });
    let ready: Ready = match rx.await {
        Ok(r) => r,
        Err(_) => match server.await {
            Ok(Ok(_)) => bail!("the proxy stopped before it served"),
            Ok(Err(e)) => return Err(e),
            Err(e) => bail!("proxy task failed: {e}"),
        },
    };
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    load(ready.proxy, counts.clone(), stop.clone());
    let started = Instant::now();
    let mut last_key = String::new();
    let (mut last_v2, mut last_all) = (0, 0);
    let mut printed_measurement = 0;
    println!("  time   step  setWeight  v2 share since the line above   phase, analysis");
    let phase = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(st) = switchyard::rollout::state::read(&dir.0, "default", "frontend") else {
            continue;
        };
        let key = format!("{}/{}/{}", st.step, st.set_weight, st.phase);
        let measurement = st
            .background
            .as_ref()
            .and_then(|b| b.metrics.first())
            .and_then(|m| m.measurements.last())
            .map(|m| (m.at, m.phase, m.value.clone()));
        let new_measurement = measurement
            .as_ref()
            .is_some_and(|m| m.0 != printed_measurement);
        if key != last_key || (new_measurement && fail_per_10 > 0) {
            let (v2n, alln) = (
                counts.v2.load(Ordering::Relaxed),
                counts.all.load(Ordering::Relaxed),
            );
            let share = if alln > last_all {
                format!(
                    "{:6.1}%",
                    (v2n - last_v2) as f64 * 100.0 / (alln - last_all) as f64
                )
            } else {
                "     -".into()
            };
            let what = match &measurement {
                Some((at, p, v)) if *at != printed_measurement => {
                    printed_measurement = *at;
                    let rate = serde_json::from_str::<serde_json::Value>(v)
                        .ok()
                        .and_then(|j| j["canary"]["success_rate"].as_f64())
                        .map_or(v.clone(), |r| format!("canary success rate {r:.3}"));
                    format!("{p:?}: {rate}")
                }
                _ => String::new(),
            };
            println!(
                "  {:5.1}s  {:>2}/{}  {:>8}%  {share:>29}   {} {what}",
                started.elapsed().as_secs_f64(),
                st.step.min(st.steps),
                st.steps,
                if st.aborted { 0 } else { st.set_weight },
                st.phase
            );
            last_key = key;
            (last_v2, last_all) = (v2n, alln);
        }
        if st.phase == "Healthy" || st.phase == "Degraded" {
            if !st.message.is_empty() {
                println!("  {}", st.message);
            }
            break st.phase;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break format!("{} (stopped after 60 s)", st.phase);
        }
    };
    // A moment of traffic after the end shows where it goes now.
    let (v2n, alln) = (
        counts.v2.load(Ordering::Relaxed),
        counts.all.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (v2a, alla) = (
        counts.v2.load(Ordering::Relaxed),
        counts.all.load(Ordering::Relaxed),
    );
    if alla > alln {
        println!(
            "  then: {:.1}% of {} requests to v2; {} failed requests in all",
            (v2a - v2n) as f64 * 100.0 / (alla - alln) as f64,
            alla - alln,
            counts.failed.load(Ordering::Relaxed)
        );
    }
    ready.quit.notify_one();
    let _ = server.await;
    Ok(phase)
}

/// A temporary folder removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!(
            "switchyard-rollout-demo-{}-{i}",
            std::process::id()
        ));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!("cannot create a temporary folder in {}", base.display())
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    println!(
        "Two automated canary rollouts, each from an Argo Rollouts `Rollout` with background\nanalysis on switchyard's own counters (success rate >= 0.95 every 0.5 s)."
    );
    let healthy = scenario(&args, "a healthy v2: 5% -> 25% -> 50% -> 100%", 0).await?;
    let faulty = scenario(
        &args,
        "a v2 that answers 500 to 30% of requests: aborted by the analysis",
        3,
    )
    .await?;
    println!("\nhealthy rollout: {healthy}; faulty rollout: {faulty}");
    Ok(if healthy == "Healthy" && faulty == "Degraded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
