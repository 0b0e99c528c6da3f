//! Metrics in Istio's and Envoy's Prometheus names, built so that a request only touches
//! atomics. Every label set that can be known when a table is compiled (route, cluster,
//! endpoint) is resolved then; the per-response part (status code, flags, gRPC status) picks
//! its series from a small per-endpoint cache keyed by integers, filled on first use.
//!
//! Why not `prometheus-client`: its `Histogram` takes a lock on every observation and its
//! `Family` hashes the label set on every lookup; three histograms per request would mean
//! three locks on the hot path. The series here are plain atomics with pre-rendered label
//! text, and the exposition is written directly in the Prometheus text format (0.0.4), which
//! is what Envoy's `/stats/prometheus` serves.

pub mod histogram;
pub mod istio;
pub mod server;
pub mod window;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use histogram::Histogram;
pub use istio::{IstioSeries, Reporter, SourceLabels};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Envoy's per-cluster counters operators read (istio.io circuit-breaking task), named as
/// Envoy's Prometheus output names them, labelled `cluster_name="outbound|…"`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    /// Pooled connections closed after `idleTimeout` without a request.
    pub upstream_cx_idle_timeout: Counter,
    /// Connections retired after `maxRequestsPerConnection` requests.
    pub upstream_cx_max_requests: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_retry: Counter,
    /// Requests whose body outgrew the buffer limit, so they could no longer be retried or
    /// mirrored (Envoy's name).
    pub retry_or_shadow_abandoned: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_2xx: Counter,
    pub upstream_rq_4xx: Counter,
    pub upstream_rq_5xx: Counter,
    pub outlier_detection_ejections_active: Gauge,
    pub outlier_detection_ejections_total: Counter,
    pub membership_healthy: Gauge,
    pub membership_total: Gauge,
}

impl ClusterStats {
    pub fn record_status(&self, status: u16) {
        match status {
            200..=299 => self.upstream_rq_2xx.inc(),
            400..=499 => self.upstream_rq_4xx.inc(),
            500..=599 => self.upstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

/// Proxy-wide counters of our own.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub config_reloads_success: Counter,
    pub config_reloads_failure: Counter,
    pub config_version: Gauge,
    pub requests_in_flight: Gauge,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_total: Counter,
    /// Connections closed at accept because the listener's `--max-connections` was reached
    /// (Envoy's `downstream_cx_overflow`).
    pub downstream_cx_overflow: Counter,
    /// Connections closed because they moved no bytes for `--stream-idle-timeout`.
    pub downstream_cx_idle_timeout: Counter,
    pub access_log_dropped: Counter,
    pub mirror_sent: Counter,
    pub mirror_dropped: Counter,
}

/// One route's decision counter (`switchyard_route_decisions_total`).
#[derive(Debug, Default)]
pub struct RouteStats {
    pub decisions: Counter,
}

/// `/stats/subsets` rows: (virtual host, route name, subset, cluster).
pub type WindowKey = (String, String, String, String);

/// Every series, keyed by its rendered labels so that a reload that keeps a route, cluster or
/// endpoint keeps counting into the same series. Locked only when a table is compiled, when a
/// new (code, flags) combination first appears, and when scraped.
#[derive(Default)]
pub struct Registry {
    pub proxy: ProxyStats,
    clusters: Mutex<HashMap<String, Arc<ClusterStats>>>,
    routes: Mutex<HashMap<String, Arc<RouteStats>>>,
    istio: Mutex<Vec<Arc<IstioSeries>>>,
    istio_index: Mutex<HashMap<String, Arc<IstioSeries>>>,
    windows: Mutex<HashMap<WindowKey, Arc<window::Window>>>,
    rollouts: Mutex<RolloutSeries>,
    /// Rate-limit buckets by definition (kept across reloads while unchanged) and their
    /// counters by stat prefix.
    rate_buckets: Mutex<HashMap<String, Arc<crate::ratelimit::Bucket>>>,
    rate_stats: Mutex<std::collections::BTreeMap<String, Arc<crate::ratelimit::LimitStats>>>,
    pub source: SourceLabels,
    pub reporter: Reporter,
    pub version: &'static str,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The rollout controller's series (`run --rollouts`): written once per tick or measurement,
/// never on the request path.
#[derive(Default)]
struct RolloutSeries {
    /// rollout → (phase, step, set weight)
    status: std::collections::BTreeMap<String, (String, usize, u32)>,
    /// (rollout, metric, result) → count
    measurements: std::collections::BTreeMap<(String, String, String), u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(source: SourceLabels, reporter: Reporter) -> Registry {
        Registry {
            source,
            reporter,
            version: env!("CARGO_PKG_VERSION"),
            ..Registry::default()
        }
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        lock(&self.clusters)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// `key` is the rendered label text of the route.
    pub fn route(&self, key: String) -> Arc<RouteStats> {
        lock(&self.routes).entry(key).or_default().clone()
    }

    /// The success/latency window of one (virtual host, route, subset, cluster).
    pub fn window(&self, key: WindowKey) -> Arc<window::Window> {
        lock(&self.windows).entry(key).or_default().clone()
    }

    /// Totals of every window whose key passes `keep`, added up.
    pub fn window_totals(&self, keep: impl Fn(&WindowKey) -> bool) -> window::Totals {
        let windows = lock(&self.windows);
        let mut sum = window::Totals::default();
        for (k, w) in windows.iter() {
            if keep(k) {
                sum.add(&w.totals());
            }
        }
        sum
    }

    /// `/stats/subsets?route=VHOST/ROUTE&subset=S`: one object, for an Argo `web` metric's
    /// `jsonPath` (`{$.last_1m.success_rate}`). `VHOST` may be the full virtual host name
    /// (`VirtualService/default/web`) or its tail (`default/web`, `web`). `None`: no such row.
    pub fn subset_json(&self, route: &str, subset: &str) -> Option<serde_json::Value> {
        let (vhost, route) = route.rsplit_once('/').unwrap_or(("", route));
        let rows = self.subsets_json();
        rows["subsets"]
            .as_array()?
            .iter()
            .find(|r| {
                let vh = r["virtual_host"].as_str().unwrap_or("");
                (vhost.is_empty() || vh == vhost || vh.ends_with(&format!("/{vhost}")))
                    && r["route"] == route
                    && r["subset"] == subset
            })
            .cloned()
    }

    /// `/stats/subsets`: per route and subset, requests, success rate and p50/p90/p99 over
    /// the last minute and since start.
    pub fn subsets_json(&self) -> serde_json::Value {
        let windows = lock(&self.windows);
        let mut keys: Vec<&WindowKey> = windows.keys().collect();
        keys.sort();
        let rows: Vec<serde_json::Value> = keys
            .into_iter()
            .map(|k| {
                let w = &windows[k];
                serde_json::json!({
                    "virtual_host": k.0,
                    "route": k.1,
                    "subset": k.2,
                    "cluster": k.3,
                    "last_1m": w.last_minute(),
                    "since_start": w.since_start(),
                })
            })
            .collect();
        serde_json::json!({ "subsets": rows })
    }

    /// The Istio series for a full label text, created on first use.
    pub fn istio_series(&self, labels: String) -> Arc<IstioSeries> {
        let mut index = lock(&self.istio_index);
        if let Some(s) = index.get(&labels) {
            return s.clone();
        }
        let s = Arc::new(IstioSeries::new(labels.clone()));
        index.insert(labels, s.clone());
        lock(&self.istio).push(s.clone());
        s
    }

    /// Series of clusters and routes no table uses any more are kept: Prometheus counters
    /// must not go backwards while a scraper still sees them. (A restart resets them all.)
    /// The bucket for `key` (a definition and where it applies), created full on first use.
    pub fn rate_bucket(
        &self,
        key: String,
        def: &crate::ratelimit::BucketDef,
    ) -> Arc<crate::ratelimit::Bucket> {
        lock(&self.rate_buckets)
            .entry(key)
            .or_insert_with(|| Arc::new(crate::ratelimit::Bucket::new(def)))
            .clone()
    }

    /// Forgets buckets no table uses any more (called after a table is compiled).
    pub fn retain_rate_buckets(&self, used: &std::collections::HashSet<String>) {
        lock(&self.rate_buckets).retain(|k, _| used.contains(k));
    }

    /// Current tokens per bucket key, for `/config_dump`.
    pub fn rate_bucket_tokens(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = lock(&self.rate_buckets)
            .iter()
            .map(|(k, b)| (k.clone(), b.tokens()))
            .collect();
        v.sort();
        v
    }

    pub fn rate_stats(&self, prefix: &str) -> Arc<crate::ratelimit::LimitStats> {
        lock(&self.rate_stats)
            .entry(prefix.to_string())
            .or_default()
            .clone()
    }

    fn encode_rate_limits(&self, out: &mut String) {
        let stats = lock(&self.rate_stats);
        for (prefix, s) in stats.iter() {
            for (name, c) in [
                ("enabled", &s.enabled),
                ("ok", &s.ok),
                ("rate_limited", &s.rate_limited),
                ("enforced", &s.enforced),
            ] {
                let metric = format!("envoy_{prefix}_http_local_rate_limit_{name}");
                let _ = writeln!(out, "# TYPE {metric} counter");
                let _ = writeln!(out, "{metric} {}", c.get());
            }
        }
    }

    /// A rollout's phase, step and set weight, as the controller last saw them.
    pub fn rollout_status(&self, rollout: &str, phase: &str, step: usize, set_weight: u32) {
        lock(&self.rollouts)
            .status
            .insert(rollout.to_string(), (phase.to_string(), step, set_weight));
    }

    /// One analysis measurement and its result (`Successful`, `Failed`, ...).
    pub fn rollout_measurement(&self, rollout: &str, metric: &str, result: impl std::fmt::Debug) {
        *lock(&self.rollouts)
            .measurements
            .entry((
                rollout.to_string(),
                metric.to_string(),
                format!("{result:?}"),
            ))
            .or_default() += 1;
    }

    fn encode_rollouts(&self, out: &mut String) {
        let r = lock(&self.rollouts);
        if r.status.is_empty() && r.measurements.is_empty() {
            return;
        }
        let _ = writeln!(out, "# TYPE switchyard_rollout_info gauge");
        for (name, (phase, _, _)) in &r.status {
            let _ = writeln!(
                out,
                "switchyard_rollout_info{{rollout=\"{}\",phase=\"{}\"}} 1",
                escape(name),
                escape(phase)
            );
        }
        let _ = writeln!(out, "# TYPE switchyard_rollout_step gauge");
        for (name, (_, step, _)) in &r.status {
            let _ = writeln!(
                out,
                "switchyard_rollout_step{{rollout=\"{}\"}} {step}",
                escape(name)
            );
        }
        let _ = writeln!(out, "# TYPE switchyard_rollout_set_weight gauge");
        for (name, (_, _, w)) in &r.status {
            let _ = writeln!(
                out,
                "switchyard_rollout_set_weight{{rollout=\"{}\"}} {w}",
                escape(name)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE switchyard_rollout_analysis_measurements_total counter"
        );
        for ((name, metric, result), n) in &r.measurements {
            let _ = writeln!(
                out,
                "switchyard_rollout_analysis_measurements_total{{rollout=\"{}\",metric=\"{}\",result=\"{}\"}} {n}",
                escape(name),
                escape(metric),
                escape(result)
            );
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        istio::encode(&mut out, &lock(&self.istio));
        let _ = writeln!(out, "# TYPE istio_build gauge");
        let _ = writeln!(
            out,
            "istio_build{{component=\"proxy\",tag=\"switchyard-{}\"}} 1",
            self.version
        );
        self.encode_clusters(&mut out);
        self.encode_own(&mut out);
        self.encode_rollouts(&mut out);
        self.encode_rate_limits(&mut out);
        out
    }

    fn encode_clusters(&self, out: &mut String) {
        let clusters = lock(&self.clusters);
        let mut names: Vec<&String> = clusters.keys().collect();
        names.sort();
        type Get = fn(&ClusterStats) -> i64;
        let counters: [(&str, Get); 14] = [
            ("upstream_cx_total", |c| c.upstream_cx_total.get() as i64),
            ("upstream_cx_connect_fail", |c| {
                c.upstream_cx_connect_fail.get() as i64
            }),
            ("upstream_cx_idle_timeout", |c| {
                c.upstream_cx_idle_timeout.get() as i64
            }),
            ("upstream_cx_max_requests", |c| {
                c.upstream_cx_max_requests.get() as i64
            }),
            ("upstream_rq_total", |c| c.upstream_rq_total.get() as i64),
            ("upstream_rq_retry", |c| c.upstream_rq_retry.get() as i64),
            ("retry_or_shadow_abandoned", |c| {
                c.retry_or_shadow_abandoned.get() as i64
            }),
            ("upstream_rq_pending_overflow", |c| {
                c.upstream_rq_pending_overflow.get() as i64
            }),
            ("upstream_rq_timeout", |c| {
                c.upstream_rq_timeout.get() as i64
            }),
            ("upstream_rq_2xx", |c| c.upstream_rq_2xx.get() as i64),
            ("upstream_rq_4xx", |c| c.upstream_rq_4xx.get() as i64),
            ("upstream_rq_5xx", |c| c.upstream_rq_5xx.get() as i64),
            ("outlier_detection_ejections_total", |c| {
                c.outlier_detection_ejections_total.get() as i64
            }),
            ("upstream_rq_completed", |c| {
                (c.upstream_rq_2xx.get() + c.upstream_rq_4xx.get() + c.upstream_rq_5xx.get()) as i64
            }),
        ];
        let gauges: [(&str, Get); 5] = [
            ("upstream_cx_active", |c| c.upstream_cx_active.get()),
            ("upstream_rq_active", |c| c.upstream_rq_active.get()),
            ("outlier_detection_ejections_active", |c| {
                c.outlier_detection_ejections_active.get()
            }),
            ("membership_healthy", |c| c.membership_healthy.get()),
            ("membership_total", |c| c.membership_total.get()),
        ];
        for (kind, list) in [("counter", &counters[..]), ("gauge", &gauges[..])] {
            for (name, get) in list {
                let _ = writeln!(out, "# TYPE envoy_cluster_{name} {kind}");
                for cluster in &names {
                    let _ = writeln!(
                        out,
                        "envoy_cluster_{name}{{cluster_name=\"{}\"}} {}",
                        escape(cluster),
                        get(&clusters[*cluster])
                    );
                }
            }
        }
    }

    fn encode_own(&self, out: &mut String) {
        let p = &self.proxy;
        let lines: [(&str, &str, &str, i64); 11] = [
            (
                "switchyard_mirror_requests_total",
                "counter",
                "{result=\"sent\"}",
                p.mirror_sent.get() as i64,
            ),
            (
                "switchyard_mirror_requests_total",
                "",
                "{result=\"dropped\"}",
                p.mirror_dropped.get() as i64,
            ),
            (
                "switchyard_config_reloads_total",
                "counter",
                "{result=\"success\"}",
                p.config_reloads_success.get() as i64,
            ),
            (
                "switchyard_config_reloads_total",
                "",
                "{result=\"failure\"}",
                p.config_reloads_failure.get() as i64,
            ),
            (
                "switchyard_config_version",
                "gauge",
                "",
                p.config_version.get(),
            ),
            (
                "switchyard_requests_in_flight",
                "gauge",
                "",
                p.requests_in_flight.get(),
            ),
            (
                "switchyard_downstream_cx_active",
                "gauge",
                "",
                p.downstream_cx_active.get(),
            ),
            (
                "switchyard_downstream_cx_total",
                "counter",
                "",
                p.downstream_cx_total.get() as i64,
            ),
            (
                "switchyard_downstream_cx_overflow_total",
                "counter",
                "",
                p.downstream_cx_overflow.get() as i64,
            ),
            (
                "switchyard_downstream_cx_idle_timeout_total",
                "counter",
                "",
                p.downstream_cx_idle_timeout.get() as i64,
            ),
            (
                "switchyard_access_log_dropped_total",
                "counter",
                "",
                p.access_log_dropped.get() as i64,
            ),
        ];
        for (name, kind, labels, v) in lines {
            if !kind.is_empty() {
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            let _ = writeln!(out, "{name}{labels} {v}");
        }
        let routes = lock(&self.routes);
        let mut keys: Vec<&String> = routes.keys().collect();
        keys.sort();
        let _ = writeln!(out, "# TYPE switchyard_route_decisions_total counter");
        for k in keys {
            let _ = writeln!(
                out,
                "switchyard_route_decisions_total{{{k}}} {}",
                routes[k].decisions.get()
            );
        }
    }
}

/// Prometheus label-value escaping: backslash, double quote and newline.
pub fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

/// Renders `name="value",...` in the given order.
pub fn render_labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(pairs.len() * 32);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape(v));
    }
    s
}
