//! `resolution: DNS` endpoints: names resolved in the background every few seconds. A failed
//! lookup keeps the last good addresses, as Envoy's STRICT_DNS clusters do, so a DNS blip does
//! not empty a cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, Endpoint, PoolRegistry};
use crate::config::istio::Labels;

/// How often names are re-resolved (Envoy's `dns_refresh_rate` default).
pub const REFRESH: Duration = Duration::from_secs(5);
/// A lookup that takes longer than this counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One name to resolve, with what the endpoints it yields carry.
#[derive(Debug, Clone)]
pub struct DnsTarget {
    pub hostname: String,
    pub port: u16,
    pub labels: Labels,
    pub weight: u32,
    pub workload_name: Option<String>,
    /// DNS_ROUND_ROBIN (Envoy LOGICAL_DNS): only the first address is used.
    pub first_only: bool,
}

/// Resolves every target of `cluster` once and installs the result; a target whose lookup
/// fails keeps the endpoints it had. Returns the names that failed.
pub async fn refresh(cluster: &Cluster, pools: &PoolRegistry) -> Vec<String> {
    let super::Discovery::Dns(targets) = &cluster.discovery else {
        return Vec::new();
    };
    let previous = cluster.endpoints();
    let mut next: Vec<Arc<Endpoint>> = Vec::new();
    let mut failed = Vec::new();
    for t in targets {
        match lookup(&t.hostname, t.port).await {
            Ok(addrs) if !addrs.is_empty() => {
                let take = if t.first_only { 1 } else { addrs.len() };
                for addr in addrs.into_iter().take(take) {
                    let existing = previous.iter().find(|e| e.addr == addr);
                    next.push(match existing {
                        Some(e) => e.clone(),
                        None => Arc::new(Endpoint {
                            addr,
                            weight: t.weight,
                            labels: t.labels.clone(),
                            workload_name: t.workload_name.clone(),
                            active: Default::default(),
                            pool: pools.get(addr, cluster.h2),
                        }),
                    });
                }
            }
            _ => {
                failed.push(t.hostname.clone());
                // Keep what this name resolved to last time.
                next.extend(
                    previous
                        .iter()
                        .filter(|e| e.labels == t.labels && e.workload_name == t.workload_name)
                        .cloned(),
                );
            }
        }
    }
    next.dedup_by(|a, b| a.addr == b.addr);
    cluster.set_endpoints(next);
    failed
}

async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(r) => r.map(|it| it.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "DNS lookup timed out",
        )),
    }
}

/// Refreshes the DNS clusters of one table until aborted (the table aborts it when dropped).
pub fn spawn_refresher(
    clusters: Vec<Arc<Cluster>>,
    pools: Arc<PoolRegistry>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            for c in &clusters {
                let failed = refresh(c, &pools).await;
                if !failed.is_empty() {
                    tracing::warn!(cluster = %c.name, names = ?failed, "DNS refresh failed; keeping the last good addresses");
                }
            }
        }
    })
}
