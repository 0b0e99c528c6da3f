//! DestinationRule traffic policy for one cluster: connection-pool limits (Envoy's circuit
//! breakers) and outlier detection, with Istio's defaults (reference §6.1).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::duration::parse_go_duration;
use crate::config::istio::{
    ClientTlsSettings, ConnectionPoolSettings, OutlierDetection, TrafficPolicy,
};

/// The blocks that apply to one cluster: a subset's block replaces the top-level one as a
/// whole, and a port-level block replaces both for that port (no field-level merge).
#[derive(Debug, Clone, Default)]
pub struct ClusterPolicy {
    pub connect_timeout: Option<Duration>,
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    /// `connectionPool.http.idleTimeout` (Istio's default, 1h, when unset).
    pub idle_timeout: Option<Duration>,
    pub max_retries: Option<u32>,
    pub outlier: Option<OutlierConfig>,
    /// `loadBalancer.consistentHash`: the endpoint follows a request key.
    pub hash: Option<super::hash::HashPolicy>,
    /// The `tls` block in force (turned into a TLS client when the cluster is built).
    pub tls: Option<ClientTlsSettings>,
}

/// Istio treats 0 in these limits as unset ("FIXME: zero is a valid value").
fn limit(v: Option<crate::config::istio::Int>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v.0).ok()).filter(|v| *v > 0)
}

impl ClusterPolicy {
    /// Merges top-level, subset and port-level policies for `port`.
    pub fn resolve(
        top: Option<&TrafficPolicy>,
        subset: Option<&TrafficPolicy>,
        port: u16,
    ) -> ClusterPolicy {
        fn port_level(
            tp: Option<&TrafficPolicy>,
            port: u16,
        ) -> Option<&crate::config::istio::PortTrafficPolicy> {
            tp?.port_level_settings.iter().find(|p| {
                p.port
                    .as_ref()
                    .and_then(|p| p.number)
                    .is_some_and(|n| n.0 == i64::from(port))
            })
        }
        let pool: Option<&ConnectionPoolSettings> = port_level(subset, port)
            .and_then(|p| p.connection_pool.as_ref())
            .or_else(|| subset.and_then(|s| s.connection_pool.as_ref()))
            .or_else(|| port_level(top, port).and_then(|p| p.connection_pool.as_ref()))
            .or_else(|| top.and_then(|t| t.connection_pool.as_ref()));
        let outlier: Option<&OutlierDetection> = port_level(subset, port)
            .and_then(|p| p.outlier_detection.as_ref())
            .or_else(|| subset.and_then(|s| s.outlier_detection.as_ref()))
            .or_else(|| port_level(top, port).and_then(|p| p.outlier_detection.as_ref()))
            .or_else(|| top.and_then(|t| t.outlier_detection.as_ref()));
        let lb = port_level(subset, port)
            .and_then(|p| p.load_balancer.as_ref())
            .or_else(|| subset.and_then(|s| s.load_balancer.as_ref()))
            .or_else(|| port_level(top, port).and_then(|p| p.load_balancer.as_ref()))
            .or_else(|| top.and_then(|t| t.load_balancer.as_ref()));
        let tls = port_level(subset, port)
            .and_then(|p| p.tls.as_ref())
            .or_else(|| subset.and_then(|s| s.tls.as_ref()))
            .or_else(|| port_level(top, port).and_then(|p| p.tls.as_ref()))
            .or_else(|| top.and_then(|t| t.tls.as_ref()));
        let hash = lb
            .and_then(|lb| lb.consistent_hash.as_ref())
            .and_then(hash_policy);
        let tcp = pool.and_then(|p| p.tcp.as_ref());
        let http = pool.and_then(|p| p.http.as_ref());
        ClusterPolicy {
            connect_timeout: tcp
                .and_then(|t| t.connect_timeout.as_deref())
                .and_then(|d| parse_go_duration(d).ok()),
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_requests_per_connection: limit(http.and_then(|h| h.max_requests_per_connection)),
            idle_timeout: http
                .and_then(|h| h.idle_timeout.as_deref())
                .and_then(|d| parse_go_duration(d).ok()),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            outlier: outlier.map(OutlierConfig::from_istio),
            hash,
            tls: tls.cloned(),
        }
    }
}

fn hash_policy(c: &crate::config::istio::ConsistentHashLb) -> Option<super::hash::HashPolicy> {
    use super::hash::{HashKey, HashPolicy, TableKind};
    let key = if let Some(h) = &c.http_header_name {
        HashKey::Header(http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()?)
    } else if let Some(ck) = &c.http_cookie {
        HashKey::Cookie {
            name: ck.name.clone(),
            path: ck.path.clone(),
            ttl: ck
                .ttl
                .as_deref()
                .and_then(|t| parse_go_duration(t).ok())
                .filter(|t| !t.is_zero()),
        }
    } else if c.use_source_ip.is_some_and(|b| b.0) {
        HashKey::SourceIp
    } else if let Some(q) = &c.http_query_parameter_name {
        HashKey::Query(q.clone())
    } else {
        return None;
    };
    let size = |v: Option<crate::config::istio::Int>| {
        v.and_then(|v| usize::try_from(v.0).ok()).filter(|v| *v > 0)
    };
    let table = match (&c.maglev, &c.ring_hash) {
        (Some(m), _) => TableKind::Maglev(size(m.table_size).unwrap_or(65537)),
        (None, Some(r)) => TableKind::Ring(size(r.minimum_ring_size).unwrap_or(1024)),
        (None, None) => TableKind::Ring(size(c.minimum_ring_size).unwrap_or(1024)),
    };
    Some(HashPolicy { key, table })
}

/// `outlierDetection`, as Istio translates it: consecutive 5xx on by default (5), gateway
/// errors off unless set, success-rate ejection never, panic threshold `minHealthPercent`
/// (0 when unset).
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

impl OutlierConfig {
    fn from_istio(o: &OutlierDetection) -> OutlierConfig {
        let dur = |d: &Option<String>, default: u64| {
            d.as_deref()
                .and_then(|d| parse_go_duration(d).ok())
                .unwrap_or(Duration::from_secs(default))
        };
        let count = |v: Option<crate::config::istio::Int>| v.and_then(|v| u32::try_from(v.0).ok());
        OutlierConfig {
            // Set to 0 disables it; unset keeps Envoy's 5, enforced.
            consecutive_5xx: match count(o.consecutive_5xx_errors) {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(5),
            },
            consecutive_gateway: count(o.consecutive_gateway_errors).filter(|n| *n > 0),
            interval: dur(&o.interval, 10),
            base_ejection: dur(&o.base_ejection_time, 30),
            max_ejection_percent: count(o.max_ejection_percent).unwrap_or(10).min(100),
            min_health_percent: count(o.min_health_percent).unwrap_or(0).min(100),
        }
    }
}

/// Per-endpoint outlier state.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the process epoch until which the endpoint is ejected (0: not).
    ejected_until_ms: AtomicU64,
    times_ejected: AtomicU32,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl OutlierState {
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records one outcome; returns true when this outcome ejects the endpoint. `healthy` is
    /// the number of endpoints not ejected, `total` the cluster's size.
    pub fn record(
        &self,
        cfg: &OutlierConfig,
        status: Outcome,
        healthy: usize,
        total: usize,
    ) -> bool {
        let (is_5xx, is_gateway) = match status {
            Outcome::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            // Local-origin failures count as 503 (split_external_local_origin_errors false).
            Outcome::LocalFailure => (true, true),
        };
        if !is_5xx {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        let c5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let cg = if is_gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let trip = cfg.consecutive_5xx.is_some_and(|n| c5 >= n)
            || cfg.consecutive_gateway.is_some_and(|n| cg >= n);
        if !trip || self.is_ejected() {
            return false;
        }
        // Current Envoy: eject only while (ejected + 1) / total stays within the maximum.
        let ejected = total.saturating_sub(healthy);
        if total == 0 || (ejected + 1) * 100 > cfg.max_ejection_percent as usize * total {
            return false;
        }
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let ejection = cfg.base_ejection.saturating_mul(times);
        self.ejected_until_ms
            .store(now_ms() + ejection.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, reset or timeout before a response.
    LocalFailure,
}

/// Envoy's circuit breakers for one cluster: requests beyond `max_connections` (HTTP/1) or
/// `http2MaxRequests` wait in a queue of at most `http1MaxPendingRequests`; beyond that the
/// request fails at once with 503 `UO`. With Istio's defaults (unbounded) there is nothing
/// to check and this costs nothing.
#[derive(Debug)]
pub struct Limiter {
    /// The limits it enforces: a reload that keeps them keeps the limiter (see
    /// `PoolRegistry::limiter`).
    pub(crate) key: LimitKey,
    permits: Arc<Semaphore>,
    pending: AtomicU32,
    max_pending: u32,
    retries_active: AtomicU32,
    max_retries: u32,
}

/// Request slots, pending queue and retry budget of one [`Limiter`].
pub(crate) type LimitKey = (Option<u32>, u32, u32);

impl Limiter {
    pub fn new(policy: &ClusterPolicy, h2: bool) -> Option<Limiter> {
        let slots = if h2 {
            policy.max_requests
        } else {
            match (policy.max_connections, policy.max_requests) {
                (Some(c), Some(r)) => Some(c.min(r)),
                (c, r) => c.or(r),
            }
        };
        if slots.is_none() && policy.max_retries.is_none() {
            return None;
        }
        let max_pending = policy.max_pending.unwrap_or(u32::MAX);
        let max_retries = policy.max_retries.unwrap_or(u32::MAX);
        Some(Limiter {
            key: (slots, max_pending, max_retries),
            permits: Arc::new(Semaphore::new(
                slots.map_or(Semaphore::MAX_PERMITS, |s| s as usize),
            )),
            pending: AtomicU32::new(0),
            max_pending,
            retries_active: AtomicU32::new(0),
            max_retries,
        })
    }

    /// A slot for one request, waiting in the pending queue if there is room; `None`:
    /// overflow (503 UO).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let permit = self.permits.clone().acquire_owned().await.ok();
        self.pending.fetch_sub(1, Ordering::AcqRel);
        permit
    }

    /// Envoy's `max_retries`: concurrent retries across the cluster.
    pub fn try_retry(&self) -> Option<RetryGuard<'_>> {
        if self.retries_active.fetch_add(1, Ordering::AcqRel) >= self.max_retries {
            self.retries_active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryGuard(&self.retries_active))
    }
}

pub struct RetryGuard<'a>(&'a AtomicU32);

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_pct: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: Some(2),
            consecutive_gateway: None,
            interval: Duration::from_secs(1),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: max_pct,
            min_health_percent: 0,
        }
    }

    #[test]
    fn ejects_after_consecutive_5xx_within_max_percent() {
        let s = OutlierState::default();
        assert!(!s.record(&cfg(100), Outcome::Status(503), 2, 2));
        assert!(s.record(&cfg(100), Outcome::Status(500), 2, 2));
        assert!(s.is_ejected());
        // A success resets the count.
        let s = OutlierState::default();
        s.record(&cfg(100), Outcome::Status(503), 2, 2);
        s.record(&cfg(100), Outcome::Status(200), 2, 2);
        assert!(!s.record(&cfg(100), Outcome::Status(503), 2, 2));
    }

    #[test]
    fn default_max_ejection_percent_ejects_nothing_below_ten_hosts() {
        let s = OutlierState::default();
        s.record(&cfg(10), Outcome::LocalFailure, 2, 2);
        assert!(
            !s.record(&cfg(10), Outcome::LocalFailure, 2, 2),
            "(0+1)/2 > 10%"
        );
        assert!(!s.is_ejected());
    }

    #[tokio::test]
    async fn limiter_overflows_beyond_pending() {
        let policy = ClusterPolicy {
            max_connections: Some(1),
            max_pending: Some(1),
            ..Default::default()
        };
        let l = Arc::new(Limiter::new(&policy, false).expect("limits set"));
        let first = l.acquire().await.expect("first slot");
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire().await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(l.acquire().await.is_none(), "third request overflows");
        drop(first);
        assert!(
            waiter.await.expect("join"),
            "the pending request gets the slot"
        );
    }
}
