//! Clusters (`outbound|PORT|SUBSET|FQDN`, one per service port and subset, as Envoy names
//! them) and their endpoints. A cluster's endpoint list can change under it (DNS), so it sits
//! behind an `ArcSwap`; everything else about a cluster is fixed when the table is compiled.

pub mod dns;
pub mod h1;
pub mod hash;
pub mod lb;
pub mod policy;
pub mod pool;
pub mod response;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::istio::Labels;
use crate::metrics::istio::{DestLabels, DestMetrics};
use crate::metrics::{ClusterStats, Registry};
pub use lb::LbPolicy;
pub use pool::{
    ConnSettings, EndpointPool, PoolRegistry, Release, SendError, set_worker_count,
    set_worker_index,
};
pub use response::{ExchangeError, ResponseBody};

/// Istio's mesh default `connectTimeout` (Envoy's own default would be 5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Envoy `load_balancing_weight` (≥ 1).
    pub weight: u32,
    pub labels: Labels,
    /// WorkloadEntry name when the endpoint came from one.
    pub workload_name: Option<String>,
    /// Requests in flight to this endpoint (least-request balancing reads it).
    pub active: AtomicU32,
    pub pool: Arc<EndpointPool>,
    /// This endpoint's Istio series (label sets resolved when the table was compiled).
    pub metrics: Arc<DestMetrics>,
    /// Consecutive-error counts and ejection (outlier detection).
    pub outlier: policy::OutlierState,
}

impl Endpoint {
    /// Counts the request as active until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone(), None)
    }
}

/// One request's hold on an endpoint (and on its cluster's circuit-breaker slot, if any),
/// released when the response body is done.
pub struct ActiveGuard(Arc<Endpoint>, Option<tokio::sync::OwnedSemaphorePermit>);

impl ActiveGuard {
    pub fn hold(&mut self, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
        self.1 = permit;
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a cluster learns its endpoints (ServiceEntry `resolution`).
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Addresses listed in the config.
    Static,
    /// Names re-resolved in the background; the last good answer is kept on failure.
    Dns(Vec<dns::DnsTarget>),
    /// `resolution: NONE`: forward to the address the request's authority names.
    OriginalDst,
}

#[derive(Debug)]
pub struct Cluster {
    /// Envoy's name: `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    pub service_host: String,
    pub service_namespace: String,
    pub subset: String,
    pub port: u16,
    /// Upstream speaks HTTP/2 (ServiceEntry port protocol HTTP2 or GRPC).
    pub h2: bool,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub discovery: Discovery,
    /// Subset labels, kept for DNS refreshes and reporting.
    pub subset_labels: Labels,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    lb_state: lb::LbState,
    /// Envoy's per-cluster counters; shared with earlier tables of the same cluster name.
    pub stats: Arc<ClusterStats>,
    /// Series for requests that found no endpoint (503 UH).
    pub no_endpoint: Arc<DestMetrics>,
    registry: Arc<Registry>,
    /// Connection-pool limits and outlier detection from the DestinationRule.
    pub policy: policy::ClusterPolicy,
    /// TLS origination and connection lifetime limits; every endpoint pool of this cluster
    /// was made with these (built once when the table is compiled).
    pub conn: Arc<ConnSettings>,
    /// Circuit breakers; `None` with Istio's (unbounded) defaults.
    pub limiter: Option<Arc<policy::Limiter>>,
    /// Consistent-hash table over the current endpoints, when the policy asks for one.
    hash_table: arc_swap::ArcSwapOption<hash::Table>,
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        service_host: String,
        service_namespace: String,
        subset: String,
        port: u16,
        h2: bool,
        lb: LbPolicy,
        discovery: Discovery,
        subset_labels: Labels,
        endpoints: Vec<Arc<Endpoint>>,
        registry: Arc<Registry>,
        policy: policy::ClusterPolicy,
        conn: Arc<ConnSettings>,
        limiter: Option<Arc<policy::Limiter>>,
    ) -> Cluster {
        let stats = registry.cluster(&name);
        let mut no_endpoint = DestLabels::service_only(&service_host, Some(&service_namespace));
        no_endpoint.subset = subset.clone();
        stats.membership_total.set(endpoints.len() as i64);
        stats.membership_healthy.set(endpoints.len() as i64);
        Cluster {
            hash_table: arc_swap::ArcSwapOption::empty(),
            limiter,
            connect_timeout: policy.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            policy,
            conn,
            stats,
            no_endpoint: Arc::new(DestMetrics::new(registry.clone(), no_endpoint)),
            registry,
            name,
            service_host,
            service_namespace,
            subset,
            port,
            h2,
            lb,
            discovery,
            subset_labels,
            endpoints: ArcSwap::from_pointee(endpoints),
            lb_state: lb::LbState::default(),
        }
    }

    pub fn endpoints(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    pub fn set_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) {
        if let Some(h) = &self.policy.hash {
            let keys: Vec<_> = endpoints.iter().map(|e| (e.addr, e.weight)).collect();
            self.hash_table
                .store(hash::Table::build(h.table, &keys).map(Arc::new));
        }
        self.stats.membership_total.set(endpoints.len() as i64);
        self.stats.membership_healthy.set(endpoints.len() as i64);
        self.endpoints.store(Arc::new(endpoints));
    }

    /// A new endpoint of this cluster, with its metrics resolved now rather than per request.
    pub fn new_endpoint(
        &self,
        addr: SocketAddr,
        weight: u32,
        labels: Labels,
        workload_name: Option<String>,
        pool: Arc<EndpointPool>,
    ) -> Arc<Endpoint> {
        let dest = DestLabels::endpoint(
            &self.service_host,
            &self.service_namespace,
            &self.subset,
            &labels,
            workload_name.as_deref(),
            &self.service_namespace,
        );
        Arc::new(Endpoint {
            addr,
            weight,
            labels,
            workload_name,
            active: Default::default(),
            pool,
            metrics: Arc::new(DestMetrics::new(self.registry.clone(), dest)),
            outlier: Default::default(),
        })
    }

    /// Chooses an endpoint, avoiding `avoid` (hosts already tried for this request, Envoy's
    /// `previous_hosts` retry predicate) when another one is available. `None`: no endpoint
    /// at all, which the proxy answers with 503 `UH`.
    pub fn pick(&self, random: u64, avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let eps = self.endpoints.load();
        if let Some(cfg) = &self.policy.outlier
            && eps.iter().any(|e| e.outlier.is_ejected())
        {
            // Rare path: some host is ejected. Below the panic threshold Envoy balances over
            // all hosts; Istio sets that threshold to `minHealthPercent` (0 by default).
            let healthy: Vec<Arc<Endpoint>> = eps
                .iter()
                .filter(|e| !e.outlier.is_ejected())
                .cloned()
                .collect();
            let panic = healthy.len() * 100 < cfg.min_health_percent as usize * eps.len();
            if !panic {
                return lb::pick(self.lb, &self.lb_state, &healthy, random, avoid).cloned();
            }
        }
        lb::pick(self.lb, &self.lb_state, &eps, random, avoid).cloned()
    }

    /// The endpoint a consistent-hash key maps to (ejected endpoints fall back to the normal
    /// choice).
    pub fn pick_hashed(&self, key_hash: u64, random: u64) -> Option<Arc<Endpoint>> {
        let eps = self.endpoints.load();
        if let Some(table) = self.hash_table.load().as_ref()
            && let Some(e) = eps.get(table.lookup(key_hash))
            && !e.outlier.is_ejected()
        {
            return Some(e.clone());
        }
        drop(eps);
        self.pick(random, &[])
    }

    /// Feeds one attempt's outcome to outlier detection, ejecting the endpoint when it trips.
    pub fn record_outcome(&self, endpoint: &Endpoint, outcome: policy::Outcome) {
        let Some(cfg) = &self.policy.outlier else {
            return;
        };
        let eps = self.endpoints.load();
        let healthy = eps.iter().filter(|e| !e.outlier.is_ejected()).count();
        if endpoint.outlier.record(cfg, outcome, healthy, eps.len()) {
            self.stats.outlier_detection_ejections_total.inc();
            tracing::info!(cluster = %self.name, endpoint = %endpoint.addr, "outlier detection ejected an endpoint");
        }
        let ejected = eps.iter().filter(|e| e.outlier.is_ejected()).count();
        self.stats
            .outlier_detection_ejections_active
            .set(ejected as i64);
        self.stats
            .membership_healthy
            .set((eps.len() - ejected) as i64);
    }
}
