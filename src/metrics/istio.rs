//! Istio's standard request metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`) with Istio's label names, in Istio's order.

use std::fmt::Write as _;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::histogram::Histogram;
use super::{Counter, Registry, escape, render_labels};
use crate::config::istio::Labels;

/// `reporter`: `source` for a client-side sidecar (our default: we sit where the split is
/// made); `destination` to report as the server-side sidecar, which is what Flagger queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reporter {
    #[default]
    Source,
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The `source_*` labels: this proxy.
#[derive(Debug, Clone, Default)]
pub struct SourceLabels {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

const UNKNOWN: &str = "unknown";
/// Istio's default cluster id.
const CLUSTER: &str = "Kubernetes";

impl SourceLabels {
    /// From `--workload`, `--namespace` and `--labels`, with Istio's fallbacks.
    pub fn new(workload: &str, namespace: &str, labels: &Labels) -> SourceLabels {
        let app = labels.get("app").cloned();
        let version = labels.get("version").cloned();
        SourceLabels {
            workload: workload.to_string(),
            namespace: namespace.to_string(),
            canonical_service: labels
                .get("service.istio.io/canonical-name")
                .cloned()
                .or_else(|| app.clone())
                .unwrap_or_else(|| workload.to_string()),
            canonical_revision: labels
                .get("service.istio.io/canonical-revision")
                .cloned()
                .or_else(|| version.clone())
                .unwrap_or_else(|| "latest".to_string()),
            app: app.unwrap_or_else(|| UNKNOWN.to_string()),
            version: version.unwrap_or_else(|| UNKNOWN.to_string()),
        }
    }
}

/// The `destination_*` labels for one endpoint of one cluster (or for no endpoint).
#[derive(Debug, Clone)]
pub struct DestLabels {
    pub workload: String,
    pub workload_namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub service: String,
    pub service_name: String,
    pub service_namespace: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub subset: String,
}

impl DestLabels {
    /// Nothing known but (maybe) the service: NR, blocked hosts, passthrough.
    pub fn service_only(service: &str, namespace: Option<&str>) -> DestLabels {
        DestLabels {
            workload: UNKNOWN.into(),
            workload_namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            service: service.into(),
            service_name: service_name(service),
            service_namespace: namespace.unwrap_or(UNKNOWN).into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            subset: String::new(),
        }
    }

    /// An endpoint: `destination_workload` is its WorkloadEntry's name, else `app-version`,
    /// else `unknown`; `destination_version` its `version` label, else the subset name.
    pub fn endpoint(
        service: &str,
        service_namespace: &str,
        subset: &str,
        labels: &Labels,
        workload_name: Option<&str>,
        endpoint_namespace: &str,
    ) -> DestLabels {
        let app = labels.get("app").cloned();
        let version = labels.get("version").cloned();
        let workload = match (workload_name, &app, &version) {
            (Some(w), _, _) => w.to_string(),
            (None, Some(a), Some(v)) => format!("{a}-{v}"),
            (None, Some(a), None) => a.clone(),
            _ => UNKNOWN.to_string(),
        };
        let version_label = version
            .clone()
            .or_else(|| (!subset.is_empty()).then(|| subset.to_string()))
            .unwrap_or_else(|| UNKNOWN.to_string());
        DestLabels {
            canonical_service: labels
                .get("service.istio.io/canonical-name")
                .cloned()
                .or_else(|| app.clone())
                .unwrap_or_else(|| workload.clone()),
            canonical_revision: labels
                .get("service.istio.io/canonical-revision")
                .cloned()
                .or_else(|| version.clone())
                .unwrap_or_else(|| "latest".to_string()),
            workload,
            workload_namespace: endpoint_namespace.to_string(),
            principal: UNKNOWN.into(),
            app: app.unwrap_or_else(|| UNKNOWN.to_string()),
            version: version_label,
            service: service.to_string(),
            service_name: service_name(service),
            service_namespace: service_namespace.to_string(),
            subset: subset.to_string(),
        }
    }
}

/// `destination_service_name`: the short name of a Kubernetes-style host, else the host.
fn service_name(fqdn: &str) -> String {
    match fqdn.split_once('.') {
        Some((name, rest)) if rest.contains(".svc.") => name.to_string(),
        _ => fqdn.to_string(),
    }
}

/// The four request series for one full label set.
#[derive(Debug)]
pub struct IstioSeries {
    pub labels: String,
    pub requests: Counter,
    /// Observed in microseconds, exposed in milliseconds.
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
}

impl IstioSeries {
    pub fn new(labels: String) -> IstioSeries {
        IstioSeries {
            labels,
            requests: Counter::default(),
            duration: Histogram::new(1000),
            request_bytes: Histogram::new(1),
            response_bytes: Histogram::new(1),
        }
    }
}

pub fn encode(out: &mut String, series: &[Arc<IstioSeries>]) {
    let _ = writeln!(out, "# TYPE istio_requests_total counter");
    for s in series {
        let _ = writeln!(
            out,
            "istio_requests_total{{{}}} {}",
            s.labels,
            s.requests.get()
        );
    }
    type Pick = fn(&IstioSeries) -> &Histogram;
    let hists: [(&str, Pick); 3] = [
        ("istio_request_duration_milliseconds", |s| &s.duration),
        ("istio_request_bytes", |s| &s.request_bytes),
        ("istio_response_bytes", |s| &s.response_bytes),
    ];
    for (name, get) in hists {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for s in series {
            get(s).encode(out, name, &s.labels);
        }
    }
}

/// What varies per response: `(protocol, response_code, response_flags, grpc status)`, packed
/// into one integer so the cache lookup is a compare, not a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseKey {
    pub grpc: bool,
    pub code: u16,
    /// Index into `FLAG_TEXTS`.
    pub flags: u8,
    /// gRPC status code, if the response carried one.
    pub grpc_status: Option<u8>,
}

/// Response-flag texts by index (`ResponseKey::flags`).
pub const FLAG_TEXTS: [&str; 17] = [
    "-", "NR", "UH", "UF", "UF,URX", "UR", "UC", "DPE", "DC", "UT", "FI", "DI", "URX", "DI,UT",
    "UO", "UPE", "RL",
];

impl ResponseKey {
    fn pack(self) -> u64 {
        u64::from(self.code)
            | (u64::from(self.flags) << 16)
            | (u64::from(self.grpc) << 24)
            | (self.grpc_status.map_or(0, |s| u64::from(s) + 1) << 32)
    }
}

/// The series of one endpoint (or one "no endpoint" destination), per response key. The
/// steady state is one `ArcSwap` load and a scan of a handful of entries.
pub struct DestMetrics {
    pub dest: DestLabels,
    registry: Arc<Registry>,
    cache: ArcSwap<Vec<(u64, Arc<IstioSeries>)>>,
}

impl std::fmt::Debug for DestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestMetrics")
            .field("dest", &self.dest)
            .finish()
    }
}

impl DestMetrics {
    pub fn new(registry: Arc<Registry>, dest: DestLabels) -> DestMetrics {
        DestMetrics {
            dest,
            registry,
            cache: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn series(&self, key: ResponseKey) -> Arc<IstioSeries> {
        let packed = key.pack();
        if let Some((_, s)) = self.cache.load().iter().find(|(k, _)| *k == packed) {
            return s.clone();
        }
        // First time this combination is seen here: render, register, publish.
        let series = self.registry.istio_series(self.render(key));
        self.cache.rcu(|cur| {
            let mut next = Vec::with_capacity(cur.len() + 1);
            next.extend(cur.iter().filter(|(k, _)| *k != packed).cloned());
            next.push((packed, series.clone()));
            next
        });
        series
    }

    fn render(&self, key: ResponseKey) -> String {
        let src = &self.registry.source;
        let d = &self.dest;
        let reporter = self.registry.reporter;
        let code = key.code.to_string();
        let grpc_status = key.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let security = match reporter {
            Reporter::Source => UNKNOWN,
            Reporter::Destination => "none",
        };
        render_labels(&[
            ("reporter", reporter.as_str()),
            ("source_workload", &src.workload),
            ("source_workload_namespace", &src.namespace),
            ("source_principal", UNKNOWN),
            ("source_app", &src.app),
            ("source_version", &src.version),
            ("source_canonical_service", &src.canonical_service),
            ("source_canonical_revision", &src.canonical_revision),
            ("source_cluster", CLUSTER),
            ("destination_workload", &d.workload),
            ("destination_workload_namespace", &d.workload_namespace),
            ("destination_principal", &d.principal),
            ("destination_app", &d.app),
            ("destination_version", &d.version),
            ("destination_service", &d.service),
            ("destination_service_name", &d.service_name),
            ("destination_service_namespace", &d.service_namespace),
            ("destination_canonical_service", &d.canonical_service),
            ("destination_canonical_revision", &d.canonical_revision),
            ("destination_cluster", CLUSTER),
            ("request_protocol", if key.grpc { "grpc" } else { "http" }),
            (
                "response_flags",
                FLAG_TEXTS[usize::from(key.flags).min(FLAG_TEXTS.len() - 1)],
            ),
            ("connection_security_policy", security),
            ("response_code", &code),
            ("grpc_response_status", &grpc_status),
            ("destination_subset", &d.subset),
        ])
    }
}

/// `escape` re-exported for callers building their own label text.
pub fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    escape(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_workload_falls_back_as_istio_does() {
        let mut l = Labels::new();
        l.insert("app".into(), "podinfo".into());
        l.insert("version".into(), "v2".into());
        let d = DestLabels::endpoint(
            "podinfo.test.svc.cluster.local",
            "test",
            "canary",
            &l,
            None,
            "test",
        );
        assert_eq!(d.workload, "podinfo-v2");
        assert_eq!(d.service_name, "podinfo");
        let d = DestLabels::endpoint(
            "api.example.com",
            "test",
            "canary",
            &Labels::new(),
            Some("vm-1"),
            "test",
        );
        assert_eq!(d.workload, "vm-1");
        assert_eq!(d.version, "canary", "no version label: the subset name");
        assert_eq!(d.service_name, "api.example.com");
    }

    #[test]
    fn series_cache_reuses_handles_per_key() {
        let reg = Arc::new(Registry::new(
            SourceLabels::new("me", "default", &Labels::new()),
            Reporter::Source,
        ));
        let m = DestMetrics::new(
            reg.clone(),
            DestLabels::service_only("x.default.svc.cluster.local", Some("default")),
        );
        let k = ResponseKey {
            grpc: false,
            code: 200,
            flags: 0,
            grpc_status: None,
        };
        let a = m.series(k);
        let b = m.series(k);
        assert!(Arc::ptr_eq(&a, &b));
        let c = m.series(ResponseKey {
            code: 503,
            flags: 2,
            ..k
        });
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(c.labels.contains("response_code=\"503\""));
        assert!(c.labels.contains("response_flags=\"UH\""));
        assert!(
            c.labels
                .starts_with("reporter=\"source\",source_workload=\"me\"")
        );
    }
}
