//! `run --source kubernetes` end to end: the real proxy reads Istio resources, Services,
//! EndpointSlices and Pods from an in-process fake API server (support/kube_api.rs, the real
//! list/watch wire protocol) and routes real requests to real upstreams.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::serve::{ServeOptions, Server, StartError};
use switchyard::source::kubernetes::{KubeError, KubeOptions};

use support::e2e_helpers::flag_tap;
use support::kube_api::{FakeApiServer, web_service};
use support::{Client, ProxyProcess, TestProxy, Upstream};

const HOST: &str = "web";

fn pod(name: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": "web", "version": version, "pod-template-hash": "6d4cf56db6"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "web:1",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
}

/// One slice per pod: every fake pod is an upstream on 127.0.0.1 with its own port, and a
/// slice's ports apply to all its endpoints. `ready: None` scales the slice to no endpoints.
fn slice(pod: &str, port: u16, ready: Option<bool>) -> Value {
    let endpoints = match ready {
        None => Value::Null,
        Some(ready) => json!([{"addresses": ["127.0.0.1"],
            "conditions": {"ready": ready, "serving": ready, "terminating": !ready},
            "nodeName": "node-1", "zone": "zone-a",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod,
                "uid": "5b3c8a8e-0000-4000-8000-000000000001"}}]),
    };
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("web-{pod}"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                "uid": "5b3c8a8e-0000-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true}]},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}]})
}

fn virtual_service(v1: u32, v2: u32) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web", "subset": "v1"}, "weight": v1},
            {"destination": {"host": "web", "subset": "v2"}, "weight": v2}]}]}})
}

fn destination_rule() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"host": "web", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]}})
}

struct Mesh {
    api: FakeApiServer,
    proxy: TestProxy,
    v2: [Upstream; 2],
    _v1: Upstream,
}

/// The fake server pages lists by 2, so the three Pods and three EndpointSlices each take two
/// pages (`continue`).
async fn mesh() -> Mesh {
    mesh_watching(Vec::new()).await
}

/// [`mesh`], the proxy watching only `namespaces` (empty: all).
async fn mesh_watching(namespaces: Vec<String>) -> Mesh {
    mesh_on(FakeApiServer::start(2).await, namespaces).await
}

/// [`mesh`] on a given fake API server.
async fn mesh_on(api: FakeApiServer, namespaces: Vec<String>) -> Mesh {
    let v1 = Upstream::start("v1").await;
    let v2 = [Upstream::start("v2").await, Upstream::start("v2").await];
    api.apply(web_service());
    api.apply(pod("web-v1-a", "v1"));
    api.apply(slice("web-v1-a", v1.addr.port(), Some(true)));
    for (name, up) in ["web-v2-a", "web-v2-b"].iter().zip(&v2) {
        api.apply(pod(name, "v2"));
        api.apply(slice(name, up.addr.port(), Some(true)));
    }
    api.apply(destination_rule());
    api.apply(virtual_service(100, 0));
    let proxy = TestProxy::start_kubernetes(KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        debounce: Duration::from_millis(20),
        sync_timeout: Duration::from_secs(10),
        namespaces,
    })
    .await;
    Mesh {
        api,
        proxy,
        v2,
        _v1: v1,
    }
}

/// Sends requests until one answers `body`; how long that took.
async fn until_body(client: &mut Client, body: &str, within: Duration) -> Duration {
    until_body_at(client, HOST, body, within).await
}

/// [`until_body`] for requests to `host`.
async fn until_body_at(client: &mut Client, host: &str, body: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = client.get(host, "/").await;
        if r.text() == body {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no {body:?} within {within:?}; last answer {} {:?}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `/config_dump` lists `from` (`Kind/namespace/name@resourceVersion`) as serving.
async fn until_serving(proxy: &TestProxy, from: &str) {
    let start = Instant::now();
    loop {
        let dump = support::e2e_helpers::admin_get(proxy, "/config_dump")
            .await
            .json();
        if dump["resources"].to_string().contains(from) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{from} never served: {}",
            dump["resources"]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_routes_traffic_through_paged_lists() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    for _ in 0..20 {
        let r = c.get(HOST, "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "v1"));
    }
    let (lists, watches, _) = m.api.counts();
    // Seven reflectors, two of which needed a second page.
    assert!(lists >= 9, "lists {lists}");
    assert!(watches >= 7, "watches {watches}");
    // Whole Pods (a selected Pod's IP and readiness are not in its metadata).
    assert!(
        m.api.metadata_only().is_empty(),
        "{:?}",
        m.api.metadata_only()
    );
    let dump = support::e2e_helpers::admin_get(&m.proxy, "/config_dump")
        .await
        .json();
    assert_eq!(dump["last_reload"]["result"], "accepted", "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_reaches_traffic_within_a_second() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    let mut took = Vec::new();
    for i in 0..50 {
        let (weights, want) = if i % 2 == 0 {
            ((0, 100), "v2")
        } else {
            ((100, 0), "v1")
        };
        m.api.apply(virtual_service(weights.0, weights.1));
        took.push(until_body(&mut c, want, Duration::from_secs(5)).await);
    }
    took.sort();
    let p50 = took[took.len() / 2];
    let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
    println!(
        "weight change → traffic over {} changes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_endpoints_scaled_to_zero_answer_503_uh_and_come_back() {
    let m = mesh().await;
    let tap = flag_tap(&m.proxy).await;
    let mut c = Client::h1(tap).await;
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;

    // One pod terminating (not ready), the other's slice emptied.
    m.api
        .apply(slice("web-v2-a", m.v2[0].addr.port(), Some(false)));
    m.api.apply(slice("web-v2-b", m.v2[1].addr.port(), None));
    until_body(&mut c, "no healthy upstream", Duration::from_secs(5)).await;
    let r = c.get(HOST, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-test-response-flag"), Some("UH"));

    m.api
        .apply(slice("web-v2-a", m.v2[0].addr.port(), Some(true)));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;
    let before = m.v2[1].requests();
    m.api
        .apply(slice("web-v2-b", m.v2[1].addr.port(), Some(true)));
    // Both v2 pods serve again.
    let start = Instant::now();
    while m.v2[1].requests() == before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "web-v2-b never came back"
        );
        assert_eq!(c.get(HOST, "/").await.text(), "v2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_mid_stream_loses_no_update() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    let (_, watches, _) = m.api.counts();
    m.api.cut_watches();
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(10)).await;
    let (_, after, _) = m.api.counts();
    assert!(
        after > watches,
        "no rewatch after the cut ({watches} → {after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_relists_and_loses_no_update() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    let (lists, _, _) = m.api.counts();
    // The change lands while every watch is down and history is compacted past it: only a
    // relist can bring it.
    m.api.cut_and_compact_after(vec![virtual_service(0, 100)]);
    until_body(&mut c, "v2", Duration::from_secs(10)).await;
    let (relists, _, gone) = m.api.counts();
    assert!(gone >= 1, "no 410 was answered");
    assert!(relists > lists, "no relist after the 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_virtual_service_is_refused_while_the_rest_keeps_updating() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    let served = m.api.apply(virtual_service(100, 0));
    let served = format!("VirtualService/default/web@{served}");
    until_serving(&m.proxy, &served).await;
    // A misspelt field: Istio's schema would reject it, and ignoring it would route wrongly.
    let mut bad = virtual_service(0, 100);
    bad["spec"]["http"][0]["rout"] = bad["spec"]["http"][0]["route"].take();
    m.api.apply(bad);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        assert_eq!(
            c.get(HOST, "/").await.text(),
            "v1",
            "the refused edit took effect"
        );
    }
    let dump = support::e2e_helpers::admin_get(&m.proxy, "/config_dump")
        .await
        .json();
    let refused = m.proxy.reloader.reloads_refused();
    assert_eq!(refused, 0, "the whole config was refused: {dump}");
    // `/config_dump` names the version still serving: the last good one.
    assert!(
        dump["resources"].to_string().contains(&served),
        "{served} not serving: {}",
        dump["resources"]
    );

    // The rest keeps updating: the v2 pods leave, and v1 keeps serving through the old routes.
    let before = m.proxy.reloader.version();
    m.api.apply(slice("web-v2-b", m.v2[1].addr.port(), None));
    let start = Instant::now();
    while m.proxy.reloader.version() == before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reload after the slice change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Fixing the object applies it.
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;
}

/// `switchyard run --source kubernetes --kubeconfig PATH`, the binary: it serves what the API
/// server holds, follows a change, and logs a refused object by kind, namespace, name,
/// resourceVersion and field path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_from_the_api_server_and_names_a_refused_object() {
    let m = mesh().await;
    let kubeconfig = m.api.kubeconfig();
    let p = ProxyProcess::spawn(
        env!("CARGO_BIN_EXE_switchyard"),
        &[
            "run",
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut c = Client::h1(p.proxy.expect("proxy address in the log")).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;

    let mut bad = virtual_service(100, 0);
    bad["spec"]["http"][0]["rout"] = bad["spec"]["http"][0]["route"].take();
    let rv = m.api.apply(bad);
    let line = format!(
        "VirtualService/default/web@{rv}: Error IST0106 VirtualService/default/web: spec.http[0].rout: unknown field \"rout\""
    );
    assert!(
        p.wait_for_stderr(&line, Duration::from_secs(5)).await,
        "no {line:?} in the log:\n{}",
        p.stderr_text()
    );
    assert_eq!(c.get(HOST, "/").await.text(), "v2");
}

/// The example RBAC (deploy/kubernetes/api-source/rbac.yaml, for `--watch-namespace` set to
/// the pod's namespace) grants get/list/watch on exactly the collections the source asks the
/// API server for, namespace by namespace: no more, and nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_rbac_grants_exactly_what_is_watched() {
    let m = mesh_watching(vec!["default".to_string()]).await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    let asked = m.api.requested();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/api-source/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("rbac.yaml");
    let mut granted = std::collections::BTreeSet::new();
    let mut creates = std::collections::BTreeSet::new();
    for doc in text.split("\n---\n") {
        let role: Value = yaml_serde::from_str(doc).expect("rbac.yaml document");
        // The rollout controller's roles are checked by tests/rollout_kubernetes.rs.
        let controller = role["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("switchyard-rollouts"));
        if role["kind"] != "Role" || controller {
            continue;
        }
        let ns = role["metadata"]["namespace"].as_str().expect("namespace");
        for rule in role["rules"].as_array().expect("rules") {
            // The one write: Events on refused objects (tested with them below).
            if rule["verbs"] == json!(["create"]) {
                assert_eq!(rule["apiGroups"], json!([""]), "{rule}");
                assert_eq!(rule["resources"], json!(["events"]), "{rule}");
                creates.insert(ns.to_string());
                continue;
            }
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]), "{rule}");
            for group in rule["apiGroups"].as_array().expect("apiGroups") {
                for r in rule["resources"].as_array().expect("resources") {
                    granted.insert(format!(
                        "{ns} {}/{}",
                        group.as_str().unwrap_or(""),
                        r.as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    assert_eq!(asked, granted);
    // Events go to the refused object's namespace: any the proxy reads Istio objects from.
    let read: std::collections::BTreeSet<String> = asked
        .iter()
        .filter_map(|a| a.split_once(' ').map(|(ns, _)| ns.to_string()))
        .collect();
    assert_eq!(creates, read);
}

/// A refused object gets one Warning Event on it (core/v1, `involvedObject` with its uid and
/// the refused resourceVersion, the field path in the message), even with two sidecars
/// refusing it: the Event's name is a hash of the version and the findings, so the second
/// create is AlreadyExists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_object_gets_one_warning_event_from_any_number_of_sidecars() {
    let m = mesh_watching(vec!["default".to_string()]).await;
    let _second = TestProxy::start_kubernetes(KubeOptions {
        kubeconfig: Some(m.api.kubeconfig()),
        debounce: Duration::from_millis(20),
        sync_timeout: Duration::from_secs(10),
        namespaces: vec!["default".to_string()],
    })
    .await;
    let mut bad = virtual_service(0, 100);
    bad["spec"]["http"][0]["rout"] = bad["spec"]["http"][0]["route"].take();
    let rv = m.api.apply(bad);
    let start = Instant::now();
    while m.api.objects("Event").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5), "no Event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both proxies have had their chance.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = m.api.objects("Event");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(m.api.already_exists(), 1, "the second sidecar's create");
    let e = &events[0];
    let vs = m.api.get("VirtualService", "default", "web").expect("vs");
    assert_eq!(e["involvedObject"]["apiVersion"], "networking.istio.io/v1");
    assert_eq!(e["involvedObject"]["kind"], "VirtualService");
    assert_eq!(e["involvedObject"]["namespace"], "default");
    assert_eq!(e["involvedObject"]["name"], "web");
    assert_eq!(e["involvedObject"]["uid"], vs["metadata"]["uid"]);
    assert_eq!(e["involvedObject"]["resourceVersion"], rv.to_string());
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "ConfigRefused");
    let message = e["message"].as_str().unwrap_or("");
    assert!(message.contains("spec.http[0].rout"), "{message}");
    assert!(m.api.verbs().contains("create default /events"));
    eprintln!("Event: {message}");
}

/// Over TLS (the API server's certificate checked against the kubeconfig's
/// `certificate-authority`) with a bearer token, as a service account talks to a real API
/// server; a wrong token is refused and the proxy does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_bearer_token_reach_the_api_server() {
    let pki = support::tls::Pki::new();
    let api = FakeApiServer::start_tls(2, &pki, "s3cr3t-token").await;
    let wrong = api.kubeconfig_with_token("not-the-token");
    let m = mesh_on(api, Vec::new()).await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;
    assert_eq!(m.api.unauthorized(), 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeOptions::new(dir.path());
    serve.kubernetes = Some(KubeOptions {
        kubeconfig: Some(wrong),
        sync_timeout: Duration::from_millis(1500),
        ..KubeOptions::default()
    });
    assert!(
        matches!(
            Server::start(serve).await,
            Err(StartError::Kubernetes(KubeError::SyncTimeout(..)))
        ),
        "started with a wrong token"
    );
    assert!(m.api.unauthorized() > 0);
}

/// A kind the API server does not serve (its CRD not installed) stops `run` from starting,
/// and the error names what never listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_that_never_lists_is_named_when_start_gives_up() {
    let api = FakeApiServer::start(100).await;
    api.uninstall("WorkloadEntry");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeOptions::new(dir.path());
    serve.kubernetes = Some(KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        sync_timeout: Duration::from_millis(1500),
        ..KubeOptions::default()
    });
    match Server::start(serve).await {
        Err(StartError::Kubernetes(KubeError::SyncTimeout(_, pending))) => {
            assert_eq!(pending, ["WorkloadEntry in all namespaces"]);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started without WorkloadEntries"),
    }
}

/// The Istio kinds each at the version they are read at, and config_dump's apiVersion of
/// the VirtualService served.
async fn read_at(m: &Mesh) -> (Vec<String>, String) {
    let dump = support::e2e_helpers::admin_get(&m.proxy, "/config_dump")
        .await
        .json();
    let vs = dump["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["from"]
                .as_str()
                .is_some_and(|f| f.starts_with("VirtualService/"))
        })
        .map(|r| r["api_version"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (m.api.istio_asked().into_iter().collect(), vs)
}

/// A control plane older than Istio 1.22 serves networking.istio.io at v1beta1 and
/// v1alpha3, not v1: discovery finds v1beta1, every kind is watched there, and the proxy
/// syncs, routes, and follows a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_before_1_22_is_read_at_v1beta1() {
    let api = FakeApiServer::start(2).await;
    api.serve_istio_versions(&["v1beta1", "v1alpha3"]);
    let m = mesh_on(api, Vec::new()).await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    m.api.apply(virtual_service(0, 100));
    until_body(&mut c, "v2", Duration::from_secs(5)).await;
    let (asked, vs) = read_at(&m).await;
    assert_eq!(
        asked,
        [
            "v1beta1/destinationrules",
            "v1beta1/serviceentries",
            "v1beta1/virtualservices",
            "v1beta1/workloadentries"
        ]
    );
    assert_eq!(vs, "networking.istio.io/v1beta1");
}

/// Served at all three versions (Istio 1.22 on), every kind is read at v1 and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_is_read_when_served() {
    let m = mesh().await;
    let mut c = Client::h1(m.proxy.addr).await;
    until_body(&mut c, "v1", Duration::from_secs(5)).await;
    let (asked, vs) = read_at(&m).await;
    assert_eq!(
        asked,
        [
            "v1/destinationrules",
            "v1/serviceentries",
            "v1/virtualservices",
            "v1/workloadentries"
        ]
    );
    assert_eq!(vs, "networking.istio.io/v1");
}

/// No Istio at all (networking.istio.io not served): `run` gives up after the sync timeout
/// and says which group was missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_istio_group_is_named_when_start_gives_up() {
    let api = FakeApiServer::start(100).await;
    api.serve_istio_versions(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeOptions::new(dir.path());
    serve.kubernetes = Some(KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        sync_timeout: Duration::from_millis(1500),
        ..KubeOptions::default()
    });
    let start = Instant::now();
    match Server::start(serve).await {
        Err(StartError::Kubernetes(e @ KubeError::GroupNotServed { .. })) => {
            assert!(e.to_string().contains("networking.istio.io"), "{e}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started without Istio"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Nothing was watched: the group's absence is found before any reflector starts.
    assert!(api.requested().is_empty(), "{:?}", api.requested());
}

/// A Pod as the kubelet reports it: Running, with IP 127.0.0.1 (its upstream), and the
/// Ready condition `ready`; `named_port`: a container port named `http` (else unnamed).
fn api_pod(name: &str, version: &str, port: u16, named_port: bool, ready: bool) -> Value {
    let mut container_port = json!({"containerPort": port, "protocol": "TCP"});
    if named_port {
        container_port["name"] = json!("http");
    }
    let ready = if ready { "True" } else { "False" };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": "api", "version": version}},
        "spec": {"nodeName": "node-1",
            "containers": [{"name": "api", "image": "api:1", "ports": [container_port]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
                {"type": "PodScheduled", "status": "True"}]}})
}

/// A ServiceEntry whose `workloadSelector` selects Pods (no Service, no EndpointSlice): the
/// ready Pods labelled `app: api` in its namespace are its endpoints, with their labels, so
/// a DestinationRule's subsets split them by `version`. The endpoint port is the Pod's
/// container port named as the ServiceEntry port (`http`), else the port's `targetPort`:
/// the v1 Pod names its port, the v2 Pod does not and is reached at `targetPort`. A Pod
/// going unready leaves (503 UH), and comes back when Ready again. Pods not selected (other
/// labels, another namespace) are not made endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_workload_selector_routes_to_ready_pods_by_subset() {
    const API: &str = "api.internal";
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let other = Upstream::start("other").await;
    let api = FakeApiServer::start(2).await;
    api.apply(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"hosts": [API], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP",
                "targetPort": v2.addr.port()}],
            "workloadSelector": {"labels": {"app": "api"}}}}),
    );
    api.apply(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"host": API, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]}}),
    );
    let route = |v1: u32, v2: u32| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"hosts": [API], "http": [{"route": [
                {"destination": {"host": API, "subset": "v1"}, "weight": v1},
                {"destination": {"host": API, "subset": "v2"}, "weight": v2}]}]}})
    };
    api.apply(route(100, 0));
    api.apply(api_pod("api-v1", "v1", v1.addr.port(), true, true));
    api.apply(api_pod("api-v2", "v2", v2.addr.port(), false, true));
    // Labelled v1 but not `app: api`, and `app: api` in another namespace: neither selected.
    let mut unselected = api_pod("web-v1", "v1", other.addr.port(), true, true);
    unselected["metadata"]["labels"]["app"] = json!("web");
    api.apply(unselected);
    let mut elsewhere = api_pod("api-v1-x", "v1", other.addr.port(), true, true);
    elsewhere["metadata"]["namespace"] = json!("other");
    api.apply(elsewhere);
    let proxy = TestProxy::start_kubernetes(KubeOptions {
        kubeconfig: Some(api.kubeconfig()),
        debounce: Duration::from_millis(20),
        sync_timeout: Duration::from_secs(10),
        namespaces: Vec::new(),
    })
    .await;
    let tap = flag_tap(&proxy).await;
    let mut c = Client::h1(tap).await;
    until_body_at(&mut c, API, "v1", Duration::from_secs(5)).await;
    for _ in 0..20 {
        assert_eq!(c.get(API, "/").await.text(), "v1");
    }
    api.apply(route(0, 100));
    until_body_at(&mut c, API, "v2", Duration::from_secs(5)).await;
    for _ in 0..20 {
        assert_eq!(c.get(API, "/").await.text(), "v2");
    }
    assert_eq!(other.requests(), 0);
    let dump = support::e2e_helpers::admin_get(&proxy, "/config_dump")
        .await
        .json();
    let resources = dump["resources"].to_string();
    assert!(resources.contains("Pod/default/api-v1@"), "{resources}");
    assert!(resources.contains("Pod/default/api-v2@"), "{resources}");
    assert!(!resources.contains("web-v1"), "{resources}");
    assert!(!resources.contains("api-v1-x"), "{resources}");

    // v2 unready: no endpoint left in the subset.
    api.apply(api_pod("api-v2", "v2", v2.addr.port(), false, false));
    until_body_at(&mut c, API, "no healthy upstream", Duration::from_secs(5)).await;
    let r = c.get(API, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-test-response-flag"), Some("UH"));
    let served = v2.requests();
    api.apply(api_pod("api-v2", "v2", v2.addr.port(), false, true));
    until_body_at(&mut c, API, "v2", Duration::from_secs(5)).await;
    assert!(v2.requests() > served);
}

/// The API server gone for 30 s: traffic goes on with no failed request and readiness stays
/// up; a change made meanwhile applies once the server is back (the watches' back-off has
/// grown towards its 30 s cap by then). Ignored by default (it takes a minute); `.ci/run`
/// runs it in a serial step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn the_api_server_down_for_30s_fails_no_request() {
    let mut m = mesh().await;
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = m.proxy.addr;
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = Client::h1(proxy).await;
            let (mut total, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(HOST, "/").await;
                total += 1;
                if r.status != 200 {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (total, failed)
        })
    };
    m.api.stop().await;
    // Written while the proxy cannot see it.
    m.api.apply(virtual_service(0, 100));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ready = support::e2e_helpers::admin_get(&m.proxy, "/ready").await;
    assert_eq!(ready.status, 200, "readiness went down with the API server");
    let mut c = Client::h1(m.proxy.addr).await;
    assert_eq!(c.get(HOST, "/").await.text(), "v1");

    m.api.restart().await;
    let back = until_body(&mut c, "v2", Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let (total, failed) = traffic.await.expect("traffic task");
    println!(
        "API server back: the change served after {back:?}; {total} requests, {failed} failed"
    );
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
    assert!(total > 1000, "only {total} requests");
}
