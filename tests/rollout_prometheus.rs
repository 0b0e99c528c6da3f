//! The rollout controller's `prometheus` provider against a real Prometheus server (Debian's
//! `prometheus` package) scraping the proxy. `#[ignore]`d: it needs that binary and takes
//! about 15 s; `.ci/run` installs it and runs
//! `cargo test --test rollout_prometheus -- --ignored --test-threads=1`.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: switchyard\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .expect("write prometheus.yml");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus; .ci/run does)");
    let p = Prometheus {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let mut c = Client::h1(addr).await;
            if let Ok(r) = c.try_request("GET", "127.0.0.1", "/-/ready", &[]).await
                && r.status == 200
            {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never became ready on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the prometheus binary; .ci/run installs it and runs this target"]
async fn a_prometheus_metric_gates_a_step_against_a_real_prometheus() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("services.yaml"),
        service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)]),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n  - name: primary\n    route:\n    - destination: {host: web, subset: v1}\n      weight: 100\n    - destination: {host: web, subset: v2}\n      weight: 0\n",
    )
    .expect("write");
    let p = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--rollouts",
            "--config",
            dir.path().to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    let metrics = p
        .stderr_text()
        .lines()
        .find_map(|l| parse_log_addr(l, "metrics"))
        .expect("metrics address in the log");
    let prom = start_prometheus(metrics).await;
    let proxy = p.proxy.expect("proxy");
    let load = tokio::spawn(async move {
        let mut c = Client::h1(proxy).await;
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            let _ = c.try_request("GET", "web", "/", &[]).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Prometheus hands static targets to its scrapers after its discovery settles (about 5 s):
    // start the rollout once it has scraped us.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::h1(prom.addr).await;
        let r = c
            .get("127.0.0.1", "/api/v1/query?query=istio_requests_total")
            .await;
        if r.json()["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the proxy"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Argo's documented query shape: a 0-1 success ratio of the canary's requests.
    let template = format!(
        "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: prom-success}}
spec:
  args: [{{name: subset}}]
  metrics:
  - name: prom-success
    initialDelay: 2s
    interval: 1s
    count: 3
    successCondition: len(result) > 0 && result[0] >= 0.95
    provider:
      prometheus:
        address: http://{}
        query: sum(istio_requests_total{{destination_subset=\"{{{{args.subset}}}}\",response_code!~\"5.*\"}}) / sum(istio_requests_total{{destination_subset=\"{{{{args.subset}}}}\"}})
",
        prom.addr
    );
    std::fs::write(dir.path().join("template.yaml"), template).expect("write");
    std::fs::write(
        dir.path().join("rollout.yaml"),
        "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  strategy:
    canary:
      trafficRouting:
        istio:
          virtualService: {name: web, routes: [primary]}
          destinationRule: {name: web, canarySubsetName: v2, stableSubsetName: v1}
      steps:
      - setWeight: 50
      - analysis:
          templates: [{templateName: prom-success}]
          args: [{name: subset, value: v2}]
",
    )
    .expect("write");
    let state_file = dir.path().join(".switchyard-rollout.default.web.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: serde_json::Value = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if s["phase"] == "Healthy" {
            break;
        }
        if s["phase"] == "Degraded" || Instant::now() >= deadline {
            let mut c = Client::h1(prom.addr).await;
            let targets = c.get("127.0.0.1", "/api/v1/targets").await.text();
            let series = c
                .get("127.0.0.1", "/api/v1/query?query=istio_requests_total")
                .await
                .text();
            panic!(
                "{s:#}\ntargets: {targets}\nseries: {series}\n{}",
                p.stderr_text()
            );
        }
        assert!(
            s["phase"] != "Degraded" && Instant::now() < deadline,
            "{s:#}\n{}",
            p.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = p.stderr_text();
    let measured: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("metric=prom-success") && l.contains("phase=Successful"))
        .collect();
    assert_eq!(measured.len(), 3, "{log}");
    assert!(measured[0].contains("value=[1.0]"), "{log}");
    load.abort();
}
