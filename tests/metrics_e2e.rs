//! Istio's standard metrics, Envoy's cluster stats, `/stats/subsets` and the access log,
//! scraped from the real proxy after a known mix of traffic; then Flagger's own PromQL
//! queries, verbatim, evaluated against two scrapes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::e2e_helpers::admin_get;
use support::*;
use switchyard::metrics::Reporter;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((k, after)) = rest.split_once("=\"") {
            let mut v = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(if n == 'n' { '\n' } else { n });
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            map.insert(k.trim_start_matches(',').to_string(), v);
            rest = &after[end..];
        }
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value: value.parse().expect("numeric sample value"),
        });
    }
    out
}

/// A label matcher of a PromQL selector: `=`, `!=`, `=~`, `!~` (regexes fully anchored).
enum Matcher {
    Eq(String, String),
    Re(String, regex::Regex, bool),
}

/// Parses `name{a="x",b=~"y",c!~"5.*"}`.
fn selector(sel: &str) -> (String, Vec<Matcher>) {
    let (name, body) = sel.split_once('{').expect("selector has labels");
    let body = body.trim_end_matches('}');
    let mut ms = Vec::new();
    for part in body.split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let (k, op, v) = ["!~", "=~", "!=", "="]
            .iter()
            .find_map(|op| part.split_once(op).map(|(k, v)| (k, *op, v)))
            .expect("label matcher");
        let v = v.trim_matches('"').to_string();
        ms.push(match op {
            "=" => Matcher::Eq(k.to_string(), v),
            "=~" | "!~" => Matcher::Re(
                k.to_string(),
                regex::Regex::new(&format!("^(?:{v})$")).expect("selector regex"),
                op == "!~",
            ),
            _ => unreachable!("!= is not used by Flagger's queries"),
        });
    }
    (name.trim().to_string(), ms)
}

fn matches(s: &Sample, name: &str, ms: &[Matcher]) -> bool {
    s.name == name
        && ms.iter().all(|m| match m {
            Matcher::Eq(k, v) => s.labels.get(k).map(String::as_str).unwrap_or("") == v,
            Matcher::Re(k, re, neg) => {
                re.is_match(s.labels.get(k).map(String::as_str).unwrap_or("")) != *neg
            }
        })
}

/// `sum(rate(SEL[i]))` over two scrapes `dt` seconds apart.
fn sum_rate(before: &[Sample], after: &[Sample], sel: &str, dt: f64) -> f64 {
    let (name, ms) = selector(sel);
    let key = |s: &Sample| format!("{:?}", s.labels);
    let old: BTreeMap<String, f64> = before
        .iter()
        .filter(|s| matches(s, &name, &ms))
        .map(|s| (key(s), s.value))
        .collect();
    after
        .iter()
        .filter(|s| matches(s, &name, &ms))
        .map(|s| (s.value - old.get(&key(s)).copied().unwrap_or(0.0)) / dt)
        .sum()
}

/// `histogram_quantile(q, sum(rate(SEL[i])) by (le))`, with Prometheus' interpolation.
fn histogram_quantile(q: f64, before: &[Sample], after: &[Sample], sel: &str, dt: f64) -> f64 {
    let (name, ms) = selector(sel);
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    for s in after.iter().filter(|s| matches(s, &name, &ms)) {
        let le = s.labels.get("le").cloned().expect("bucket has le");
        let prev = before
            .iter()
            .find(|b| b.name == s.name && b.labels == s.labels)
            .map_or(0.0, |b| b.value);
        *by_le.entry(le).or_default() += (s.value - prev) / dt;
    }
    let mut buckets: Vec<(f64, f64)> = by_le
        .into_iter()
        .map(|(le, v)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                },
                v,
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            return prev.0 + (le - prev.0) * (rank - prev.1) / (count - prev.1);
        }
        prev = (le, count);
    }
    f64::NAN
}

fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

async fn scrape(p: &TestProxy) -> Vec<Sample> {
    let r = admin_get(p, "/stats/prometheus").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    parse_exposition(&r.text())
}

fn requests_total(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "istio_requests_total")
        .map(|s| s.value)
        .sum()
}

/// A scrape once `istio_requests_total` has counted `at_least` requests (3 s bound): a
/// request's record is written when both of its bodies are done, a moment after the client
/// has its response.
async fn scrape_counting(p: &TestProxy, at_least: f64) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let s = scrape(p).await;
        if requests_total(&s) >= at_least || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mix_config(
    ok: std::net::SocketAddr,
    failing: std::net::SocketAddr,
    dead: std::net::SocketAddr,
) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: {okip}, ports: {{http: {okport}}}, labels: {{app: web, version: v1}}}}
  - {{address: {fip}, ports: {{http: {fport}}}, labels: {{app: web, version: v2}}}}
  - {{address: {dip}, ports: {{http: {dport}}}, labels: {{app: web, version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: shop}}
spec:
  host: web
  subsets:
  - {{name: stable, labels: {{version: v1}}}}
  - {{name: canary, labels: {{version: v2}}}}
  - {{name: dead, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web]
  http:
  - name: canary
    match: [{{headers: {{x-canary: {{exact: \"1\"}}}}}}]
    route: [{{destination: {{host: web, subset: canary}}}}]
  - name: dead
    match: [{{headers: {{x-dead: {{exact: \"1\"}}}}}}]
    route: [{{destination: {{host: web, subset: dead}}}}]
  - name: api
    match: [{{uri: {{prefix: /api}}}}]
    route: [{{destination: {{host: web, subset: stable}}}}]
",
        okip = ok.ip(),
        okport = ok.port(),
        fip = failing.ip(),
        fport = failing.port(),
        dip = dead.ip(),
        dport = dead.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_per_label_set_after_a_known_mix() {
    let ok = Upstream::start("v1").await;
    let failing = Upstream::start("v2").await;
    let dead = closed_port();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut identity = switchyard::ProxyIdentity {
        namespace: "shop".into(),
        workload: "frontend".into(),
        ..Default::default()
    };
    identity.labels.insert("app".into(), "frontend".into());
    identity.labels.insert("version".into(), "v7".into());
    let p = TestProxy::start_with(
        &mix_config(ok.addr, failing.addr, dead),
        ProxyOptions {
            identity,
            access_log: Some((
                log.path().to_path_buf(),
                switchyard::access_log::Format::Json,
            )),
            ..Default::default()
        },
    )
    .await;
    let mut h1 = Client::h1(p.addr).await;
    let mut h2 = Client::h2(p.addr).await;
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut h1 } else { &mut h2 };
        assert_eq!(c.get("web", "/api/items").await.status, 200);
    }
    for _ in 0..5 {
        let r = h1
            .request("GET", "web", "/status/503", &[("x-canary", "1")])
            .await;
        assert_eq!(r.status, 503);
    }
    for _ in 0..2 {
        assert_eq!(h1.get("web", "/nothing").await.status, 404);
    }
    let r = h1.request("GET", "web", "/", &[("x-dead", "1")]).await;
    assert_eq!(r.status, 503);

    let s = scrape_counting(&p, 18.0).await;
    let base = [
        ("reporter", "source"),
        ("source_workload", "frontend"),
        ("source_workload_namespace", "shop"),
        ("source_app", "frontend"),
        ("source_version", "v7"),
        ("destination_service", "web.shop.svc.cluster.local"),
        ("destination_service_name", "web"),
        ("destination_service_namespace", "shop"),
    ];
    let count = |extra: &[(&str, &str)]| -> f64 {
        let mut want: Vec<(&str, &str)> = base.to_vec();
        want.extend_from_slice(extra);
        find(&s, "istio_requests_total", &want)
            .iter()
            .map(|x| x.value)
            .sum()
    };
    assert_eq!(
        count(&[
            ("response_code", "200"),
            ("destination_subset", "stable"),
            ("destination_workload", "web-v1"),
            ("destination_version", "v1"),
            ("response_flags", "-"),
            ("request_protocol", "http")
        ]),
        10.0
    );
    assert_eq!(
        count(&[
            ("response_code", "503"),
            ("destination_subset", "canary"),
            ("destination_workload", "web-v2"),
            ("response_flags", "-")
        ]),
        5.0
    );
    assert_eq!(
        count(&[("response_code", "404"), ("response_flags", "NR")]),
        2.0
    );
    assert_eq!(
        count(&[
            ("response_code", "503"),
            ("response_flags", "UF,URX"),
            ("destination_subset", "dead")
        ]),
        1.0
    );
    assert_eq!(count(&[]), 18.0, "no other series for this service");
    // Every Istio label is present, in Istio's order, on every series.
    let first = find(&s, "istio_requests_total", &[]);
    assert!(!first.is_empty());
    let want_labels = [
        "connection_security_policy",
        "destination_app",
        "destination_canonical_revision",
        "destination_canonical_service",
        "destination_cluster",
        "destination_principal",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_subset",
        "destination_version",
        "destination_workload",
        "destination_workload_namespace",
        "grpc_response_status",
        "reporter",
        "request_protocol",
        "response_code",
        "response_flags",
        "source_app",
        "source_canonical_revision",
        "source_canonical_service",
        "source_cluster",
        "source_principal",
        "source_version",
        "source_workload",
        "source_workload_namespace",
    ];
    for sample in first {
        assert_eq!(
            sample.labels.keys().map(String::as_str).collect::<Vec<_>>(),
            want_labels
        );
    }
    // Histograms: one observation per request, Envoy's buckets.
    let dur: f64 = find(
        &s,
        "istio_request_duration_milliseconds_count",
        &[("destination_subset", "stable")],
    )
    .iter()
    .map(|x| x.value)
    .sum();
    assert_eq!(dur, 10.0);
    let bytes_sum: f64 = find(
        &s,
        "istio_response_bytes_sum",
        &[("destination_subset", "stable")],
    )
    .iter()
    .map(|x| x.value)
    .sum();
    assert_eq!(bytes_sum, 20.0, "ten bodies of \"v1\"");
    assert!(
        !find(
            &s,
            "istio_request_duration_milliseconds_bucket",
            &[("le", "3600000")]
        )
        .is_empty()
    );
    // Envoy cluster stats in Envoy's names, and our own.
    let cluster = |name: &str, c: &str| {
        find(&s, name, &[("cluster_name", c)])
            .first()
            .map(|x| x.value)
    };
    assert_eq!(
        cluster(
            "envoy_cluster_upstream_rq_retry",
            "outbound|80|dead|web.shop.svc.cluster.local"
        ),
        Some(2.0)
    );
    assert_eq!(
        cluster(
            "envoy_cluster_upstream_cx_connect_fail",
            "outbound|80|dead|web.shop.svc.cluster.local"
        ),
        Some(3.0)
    );
    assert_eq!(
        cluster(
            "envoy_cluster_upstream_rq_5xx",
            "outbound|80|canary|web.shop.svc.cluster.local"
        ),
        Some(5.0)
    );
    assert!(
        cluster(
            "envoy_cluster_upstream_cx_total",
            "outbound|80|stable|web.shop.svc.cluster.local"
        )
        .is_some_and(|v| (1.0..=3.0).contains(&v))
    );
    let decisions: f64 = find(&s, "switchyard_route_decisions_total", &[("route", "api")])
        .iter()
        .map(|x| x.value)
        .sum();
    assert_eq!(decisions, 10.0);
    assert_eq!(find(&s, "istio_build", &[("component", "proxy")]).len(), 1);

    // /stats/subsets on the admin listener.
    let subsets = admin_get(&p, "/stats/subsets").await.json();
    let rows = subsets["subsets"].as_array().expect("rows");
    let canary = rows
        .iter()
        .find(|r| r["subset"] == "canary")
        .expect("canary row");
    assert_eq!(canary["since_start"]["requests"], 5);
    assert_eq!(canary["since_start"]["success_rate"], 0.0);
    let stable = rows
        .iter()
        .find(|r| r["subset"] == "stable")
        .expect("stable row");
    assert_eq!(stable["last_1m"]["requests"], 10);
    assert_eq!(stable["last_1m"]["success_rate"], 1.0);
    assert!(stable["last_1m"]["p99_ms"].as_f64().is_some());

    // The access log: one JSON line per request, with the flag and the cluster.
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(log.path())
            .expect("read log")
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= 18 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 18, "{lines:?}");
    let uf: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &serde_json::Value| v["response_flags"] == "UF,URX")
        .collect();
    assert_eq!(uf.len(), 1);
    assert_eq!(
        uf[0]["upstream_cluster"],
        "outbound|80|dead|web.shop.svc.cluster.local"
    );
    assert_eq!(uf[0]["response_code"], 503);
    assert_eq!(uf[0]["route_name"], "dead");
    // Envoy's details carry the transport failure reason, spaces made underscores.
    assert_eq!(
        uf[0]["response_code_details"],
        "upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_text_access_log_line() {
    let up = Upstream::start("v1").await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let p = TestProxy::start_with(
        &format!("{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  http:\n  - name: all\n    route: [{{destination: {{host: web, subset: v1}}}}]\n", service_yaml("web", &[("v1", up.addr)])),
        ProxyOptions {
            access_log: Some((log.path().to_path_buf(), switchyard::access_log::Format::Envoy)),
            ..Default::default()
        },
    )
    .await;
    let mut c = Client::h1(p.addr).await;
    c.request(
        "GET",
        "web",
        "/hello?x=1",
        &[("user-agent", "test-agent"), ("x-request-id", "rid-1")],
    )
    .await;
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(log.path()).expect("read log");
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = text.lines().next().expect("one line");
    assert!(line.starts_with('['), "{line}");
    assert!(
        line.contains("] \"GET /hello?x=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 2 "),
        "{line}"
    );
    assert!(line.contains("\"test-agent\" \"rid-1\" \"web\""), "{line}");
    assert!(
        line.contains(&format!(
            "\"{}\" outbound|80|v1|web.default.svc.cluster.local ",
            up.addr
        )),
        "{line}"
    );
    assert!(line.ends_with(" all"), "{line}");
}

/// Flagger's Istio checks, verbatim from fluxcd/flagger pkg/metrics/observers/istio.go, with
/// its template variables filled as Flagger fills them.
const FLAGGER_SUCCESS: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;
const FLAGGER_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;

fn fill_flagger(q: &str, target: &str) -> String {
    q.replace("{{ namespace }}", "test")
        .replace("{{ target }}", target)
        .replace("{{ interval }}", "1m")
}

/// The selectors inside `sum(rate(SEL[1m]))`, in order.
fn selectors(q: &str) -> Vec<String> {
    q.split("rate(")
        .skip(1)
        .map(|p| p.split("[1m]").next().expect("range").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_queries_answer_per_workload_with_reporter_destination() {
    let primary = Upstream::start("primary").await;
    let canary = Upstream::start("canary").await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: podinfo-primary, namespace: test}}
spec: {{address: {pip}, labels: {{app: podinfo, role: primary}}, ports: {{http: {pport}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: podinfo, namespace: test}}
spec: {{address: {cip}, labels: {{app: podinfo, role: canary}}, ports: {{http: {cport}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: podinfo, namespace: test}}
spec:
  hosts: [podinfo.test.svc.cluster.local]
  ports: [{{number: 9898, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: podinfo}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: podinfo, namespace: test}}
spec:
  host: podinfo
  subsets:
  - {{name: primary, labels: {{role: primary}}}}
  - {{name: canary, labels: {{role: canary}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: podinfo, namespace: test}}
spec:
  hosts: [podinfo]
  http:
  - match: [{{headers: {{x-canary: {{exact: \"1\"}}}}}}]
    route: [{{destination: {{host: podinfo, subset: canary}}}}]
  - route: [{{destination: {{host: podinfo, subset: primary}}}}]
",
        pip = primary.addr.ip(),
        pport = primary.addr.port(),
        cip = canary.addr.ip(),
        cport = canary.addr.port(),
    );
    let p = TestProxy::start_with(
        &yaml,
        ProxyOptions {
            identity: switchyard::ProxyIdentity {
                namespace: "test".into(),
                workload: "podinfo-sidecar".into(),
                ..Default::default()
            },
            reporter: Reporter::Destination,
            ..Default::default()
        },
    )
    .await;
    let mut c = Client::h1(p.addr).await;
    // Some traffic before the first scrape, so rates need the second one.
    c.get("podinfo", "/").await;
    let before = scrape(&p).await;
    for i in 0..20 {
        // Primary: fast and healthy.
        assert_eq!(c.get("podinfo", "/").await.status, 200);
        // Canary: 120 ms, and one in four answers 500.
        let path = if i % 4 == 0 {
            "/status/500"
        } else {
            "/slow/120"
        };
        c.request("GET", "podinfo", path, &[("x-canary", "1")])
            .await;
    }
    let after = scrape_counting(&p, requests_total(&before) + 40.0).await;
    let dt = 60.0;
    let success = |target: &str| {
        let q = fill_flagger(FLAGGER_SUCCESS, target);
        let sels = selectors(&q);
        assert_eq!(sels.len(), 2, "{q}");
        sum_rate(&before, &after, &sels[0], dt) / sum_rate(&before, &after, &sels[1], dt) * 100.0
    };
    assert!(
        (success("podinfo") - 75.0).abs() < 1e-9,
        "canary success {}",
        success("podinfo")
    );
    assert!(
        (success("podinfo-primary") - 100.0).abs() < 1e-9,
        "primary success {}",
        success("podinfo-primary")
    );
    let p99 = |target: &str| {
        let q = fill_flagger(FLAGGER_DURATION, target);
        let sels = selectors(&q);
        histogram_quantile(0.99, &before, &after, &sels[0], dt)
    };
    let canary_p99 = p99("podinfo");
    assert!(
        (100.0..=250.0).contains(&canary_p99),
        "canary p99 {canary_p99} ms"
    );
    let primary_p99 = p99("podinfo-primary");
    assert!(primary_p99 < 50.0, "primary p99 {primary_p99} ms");
    // Flagger reads reporter="destination" only; we emitted nothing else.
    assert!(find(&after, "istio_requests_total", &[("reporter", "source")]).is_empty());
    assert!(
        find(
            &after,
            "istio_requests_total",
            &[("connection_security_policy", "none")]
        )
        .len()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_is_read_only() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&service_yaml("web", &[("v1", up.addr)])).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr =
        switchyard::metrics::server::spawn(listener, p.metrics.clone(), p.proxy.state.clone())
            .expect("spawn");
    let mut c = Client::h1(p.addr).await;
    assert_eq!(c.get("web", "/").await.status, 200);
    let mut m = Client::h1(addr).await;
    let r = m.get("127.0.0.1", "/stats/prometheus").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("istio_requests_total{reporter=\"source\""),
        "{}",
        r.text()
    );
    assert_eq!(m.get("127.0.0.1", "/healthz/ready").await.status, 200);
    assert_eq!(m.get("127.0.0.1", "/stats/subsets").await.status, 200);
    let r = m.request("POST", "127.0.0.1", "/quitquitquit", &[]).await;
    assert_eq!(r.status, 405, "mutations are not served here");
    assert_eq!(m.get("127.0.0.1", "/config_dump").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_headers_pass_through_untouched() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&service_yaml("web", &[("v1", up.addr)])).await;
    let sent = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("x-request-id", "keep-me"),
    ];
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c.request("GET", "web", "/echo", &sent).await;
        let echo = r.json();
        for (k, v) in sent {
            assert_eq!(echo["headers"][k], serde_json::json!([v]), "{proto:?} {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_counters_and_config_version() {
    let up = Upstream::start("v1").await;
    let good = service_yaml("web", &[("v1", up.addr)]);
    let p = TestProxy::start(&good).await;
    let scrape_value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
    };
    assert!(
        p.rewrite(&format!("{good}\n# a comment changes the hash\n"))
            .await
            .is_ok()
    );
    assert!(p.rewrite("not: [valid").await.is_err());
    let text = admin_get(&p, "/stats/prometheus").await.text();
    assert_eq!(
        scrape_value(&text, "switchyard_config_version "),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        scrape_value(
            &text,
            "switchyard_config_reloads_total{result=\"success\"} "
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape_value(
            &text,
            "switchyard_config_reloads_total{result=\"failure\"} "
        ),
        Some(1.0)
    );
}
