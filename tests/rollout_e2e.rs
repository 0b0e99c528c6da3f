//! Automated canary rollouts with real processes and sockets: `switchyard run --rollouts` over
//! a folder holding an Argo `Rollout`, its `AnalysisTemplate`, and the VirtualService it
//! drives; real upstreams; the CLI steering it through the folder.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::e2e_helpers::assert_within_4_sigma;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

use support::flaky::Flaky as Canary;

const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web   # driven by the rollout below
spec:
  hosts: [web]
  http:
  - name: primary
    route:
    - destination:
        host: web
        subset: stable
      weight: 100
    - destination:
        host: web
        subset: canary
      weight: 0
";

fn services(stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: {}, ports: {{http: {}}}, labels: {{track: stable}}}}
  - {{address: {}, ports: {{http: {}}}, labels: {{track: canary}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  subsets:
  - {{name: stable, labels: {{track: stable}}}}
  - {{name: canary, labels: {{track: canary}}}}
",
        stable.ip(),
        stable.port(),
        canary.ip(),
        canary.port()
    )
}

fn rollout(steps: &str, analysis: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 3
  strategy:
    canary:
      trafficRouting:
        istio:
          virtualService: {{name: web, routes: [primary]}}
          destinationRule: {{name: web, canarySubsetName: canary, stableSubsetName: stable}}
{analysis}      steps:
{steps}"
    )
}

/// The built-in provider's success rate over the last second. `inconclusive_limit`: how many
/// low-traffic measurements to sit out (Argo's default, 0, pauses at the first).
fn template(condition: &str, interval: &str, min_requests: u64, inconclusive_limit: u32) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate}}
spec:
  metrics:
  - name: success-rate
    interval: {interval}
    inconclusiveLimit: {inconclusive_limit}
    successCondition: \"{condition}\"
    provider:
      plugin:
        switchyard/subsets: {{window: 1s, minRequests: {min_requests}}}
"
    )
}

const BACKGROUND: &str = "      analysis:\n        templates: [{templateName: success-rate}]\n";

fn folder(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

fn serve(dir: &Path) -> ProxyProcess {
    ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--rollouts",
            "--config",
            dir.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    )
}

fn state(dir: &Path) -> serde_json::Value {
    std::fs::read(dir.join(".switchyard-rollout.default.web.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn cli(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["rollout"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", dir.to_str().expect("utf-8")]);
    let out = std::process::Command::new(BIN)
        .args(&all)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the CLI");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (bounded) until the state satisfies `cond`; returns the state.
async fn until(
    dir: &Path,
    limit: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = state(dir);
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "state never got there: {s:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A steady trickle of requests (bounded in time) so background analysis always has data;
/// returns the failures it saw.
fn keep_traffic(addr: SocketAddr, secs: u64) -> Trickle {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut c = Client::h1(addr).await;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut failed = 0;
        while Instant::now() < deadline && !stopped.load(Ordering::SeqCst) {
            match c.try_request("GET", "web", "/", &[]).await {
                Ok(r) if r.status == 200 => {}
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        failed
    });
    Trickle { stop, task }
}

struct Trickle {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Trickle {
    /// Stops it; the failures it saw.
    async fn failures(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or(u64::MAX)
    }
}

/// `n` requests from 4 clients: (requests answered by the canary, failures).
async fn traffic(addr: SocketAddr, n: usize) -> (usize, usize) {
    let tally = support::e2e_helpers::par_tally(addr, Proto::H1, 4, n, "web", "/", &[]).await;
    let canary = tally.get("canary").copied().unwrap_or(0);
    let failed = n - canary - tally.get("stable").copied().unwrap_or(0);
    (canary, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_goes_5_25_50_100_with_the_observed_share_at_each_step() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 0).await;
    let steps = "      - setWeight: 5\n      - pause: {}\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {}\n";
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
        ("rollout.yaml", rollout(steps, BACKGROUND)),
        (
            "template.yaml",
            template("result.canary.success_rate >= 0.95", "300ms", 1, 1000),
        ),
    ]);
    let p = serve(dir.path());
    let addr = p.proxy.expect("proxy address");
    let trickle = keep_traffic(addr, 60);
    let mut failures = 0;
    for (step, weight) in [(1, 5.0), (3, 25.0), (5, 50.0)] {
        until(dir.path(), Duration::from_secs(10), |s| {
            s["step"] == step && s["phase"] == "Paused"
        })
        .await;
        // Served at once: the controller reloads the proxy before the step goes on.
        let n = 1000;
        let (hits, failed) = traffic(addr, n).await;
        failures += failed;
        assert_within_4_sigma(hits, n, weight / 100.0, &format!("setWeight {weight}"));
        let text = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
        assert!(
            text.contains(&format!("      weight: {}\n", 100 - weight as u32))
                && text.contains(&format!("      weight: {}\n", weight as u32)),
            "{text}"
        );
        assert!(
            text.contains("  name: web   # driven by the rollout below"),
            "comments kept"
        );
        let (code, out) = cli(dir.path(), &["promote", "web"]);
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(out.trim(), "rollout 'web' promoted");
    }
    let s = until(dir.path(), Duration::from_secs(10), |s| {
        s["phase"] == "Healthy"
    })
    .await;
    assert_eq!(s["set_weight"], 100);
    let trickle_failures = trickle.failures().await;
    assert_eq!(trickle_failures, 0, "no request failed during the rollout");
    let (hits, failed) = traffic(addr, 200).await;
    assert_eq!(
        (hits, failed + failures),
        (200, 0),
        "all canary, nothing failed"
    );
    let bg = &state(dir.path());
    assert!(
        bg["background"].is_null(),
        "background analysis ended with the steps"
    );
    let (code, out) = cli(dir.path(), &["status", "web"]);
    assert_eq!((code, out.trim()), (Some(0), "Healthy"));
    let (code, out) = cli(dir.path(), &["get", "web"]);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "Name:            web",
        "Status:          ✔ Healthy",
        "  Step:          6/6",
        "  SetWeight:     100",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_is_aborted_by_background_analysis() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 3).await;
    let steps = "      - setWeight: 50\n      - pause: {}\n";
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
        ("rollout.yaml", rollout(steps, BACKGROUND)),
        (
            "template.yaml",
            template("result.canary.success_rate >= 0.95", "200ms", 5, 1000),
        ),
    ]);
    let p = serve(dir.path());
    let addr = p.proxy.expect("proxy address");
    until(dir.path(), Duration::from_secs(10), |s| {
        s["set_weight"] == 50
    })
    .await;
    // Traffic until the rollout aborts (bounded).
    let load = keep_traffic(addr, 15);
    let s = until(dir.path(), Duration::from_secs(10), |s| {
        s["phase"] == "Degraded"
    })
    .await;
    let aborted_at = Instant::now();
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("RolloutAborted: Rollout aborted update to revision 1"),
        "{message}"
    );
    assert!(
        message.contains("Background analysis phase failed"),
        "{message}"
    );
    // Within 200 ms of the abort being recorded, nothing more reaches the canary.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = canary.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        canary.requests(),
        after,
        "requests reached the canary after the abort"
    );
    assert!(aborted_at.elapsed() < Duration::from_secs(2));
    // Some of the canary's answers failed before the abort; the count is not the point here.
    let _ = load.failures().await;
    let text = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
    assert!(
        text.contains("      weight: 100\n") && text.contains("      weight: 0\n"),
        "{text}"
    );
    let (code, out) = cli(dir.path(), &["status", "web"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("Degraded - RolloutAborted"), "{out}");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_canary_traffic_is_inconclusive_then_promote_and_abort_from_the_cli() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 0).await;
    let steps = "      - setWeight: 10\n      - analysis: {templates: [{templateName: success-rate}]}\n      - setWeight: 30\n      - pause: {}\n";
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
        ("rollout.yaml", rollout(steps, "")),
        (
            "template.yaml",
            template("result.canary.success_rate >= 0.95", "100ms", 1000, 0),
        ),
    ]);
    let _p = serve(dir.path());
    let s = until(dir.path(), Duration::from_secs(10), |s| {
        s["message"] == "InconclusiveAnalysisRun"
    })
    .await;
    assert_eq!(
        (s["phase"].as_str(), s["step"].as_u64()),
        (Some("Paused"), Some(1))
    );
    let (_, out) = cli(dir.path(), &["get", "web"]);
    assert!(
        out.contains("canary received 0 < 1000 requests in 1s"),
        "{out}"
    );
    let (code, _) = cli(dir.path(), &["promote", "web"]);
    assert_eq!(code, Some(0));
    until(dir.path(), Duration::from_secs(10), |s| {
        s["set_weight"] == 30 && s["phase"] == "Paused"
    })
    .await;
    let (code, out) = cli(dir.path(), &["abort", "web"]);
    assert_eq!((code, out.trim()), (Some(0), "rollout 'web' aborted"));
    until(dir.path(), Duration::from_secs(10), |s| {
        s["phase"] == "Degraded"
    })
    .await;
    let text = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
    assert!(
        text.contains("      weight: 100\n") && text.contains("      weight: 0\n"),
        "{text}"
    );
    // retry starts over at step 0.
    let (code, _) = cli(dir.path(), &["retry", "web"]);
    assert_eq!(code, Some(0));
    until(dir.path(), Duration::from_secs(10), |s| {
        s["set_weight"] == 10 && s["aborted"] == false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_are_refused_with_file_line_and_the_proxy_keeps_serving() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 0).await;
    let bad_route =
        rollout("      - setWeight: 50\n", "").replace("routes: [primary]", "routes: [nope]");
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
        ("rollout.yaml", bad_route),
    ]);
    let p = serve(dir.path());
    let s = until(dir.path(), Duration::from_secs(10), |s| {
        !s["message"].is_null() && s["message"] != ""
    })
    .await;
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("vs.yaml:1: VirtualService/default/web: HTTP Route 'nope' is not found in the defined Virtual Service."),
        "{message}"
    );
    let mut c = Client::h1(p.proxy.expect("proxy")).await;
    assert_eq!(c.get("web", "/").await.text(), "stable");
    let before = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
    assert_eq!(before, VS, "nothing written");

    // A condition outside the language: refused at load with the template's file:line.
    std::fs::write(
        dir.path().join("rollout.yaml"),
        rollout(
            "      - analysis: {templates: [{templateName: success-rate}]}\n",
            "",
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("template.yaml"),
        template("now() > 1", "1s", 1, 0),
    )
    .expect("write");
    let s = until(dir.path(), Duration::from_secs(10), |s| {
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown name"))
    })
    .await;
    let message = s["message"].as_str().unwrap_or_default();
    assert!(message.contains("template.yaml:"), "{message}");
    assert!(
        message.contains("spec.metrics[0].successCondition"),
        "{message}"
    );

    // A second controller on the folder exits 1 naming the holder.
    let (code, out) = cli(dir.path(), &["run"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("another rollout controller (pid "), "{out}");
    assert_eq!(c.get("web", "/").await.text(), "stable");
}

#[test]
fn validate_checks_rollouts_as_the_controller_would() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let good = folder(&[
        ("services.yaml", services(addr, addr)),
        ("vs.yaml", VS.to_string()),
        (
            "rollout.yaml",
            rollout("      - setWeight: 5\n", BACKGROUND),
        ),
        (
            "template.yaml",
            template("result.canary.success_rate >= 0.95", "1s", 1, 0),
        ),
    ]);
    let run = |dir: &Path| {
        let out = std::process::Command::new(BIN)
            .args(["validate", dir.to_str().expect("utf-8")])
            .env("NO_COLOR", "1")
            .output()
            .expect("validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(good.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("SY0006"), "{out}");
    // A missing template and a refused step: each an SY0006 error naming the field's line.
    let bad = folder(&[
        ("services.yaml", services(addr, addr)),
        ("vs.yaml", VS.to_string()),
        (
            "rollout.yaml",
            rollout("      - setWeight: 5\n      - experiment: {}\n", ""),
        ),
    ]);
    let (code, out) = run(bad.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines().any(
            |l| l.contains("rollout.yaml:14: Error SY0006 Rollout/default/web")
                && l.contains("experiment steps manage pods or plugins")
        ),
        "{out}"
    );
    let missing = folder(&[
        ("services.yaml", services(addr, addr)),
        ("vs.yaml", VS.to_string()),
        (
            "rollout.yaml",
            rollout("      - setWeight: 5\n", BACKGROUND),
        ),
    ]);
    let (code, out) = run(missing.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("AnalysisTemplate \"success-rate\" is not in the folder"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_resumes_at_its_step_and_a_second_proxy_follows_the_folder() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 0).await;
    let steps = "      - setWeight: 10\n      - pause: {duration: 1s}\n      - setWeight: 30\n      - pause: {}\n      - setWeight: 60\n";
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
        ("rollout.yaml", rollout(steps, "")),
    ]);
    // A plain proxy on the same folder: it never writes, it follows.
    let follower = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--config",
            dir.path().to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut p = serve(dir.path());
    until(dir.path(), Duration::from_secs(10), |s| {
        s["step"] == 3 && s["set_weight"] == 30
    })
    .await;
    // Both proxies serve step 3's weights.
    for addr in [p.proxy.expect("proxy"), follower.proxy.expect("follower")] {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (hits, _) = traffic(addr, 400).await;
            if (hits as f64 / 400.0 - 0.3).abs() < 0.1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} serves {hits}/400 to the canary"
            );
        }
    }
    p.signal(SIGKILL);
    let _ = p.wait_exit_async(Duration::from_secs(5)).await;
    let text = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
    assert!(
        text.contains("      weight: 70\n") && text.contains("      weight: 30\n"),
        "{text}"
    );
    // Restarted: it resumes at step 3 (the pause {}), and the weights never move meanwhile.
    let _p = serve(dir.path());
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(dir.path().join("vs.yaml")).expect("vs");
        assert!(text.contains("      weight: 30\n"), "{text}");
        let s = state(dir.path());
        assert_eq!(
            (s["step"].as_u64(), s["revision"].as_u64()),
            (Some(3), Some(1))
        );
    }
    let (code, _) = cli(dir.path(), &["promote", "web"]);
    assert_eq!(code, Some(0));
    until(dir.path(), Duration::from_secs(10), |s| {
        s["phase"] == "Healthy"
    })
    .await;
    let f = follower.proxy.expect("follower");
    let deadline = Instant::now() + Duration::from_secs(3);
    while traffic(f, 100).await.0 != 100 {
        assert!(
            Instant::now() < deadline,
            "the follower never served 100% canary"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_metric_reads_the_proxys_own_subset_json_and_the_admin_steers_rollouts() {
    let stable = Canary::start("stable", 0).await;
    let canary = Canary::start("canary", 0).await;
    let dir = folder(&[
        ("services.yaml", services(stable.addr, canary.addr)),
        ("vs.yaml", VS.to_string()),
    ]);
    let p = serve(dir.path());
    let metrics = p
        .stderr_text()
        .lines()
        .find_map(|l| parse_log_addr(l, "metrics"))
        .expect("metrics address in the log");
    let load = keep_traffic(p.proxy.expect("proxy"), 20);
    // The same template works under Argo Rollouts against a switchyard sidecar.
    std::fs::write(
        dir.path().join("template.yaml"),
        format!(
            "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: web-success}}
spec:
  metrics:
  - name: web-success
    interval: 200ms
    count: 3
    successCondition: result >= 0.95
    provider:
      web:
        url: http://{metrics}/stats/subsets?route=web/primary&subset=canary
        jsonPath: \"{{$.since_start.success_rate}}\"
"
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rollout.yaml"),
        rollout(
            "      - setWeight: 50\n      - analysis: {templates: [{templateName: web-success}]}\n",
            "",
        ),
    )
    .expect("write");
    until(dir.path(), Duration::from_secs(15), |s| {
        s["phase"] == "Healthy"
    })
    .await;
    let log = p.stderr_text();
    let measured = log
        .lines()
        .filter(|l| l.contains("analysis measurement") && l.contains("metric=web-success"))
        .collect::<Vec<_>>();
    assert!(measured.len() >= 3, "{log}");
    assert!(
        measured
            .iter()
            .all(|l| l.contains("phase=Successful") && l.contains("value=1.0")),
        "{measured:#?}"
    );
    // The admin listener lists rollouts and takes the CLI's actions.
    let mut admin = Client::h1(p.admin.expect("admin")).await;
    let r = admin.get("127.0.0.1", "/rollouts").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rollouts"][0]["phase"], "Healthy", "{}", r.text());
    let r = admin
        .request("POST", "127.0.0.1", "/rollouts/web/abort", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    until(dir.path(), Duration::from_secs(5), |s| {
        s["phase"] == "Degraded"
    })
    .await;
    let r = admin
        .request("POST", "127.0.0.1", "/rollouts/web/bogus", &[])
        .await;
    assert_eq!(r.status, 404);
    // The single-object form: 404 for a subset never routed to.
    let mut m = Client::h1(metrics).await;
    let r = m
        .get("127.0.0.1", "/stats/subsets?route=web/primary&subset=nope")
        .await;
    assert_eq!(r.status, 404);
    let _ = load.failures().await;
}

#[test]
fn demo_rollout_runs_a_healthy_and_a_faulty_canary_to_their_ends() {
    let out = std::process::Command::new(BIN)
        .args(["demo", "--rollout"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("demo --rollout");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("healthy rollout: Healthy; faulty rollout: Degraded"),
        "{text}"
    );
    assert!(
        text.contains("RolloutAborted: Rollout aborted update to revision 1"),
        "{text}"
    );
    // After the healthy rollout everything goes to v2, after the abort nothing does.
    let thens: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("then: "))
        .collect();
    assert_eq!(thens.len(), 2, "{text}");
    assert!(thens[0].contains("then: 100.0% of"), "{text}");
    assert!(thens[1].contains("then: 0.0% of"), "{text}");
}
