//! The rollout controller against the Kubernetes API (`rollout run --source kubernetes`): the
//! fake API server (support/kube_api.rs) serves Argo's Rollout and AnalysisTemplate objects
//! beside the Istio ones and takes the controller's PATCHes; a proxy running
//! `--source kubernetes` against the same fake routes real requests to real upstreams by
//! whatever weights the controller patched in.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::rollout::Controller;
use switchyard::rollout::kubernetes::{Kube, request};
use switchyard::rollout::state::Action;
use switchyard::source::kubernetes::KubeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::e2e_helpers::assert_within_4_sigma;
use support::kube_api::{FakeApiServer, web_service};
use support::{Client, TestProxy, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const HOST: &str = "web";

/// A pod of the stable or the canary ReplicaSet: Argo labels them with
/// `rollouts-pod-template-hash`, which the DestinationRule's subsets select.
fn pod(name: &str, hash: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": "web", "rollouts-pod-template-hash": hash}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "web:1",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
}

/// One slice per pod: every fake pod is an upstream on 127.0.0.1 with its own port.
fn slice(pod: &str, port: u16) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("web-{pod}"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}],
        "ports": [{"name": "http", "protocol": "TCP", "port": port}]})
}

/// Argo's subset-level traffic splitting: the DestinationRule's subsets (Argo rewrites their
/// `rollouts-pod-template-hash` labels; here they are fixed).
fn destination_rule() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"host": "web", "subsets": [
            {"name": "stable", "labels": {"rollouts-pod-template-hash": "6d4cf56db6"}},
            {"name": "canary", "labels": {"rollouts-pod-template-hash": "7f8b9c6d5e"}}]}})
}

fn virtual_service() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]}]}})
}

/// A Rollout as `kubectl apply` would send it (argoproj.io/v1alpha1, Argo's `Rollout` type).
fn rollout(steps: Value) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}},
            "strategy": {"canary": {
                "trafficRouting": {"istio": {
                    "virtualService": {"name": "web", "routes": ["primary"]},
                    "destinationRule": {"name": "web", "canarySubsetName": "canary",
                        "stableSubsetName": "stable"}}},
                "steps": steps}}}})
}

/// An Argo `web` metric that fails at its first measurement unless the value is ≥ 0.95.
fn failing_template(url: &str) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate", "namespace": "default"},
        "spec": {"metrics": [{"name": "success-rate", "interval": "1s", "failureLimit": 0,
            "successCondition": "result >= 0.95",
            "provider": {"web": {"url": url, "jsonPath": "{$.successRate}"}}}]}})
}

struct Mesh {
    api: FakeApiServer,
    proxy: TestProxy,
    _stable: Upstream,
    _canary: Upstream,
}

async fn mesh(steps: Value, extra: Vec<Value>) -> Mesh {
    let api = FakeApiServer::start(50).await;
    let (stable, canary) = objects(&api, steps, extra).await;
    let proxy = TestProxy::start_kubernetes(proxy_opts(&api)).await;
    Mesh {
        api,
        proxy,
        _stable: stable,
        _canary: canary,
    }
}

fn proxy_opts(api: &FakeApiServer) -> KubeOptions {
    KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        debounce: Duration::from_millis(20),
        sync_timeout: Duration::from_secs(10),
        namespaces: Vec::new(),
    }
}

/// The app's objects in the fake, a stable and a canary upstream behind them.
async fn objects(api: &FakeApiServer, steps: Value, extra: Vec<Value>) -> (Upstream, Upstream) {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    api.apply(web_service());
    api.apply(pod("web-stable", "6d4cf56db6"));
    api.apply(slice("web-stable", stable.addr.port()));
    api.apply(pod("web-canary", "7f8b9c6d5e"));
    api.apply(slice("web-canary", canary.addr.port()));
    api.apply(destination_rule());
    api.apply(virtual_service());
    for o in extra {
        api.apply(o);
    }
    api.apply(rollout(steps));
    (stable, canary)
}

fn controller_opts(api: &FakeApiServer) -> KubeOptions {
    KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        namespaces: vec!["default".to_string()],
        sync_timeout: Duration::from_secs(10),
        ..KubeOptions::default()
    }
}

/// The controller in this process, stopped when the handle drops.
async fn controller(api: &FakeApiServer) -> tokio::task::JoinHandle<()> {
    let backend = Kube::start(&controller_opts(api), "default".to_string())
        .await
        .expect("controller starts");
    tokio::spawn(Controller::with_backend(backend, None, None).run())
}

/// (stable, canary) weights of the VirtualService object.
fn weights(vs: &Value) -> (i64, i64) {
    let r = &vs["spec"]["http"][0]["route"];
    (
        r[0]["weight"].as_i64().unwrap_or(-1),
        r[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// The canary weight of every version the fake stored, repeats removed.
fn canary_history(api: &FakeApiServer) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for v in api.versions("VirtualService", "default", "web") {
        let (s, c) = weights(&v);
        assert_eq!(s + c, 100, "every version sums to 100: {v}");
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    out
}

/// Polls the fake until `ok` holds for the object; panics with it after `within`.
async fn until_object(
    api: &FakeApiServer,
    kind: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let o = api.get(kind, "default", "web").unwrap_or(Value::Null);
        if ok(&o) {
            return o;
        }
        assert!(
            start.elapsed() < within,
            "{kind} not as wanted within {within:?}: {o:#}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` requests; how many the canary answered.
async fn canary_share(addr: SocketAddr, n: usize) -> usize {
    let mut c = Client::h1(addr).await;
    let mut canary = 0;
    for _ in 0..n {
        let r = c.get(HOST, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text() == "canary" {
            canary += 1;
        }
    }
    canary
}

/// Waits until the proxy's config version passes `version`; how long that took.
async fn until_reloaded(proxy: &TestProxy, version: u64, within: Duration) -> Duration {
    let start = Instant::now();
    while proxy.reloader.version() <= version {
        assert!(
            start.elapsed() < within,
            "the proxy did not follow within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// A child process killed (by its own handle) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(api: &FakeApiServer, args: &[&str]) -> (Option<i32>, String) {
    let kubeconfig = api.kubeconfig();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--source", "kubernetes", "--kubeconfig"]);
    all.push(kubeconfig.to_str().expect("utf-8 path"));
    let out = Command::new(BIN)
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

/// The whole path: `switchyard rollout run --source kubernetes` (the binary) steps a Rollout
/// 20 → pause 2s → 50 → pause → (promote from the CLI) → 100; the fake's VirtualService
/// object goes through exactly those weights, the Rollout's status says where it is, and
/// a proxy watching the same API server routes by each weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_patches_the_virtual_service_object_step_by_step_and_traffic_follows() {
    let m = mesh(
        json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50},
               {"pause": {}}, {"setWeight": 100}]),
        Vec::new(),
    )
    .await;
    let before = m.proxy.reloader.version();
    let kubeconfig = m.api.kubeconfig();
    let started = Instant::now();
    let _controller = Running(
        Command::new(BIN)
            .args([
                "rollout",
                "run",
                "--source",
                "kubernetes",
                "--watch-namespace",
                "default",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the controller"),
    );
    until_object(&m.api, "VirtualService", Duration::from_secs(15), |v| {
        weights(v) == (80, 20)
    })
    .await;
    let patched = started.elapsed();
    let followed = until_reloaded(&m.proxy, before, Duration::from_secs(5)).await;
    eprintln!(
        "process start to weight 20 in the VirtualService object: {patched:?}; the patch to the proxy serving it: {followed:?}"
    );
    let at_20 = Instant::now();
    let version = m.proxy.reloader.version();
    until_object(&m.api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (50, 50)
    })
    .await;
    let paused = at_20.elapsed();
    let followed = until_reloaded(&m.proxy, version, Duration::from_secs(5)).await;
    eprintln!(
        "weight 20 to weight 50 across `pause: {{duration: 2s}}`: {paused:?}; the patch to the proxy serving it: {followed:?}"
    );
    assert!(
        paused >= Duration::from_millis(1900),
        "the pause lasted {paused:?}"
    );

    // The 2 s pause, then 50, then the indefinite pause, recorded where Argo users look.
    let status = until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["currentStepIndex"] == 3 && r["status"]["phase"] == "Paused"
    })
    .await["status"]
        .clone();
    assert_eq!(status["message"], "CanaryPauseStep", "{status:#}");
    assert_eq!(status["pauseConditions"][0]["reason"], "CanaryPauseStep");
    assert_eq!(status["canary"]["weights"]["canary"]["weight"], 50);
    assert_eq!(status["canary"]["weights"]["stable"]["weight"], 50);
    assert_eq!(
        weights(
            &m.api
                .get("VirtualService", "default", "web")
                .unwrap_or_default()
        ),
        (50, 50)
    );
    // Every config the proxy had converges on the object: let it catch up, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 1000;
    let hits = canary_share(m.proxy.addr, n).await;
    eprintln!("at setWeight 50: {hits} of {n} requests to the canary");
    assert_within_4_sigma(hits, n, 0.5, "canary share at setWeight 50");

    let version = m.proxy.reloader.version();
    let (code, out) = cli(&m.api, &["rollout", "promote", "web"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("rollout 'web' promoted"), "{out}");
    let promoted = Instant::now();
    until_object(&m.api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (0, 100)
    })
    .await;
    let patched = promoted.elapsed();
    let followed = until_reloaded(&m.proxy, version, Duration::from_secs(5)).await;
    eprintln!(
        "`rollout promote` exit to weight 100 in the object: {patched:?}; the patch to the proxy serving it: {followed:?}"
    );
    until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Healthy"
    })
    .await;
    assert_eq!(
        weights(
            &m.api
                .get("VirtualService", "default", "web")
                .unwrap_or_default()
        ),
        (0, 100)
    );
    let (code, out) = cli(&m.api, &["rollout", "status", "web"]);
    assert_eq!((code, out.trim()), (Some(0), "Healthy"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        canary_share(m.proxy.addr, 200).await,
        200,
        "all traffic on the canary at 100"
    );

    assert_eq!(canary_history(&m.api), vec![0, 20, 50, 100]);
    let (patches, conflicts) = m.api.patch_counts();
    eprintln!("{patches} PATCH requests, {conflicts} answered 409");
}

/// A `web` metric served by a local server answering 0.6 fails the step's analysis: the
/// rollout aborts, the VirtualService object goes back to stable 100 / canary 0, the
/// Rollout's status says Degraded with Argo's abort message, and the proxy sends
/// everything to stable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_aborts_and_the_object_goes_back_to_stable() {
    let metric = json_server(json!({"successRate": 0.6})).await;
    let m = mesh(
        json!([{"setWeight": 30},
               {"analysis": {"templates": [{"templateName": "success-rate"}]}},
               {"setWeight": 100}]),
        vec![failing_template(&format!("http://{metric}/rate"))],
    )
    .await;
    let _controller = controller(&m.api).await;
    let status = until_object(&m.api, "Rollout", Duration::from_secs(15), |r| {
        r["status"]["phase"] == "Degraded"
    })
    .await["status"]
        .clone();
    assert_eq!(status["abort"], true, "{status:#}");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("RolloutAborted: Rollout aborted update to revision 1"),
        "{message}"
    );
    assert!(message.contains("success-rate"), "{message}");
    until_object(&m.api, "VirtualService", Duration::from_secs(5), |v| {
        weights(v) == (100, 0)
    })
    .await;
    assert_eq!(canary_history(&m.api), vec![0, 30, 0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        canary_share(m.proxy.addr, 200).await,
        0,
        "all traffic back on stable"
    );
}

/// Someone edits the VirtualService (a `kubectl edit` adding a timeout and a label) between
/// the controller's read and its patch: the API server answers 409, the controller reads the
/// object again and patches only the weights on top of the edit, which survives. Then
/// `rollout abort` through the API (status.abort, as Argo's plugin sets it) sends the weights
/// back to stable, and `retry` (status.abort=false) starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_is_not_clobbered_and_abort_and_retry_go_through_the_api() {
    let m = mesh(json!([{"setWeight": 40}, {"pause": {}}]), Vec::new()).await;
    m.api.interfere_before_next_patch("VirtualService", |vs| {
        vs["metadata"]["labels"] = json!({"edited-by": "kubectl"});
        vs["spec"]["http"][0]["timeout"] = json!("3s");
    });
    let _controller = controller(&m.api).await;
    let vs = until_object(&m.api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (60, 40)
    })
    .await;
    assert_eq!(vs["metadata"]["labels"]["edited-by"], "kubectl", "{vs:#}");
    assert_eq!(vs["spec"]["http"][0]["timeout"], "3s", "{vs:#}");
    let (_, conflicts) = m.api.patch_counts();
    assert!(conflicts >= 1, "the interfering edit caused a 409");
    // The edit landed at 100/0 and the weights went on top of it, never the other way.
    let versions = m.api.versions("VirtualService", "default", "web");
    let edited = versions
        .iter()
        .position(|v| v["spec"]["http"][0]["timeout"] == "3s")
        .expect("the edit is in the history");
    assert_eq!(weights(&versions[edited]), (100, 0));
    assert!(
        versions[edited..]
            .iter()
            .all(|v| v["spec"]["http"][0]["timeout"] == "3s")
    );

    until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Paused"
    })
    .await;
    let opts = controller_opts(&m.api);
    request(&opts, "default", "web", Action::Abort)
        .await
        .expect("abort");
    until_object(&m.api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (100, 0)
    })
    .await;
    let r = until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Degraded"
    })
    .await;
    assert_eq!(r["status"]["abort"], true);
    request(&opts, "default", "web", Action::Retry)
        .await
        .expect("retry");
    until_object(&m.api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (60, 40)
    })
    .await;
    assert_eq!(canary_history(&m.api), vec![0, 40, 0, 40]);
}

/// A person's abort (`status.abort: true`, as `kubectl argo rollouts abort` patches it) lands
/// between the controller's read of the Rollout and its status patch: the patch gets a 409
/// instead of overwriting the abort, and the next tick takes the abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_landing_before_the_status_patch_is_taken_not_overwritten() {
    let m = mesh(json!([{"setWeight": 40}, {"pause": {}}]), Vec::new()).await;
    until_object(&m.api, "VirtualService", Duration::from_secs(5), |v| {
        weights(v) == (100, 0)
    })
    .await;
    m.api.interfere_before_next_patch("Rollout", |r| {
        r["status"]["abort"] = json!(true);
    });
    let _controller = controller(&m.api).await;
    let r = until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Degraded"
    })
    .await;
    assert_eq!(r["status"]["abort"], true, "{r:#}");
    assert!(m.api.patch_counts().1 >= 1, "the status patch met a 409");
    until_object(&m.api, "VirtualService", Duration::from_secs(5), |v| {
        weights(v) == (100, 0)
    })
    .await;
}

/// A controller stopped at `pause: {}` and started again resumes from the Rollout's status
/// (step, weight) instead of starting over, and a promote then finishes the rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_from_the_rollout_status() {
    let m = mesh(
        json!([{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
        Vec::new(),
    )
    .await;
    let first = controller(&m.api).await;
    let paused = until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Paused" && r["status"]["currentStepIndex"] == 1
    })
    .await["status"]
        .clone();
    first.abort();
    let _ = first.await;
    let _second = controller(&m.api).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = m.api.get("Rollout", "default", "web").unwrap_or_default()["status"].clone();
    assert_eq!(status["currentStepIndex"], 1, "{status:#}");
    assert_eq!(status["phase"], "Paused");
    assert_eq!(
        status["pauseConditions"], paused["pauseConditions"],
        "the pause keeps its startTime"
    );
    assert_eq!(canary_history(&m.api), vec![0, 40]);
    request(&controller_opts(&m.api), "default", "web", Action::Promote)
        .await
        .expect("promote");
    until_object(&m.api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Healthy"
    })
    .await;
    assert_eq!(canary_history(&m.api), vec![0, 40, 100]);
}

/// The example RBAC's controller roles (deploy/kubernetes/api-source/rbac.yaml) grant
/// exactly the verbs the controller used against the fake: reads of Rollouts, templates
/// and VirtualServices, patch of VirtualServices (and get, to re-read one after a 409), and
/// patch of rollouts/status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_rbac_grants_the_controller_exactly_what_it_uses() {
    let api = FakeApiServer::start(50).await;
    api.apply(destination_rule());
    api.apply(virtual_service());
    api.apply(rollout(json!([{"setWeight": 10}, {"pause": {}}])));
    api.interfere_before_next_patch("VirtualService", |vs| {
        vs["spec"]["http"][0]["timeout"] = json!("3s");
    });
    let _controller = controller(&api).await;
    until_object(&api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Paused"
    })
    .await;
    let used: std::collections::BTreeSet<String> = api.verbs();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/api-source/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("rbac.yaml");
    let mut granted = std::collections::BTreeSet::new();
    for doc in text.split("\n---\n") {
        let role: Value = yaml_serde::from_str(doc).expect("rbac.yaml document");
        let name = role["metadata"]["name"].as_str().unwrap_or("");
        if !name.starts_with("switchyard-rollouts") {
            continue;
        }
        let scope = match role["kind"].as_str() {
            Some("Role") => role["metadata"]["namespace"].as_str().expect("namespace"),
            Some("ClusterRole") => "-",
            _ => continue,
        };
        for rule in role["rules"].as_array().expect("rules") {
            for verb in rule["verbs"].as_array().expect("verbs") {
                for group in rule["apiGroups"].as_array().expect("apiGroups") {
                    for r in rule["resources"].as_array().expect("resources") {
                        granted.insert(format!(
                            "{} {scope} {}/{}",
                            verb.as_str().unwrap_or(""),
                            group.as_str().unwrap_or(""),
                            r.as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(used, granted);
}

/// `run --source kubernetes --rollouts`: the controller runs inside the proxy, patches the
/// object like the standalone one, and its built-in `switchyard/subsets` provider judges the
/// canary by this proxy's own counters, which only exist because the proxy followed the
/// patched weight through its watch. Over the API the step after a `setWeight` starts on the
/// next tick, not once this proxy serves the weight (a folder controller reloads its proxy
/// first), hence the metric's `initialDelay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_in_a_proxy_judges_the_canary_by_that_proxys_own_counters() {
    let api = FakeApiServer::start(50).await;
    let template = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate", "namespace": "default"},
        "spec": {"metrics": [{"name": "success-rate", "interval": "1s", "count": 2, "initialDelay": "1s",
            "successCondition": "result.canary.success_rate >= 0.95",
            "provider": {"plugin": {"switchyard/subsets": {"window": "1s", "minRequests": 10}}}}]}});
    let _upstreams = objects(
        &api,
        json!([{"setWeight": 50},
               {"analysis": {"templates": [{"templateName": "success-rate"}]}},
               {"setWeight": 100}]),
        vec![template],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = switchyard::serve::ServeOptions::new(dir.path());
    opts.kubernetes = Some(proxy_opts(&api));
    opts.rollouts = true;
    let server = switchyard::serve::Server::start(opts)
        .await
        .expect("the proxy starts with its controller");
    let mut c = Client::h1(server.proxy_addr).await;
    let start = Instant::now();
    let mut sent = 0;
    let (mut stable, mut canary) = (0, 0);
    loop {
        let r = c.get(HOST, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text() == "canary" {
            canary += 1;
        } else {
            stable += 1;
        }
        sent += 1;
        if sent % 20 == 0
            && api
                .get("Rollout", "default", "web")
                .is_some_and(|r| r["status"]["phase"] == "Healthy")
        {
            break;
        }
        let phase = api.get("Rollout", "default", "web").unwrap_or_default()["status"].clone();
        assert!(
            start.elapsed() < Duration::from_secs(20) && sent < 20_000,
            "not Healthy after {sent} requests: {phase:#}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "Healthy after {:?} and {sent} requests ({canary} to the canary, {stable} to stable)",
        start.elapsed()
    );
    assert!(canary >= 20, "the analysis saw canary traffic: {canary}");
    assert_eq!(canary_history(&api), vec![0, 50, 100]);
}

/// An Istio older than 1.22 serves networking.istio.io at v1beta1 only (404 at v1): the
/// controller finds that version by discovery, watches and PATCHes the VirtualService
/// there, the fake's object takes the step's weight, and a `--source kubernetes` proxy
/// (which discovers the same version) routes by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_on_an_istio_serving_only_v1beta1_patches_there_and_traffic_follows() {
    let api = FakeApiServer::start(50).await;
    api.serve_istio_versions(&["v1beta1"]);
    let (_stable, _canary) =
        objects(&api, json!([{"setWeight": 30}, {"pause": {}}]), Vec::new()).await;
    let proxy = TestProxy::start_kubernetes(proxy_opts(&api)).await;
    let before = proxy.reloader.version();
    let _controller = controller(&api).await;
    until_object(&api, "VirtualService", Duration::from_secs(10), |v| {
        weights(v) == (70, 30)
    })
    .await;
    until_reloaded(&proxy, before, Duration::from_secs(5)).await;
    until_object(&api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Paused" && r["status"]["currentStepIndex"] == 1
    })
    .await;
    // Let every config the proxy had converge on the object, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 1000;
    let hits = canary_share(proxy.addr, n).await;
    eprintln!("at setWeight 30 over v1beta1: {hits} of {n} requests to the canary");
    assert_within_4_sigma(hits, n, 0.3, "canary share at setWeight 30");
    assert_eq!(canary_history(&api), vec![0, 30]);
    // Every Istio request (the proxy's watches, the controller's watch and PATCH) was made
    // at v1beta1; one at v1 would have been answered 404 and not recorded.
    let asked: Vec<String> = api.istio_asked().into_iter().collect();
    assert!(
        asked.contains(&"v1beta1/virtualservices".to_string()),
        "{asked:?}"
    );
    assert!(asked.iter().all(|a| a.starts_with("v1beta1/")), "{asked:?}");
    assert!(
        api.verbs()
            .contains("patch default networking.istio.io/virtualservices"),
        "{:?}",
        api.verbs()
    );
}

/// `rollout get` and `rollout list` with `--source kubernetes` (the binary) read the Rollout
/// objects: mid-way (paused after setWeight 40, step 2 of 3) `get` prints Argo's header
/// block from the status the controller wrote; `list` has a line per Rollout of the
/// namespace (read in pages of one) and none of another; one no controller ran lists with
/// no phase, step 0, weight 0; a
/// missing Rollout is named in the error and exits 1, as in folder mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_get_and_list_read_the_rollout_objects() {
    let api = FakeApiServer::start(1).await;
    api.apply(destination_rule());
    api.apply(virtual_service());
    api.apply(rollout(
        json!([{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
    ));
    let mut idle = rollout(json!([{"setWeight": 10}]));
    idle["metadata"]["name"] = json!("api");
    api.apply(idle);
    let mut elsewhere = rollout(json!([{"setWeight": 10}]));
    elsewhere["metadata"]["namespace"] = json!("other");
    elsewhere["metadata"]["name"] = json!("elsewhere");
    api.apply(elsewhere);
    let _controller = controller(&api).await;
    until_object(&api, "Rollout", Duration::from_secs(10), |r| {
        r["status"]["phase"] == "Paused" && r["status"]["currentStepIndex"] == 1
    })
    .await;

    let (code, out) = cli(&api, &["rollout", "get", "web"]);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "Name:            web",
        "Namespace:       default",
        "Status:          ॥ Paused",
        "Message:         CanaryPauseStep",
        "  Step:          1/3",
        "  SetWeight:     40",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }

    let (code, out) = cli(&api, &["rollout", "list"]);
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["api", "default", "Healthy", "1/1", "100"],
            vec!["web", "default", "Paused", "1/3", "40"],
        ],
        "{out}"
    );
    assert!(out.starts_with("NAME"), "{out}");
    // The controller watches only `default`: that Rollout has no status, no phase.
    let (code, out) = cli(&api, &["rollout", "list", "--namespace", "other"]);
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines, [vec!["elsewhere", "other", "0/1", "0"]], "{out}");

    let (code, out) = cli(&api, &["rollout", "get", "nope"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no Rollout default/nope in the API server"),
        "{out}"
    );
}

/// A one-route HTTP/1.1 server answering `body` as JSON to every request.
async fn json_server(body: Value) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let text = body.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let text = text.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}
