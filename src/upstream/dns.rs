//! `resolution: DNS` endpoints: names resolved in the background every 5 s, or sooner when a
//! record's TTL runs out first. A failed lookup keeps the last good addresses, as Envoy's
//! STRICT_DNS clusters do, so a DNS blip does not empty a cluster.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use super::{Cluster, Endpoint, PoolRegistry};
use crate::config::istio::Labels;

/// How often names are re-resolved (Envoy's `dns_refresh_rate` default).
pub const REFRESH: Duration = Duration::from_secs(5);
/// A TTL of 0 must not turn the refresher into a busy loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
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

/// What one refresh of a cluster found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Names whose lookup failed (their last good addresses were kept).
    pub failed: Vec<String>,
    /// The earliest moment a record it used expires.
    pub valid_until: Option<Instant>,
}

/// Resolves every target of `cluster` once and installs the result; a target whose lookup
/// fails keeps the endpoints it had.
pub async fn refresh(cluster: &Cluster, pools: &PoolRegistry) -> Refreshed {
    let mut out = Refreshed::default();
    let super::Discovery::Dns(targets) = &cluster.discovery else {
        return out;
    };
    let previous = cluster.endpoints();
    let mut next: Vec<Arc<Endpoint>> = Vec::new();
    for t in targets {
        match lookup(&t.hostname, t.port).await {
            Ok((addrs, valid_until)) if !addrs.is_empty() => {
                if let Some(v) = valid_until {
                    out.valid_until = Some(out.valid_until.map_or(v, |o| o.min(v)));
                }
                let take = if t.first_only { 1 } else { addrs.len() };
                for addr in addrs.into_iter().take(take) {
                    let existing = previous.iter().find(|e| e.addr == addr);
                    next.push(match existing {
                        Some(e) => e.clone(),
                        None => cluster.new_endpoint(
                            addr,
                            t.weight,
                            t.labels.clone(),
                            t.workload_name.clone(),
                            pools.get_with(addr, cluster.h2, &cluster.conn),
                        ),
                    });
                }
            }
            _ => {
                out.failed.push(t.hostname.clone());
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
    out
}

/// The system's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`), without a cache so
/// every refresh asks again, as Envoy's resolver does. `None` when the system config cannot be
/// read: lookups then go through the OS (`getaddrinfo`), which reports no TTL.
fn resolver() -> Option<&'static TokioResolver> {
    static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();
    RESOLVER.get_or_init(|| build_resolver(false)).as_ref()
}

/// The resolver for names a request routes to by itself (ALLOW_ANY passthrough, and
/// PASSTHROUGH / `resolution: NONE` clusters): with a cache that keeps each answer for its
/// TTL, as Envoy's dynamic forward proxy keeps a DNS cache. Without one, every such request
/// asked the OS (`getaddrinfo` on a blocking thread, and a DNS round trip for a name not in
/// `/etc/hosts`). `None` when the system config cannot be read.
fn caching_resolver() -> Option<&'static TokioResolver> {
    static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();
    RESOLVER.get_or_init(|| build_resolver(true)).as_ref()
}

fn build_resolver(cached: bool) -> Option<TokioResolver> {
    let mut builder = TokioResolver::builder_tokio().ok()?;
    let opts = builder.options_mut();
    if !cached {
        opts.cache_size = 0;
    }
    // Envoy's V4_PREFERRED, as Istio configures DNS clusters: IPv4 addresses when the name has
    // any, IPv6 only otherwise (so `localhost` is 127.0.0.1, not also ::1).
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4thenIpv6;
    builder.build().ok()
}

/// The address a request for `host:port` goes to when it names its own destination: an IP
/// literal as it is, a name through the caching resolver (IPv4 first, as for DNS clusters),
/// or through the OS when the system's resolver config cannot be read. `None` if the name
/// does not resolve within the lookup timeout.
pub async fn resolve_passthrough(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let (addrs, _) = lookup_with(caching_resolver(), host, port).await.ok()?;
    addrs.into_iter().next()
}

type Lookup = (Vec<SocketAddr>, Option<Instant>);

async fn lookup(host: &str, port: u16) -> std::io::Result<Lookup> {
    lookup_with(resolver(), host, port).await
}

/// Resolves `host` with `resolver`, or through the OS when there is none.
async fn lookup_with(
    resolver: Option<&TokioResolver>,
    host: &str,
    port: u16,
) -> std::io::Result<Lookup> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out");
    if let Some(r) = resolver {
        return match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(host)).await {
            Ok(Ok(ips)) => Ok((
                ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                Some(ips.valid_until()),
            )),
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(_) => Err(timed_out()),
        };
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(r) => r.map(|it| (it.collect(), None)),
        Err(_) => Err(timed_out()),
    }
}

/// When to resolve again: after `REFRESH`, or when the earliest record expires if sooner.
pub fn next_refresh(valid_until: Option<Instant>, now: Instant) -> Duration {
    let ttl = valid_until.map_or(REFRESH, |v| v.saturating_duration_since(now));
    ttl.clamp(MIN_REFRESH, REFRESH)
}

/// Refreshes the DNS clusters of one table until aborted (the table aborts it when dropped).
pub fn spawn_refresher(
    clusters: Vec<Arc<Cluster>>,
    pools: Arc<PoolRegistry>,
    first_valid_until: Option<Instant>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = next_refresh(first_valid_until, Instant::now());
        loop {
            tokio::time::sleep(wait).await;
            let mut earliest: Option<Instant> = None;
            for c in &clusters {
                let r = refresh(c, &pools).await;
                if let Some(v) = r.valid_until {
                    earliest = Some(earliest.map_or(v, |e| e.min(v)));
                }
                if !r.failed.is_empty() {
                    tracing::warn!(cluster = %c.name, names = ?r.failed, "DNS refresh failed; keeping the last good addresses");
                }
            }
            wait = next_refresh(earliest, Instant::now());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_follows_ttl_within_bounds() {
        let now = Instant::now();
        assert_eq!(next_refresh(None, now), REFRESH);
        assert_eq!(
            next_refresh(Some(now + Duration::from_secs(300)), now),
            REFRESH
        );
        assert_eq!(
            next_refresh(Some(now + Duration::from_secs(2)), now),
            Duration::from_secs(2)
        );
        assert_eq!(next_refresh(Some(now), now), MIN_REFRESH);
    }
}

#[cfg(test)]
mod lookup_tests {
    #[tokio::test]
    async fn localhost_prefers_ipv4_without_network() {
        let (addrs, valid_until) = super::lookup("localhost", 8080)
            .await
            .expect("localhost resolves");
        assert_eq!(
            addrs,
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], 8080))]
        );
        assert!(valid_until.is_some() || super::resolver().is_none());
    }

    #[tokio::test]
    async fn passthrough_takes_literals_as_they_are_and_names_v4_first() {
        let v6 = super::resolve_passthrough("::1", 81).await;
        assert_eq!(v6, Some("[::1]:81".parse().expect("addr")));
        let named = super::resolve_passthrough("localhost", 8080).await;
        assert_eq!(
            named,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
    }
}
