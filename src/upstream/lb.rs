//! Endpoint choice inside one cluster. The random value comes from the caller, so a test or a
//! simulation can replay a choice exactly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Endpoint;

/// DestinationRule `loadBalancer.simple`. Istio's default is LEAST_REQUEST, not round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

impl LbPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LbPolicy::LeastRequest => "LEAST_REQUEST",
            LbPolicy::RoundRobin => "ROUND_ROBIN",
            LbPolicy::Random => "RANDOM",
        }
    }
}

#[derive(Debug, Default)]
pub struct LbState {
    next: AtomicUsize,
}

/// One draw plus Envoy's `host_selection_retry_max_attempts` (5) for the previous-hosts predicate.
const AVOID_ATTEMPTS: u64 = 6;

pub fn pick<'e>(
    policy: LbPolicy,
    state: &LbState,
    eps: &'e [Arc<Endpoint>],
    random: u64,
    avoid: &[SocketAddr],
) -> Option<&'e Arc<Endpoint>> {
    if eps.is_empty() {
        return None;
    }
    let mut r = random;
    let mut chosen = pick_once(policy, state, eps, r);
    let mut tries = 1;
    while !avoid.is_empty() && avoid.contains(&chosen.addr) && tries < AVOID_ATTEMPTS {
        // A new, well-mixed value per attempt (splitmix64 step).
        r = mix(r.wrapping_add(0x9E37_79B9_7F4A_7C15));
        chosen = pick_once(policy, state, eps, r);
        tries += 1;
    }
    Some(chosen)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick_once<'e>(
    policy: LbPolicy,
    state: &LbState,
    eps: &'e [Arc<Endpoint>],
    r: u64,
) -> &'e Arc<Endpoint> {
    let n = eps.len();
    if n == 1 {
        return &eps[0];
    }
    match policy {
        LbPolicy::Random => weighted(eps, r),
        LbPolicy::RoundRobin => {
            let i = state.next.fetch_add(1, Ordering::Relaxed) as u64;
            weighted(eps, i)
        }
        LbPolicy::LeastRequest => {
            // Power of two choices, as Envoy does; weights scale the comparison.
            let a = &eps[(r % n as u64) as usize];
            let b = &eps[((r >> 32) % n as u64) as usize];
            let load_a = u64::from(a.active.load(Ordering::Relaxed)) * u64::from(b.weight);
            let load_b = u64::from(b.active.load(Ordering::Relaxed)) * u64::from(a.weight);
            if load_b < load_a { b } else { a }
        }
    }
}

/// `r` mapped onto the endpoints' cumulative weights (all weights ≥ 1).
fn weighted(eps: &[Arc<Endpoint>], r: u64) -> &Arc<Endpoint> {
    let total: u64 = eps.iter().map(|e| u64::from(e.weight)).sum();
    let mut x = r % total.max(1);
    for e in eps {
        let w = u64::from(e.weight);
        if x < w {
            return e;
        }
        x -= w;
    }
    &eps[eps.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::EndpointPool;

    fn ep(port: u16, weight: u32) -> Arc<Endpoint> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        Arc::new(Endpoint {
            addr,
            weight,
            labels: Default::default(),
            workload_name: None,
            active: Default::default(),
            pool: Arc::new(EndpointPool::new(addr, false)),
            metrics: Arc::new(crate::metrics::istio::DestMetrics::new(
                Arc::new(crate::metrics::Registry::default()),
                crate::metrics::istio::DestLabels::service_only("t", None),
            )),
            outlier: Default::default(),
        })
    }

    #[test]
    fn round_robin_follows_weights() {
        let eps = vec![ep(1, 1), ep(2, 3)];
        let st = LbState::default();
        let mut counts = [0; 2];
        for _ in 0..400 {
            let e = pick(LbPolicy::RoundRobin, &st, &eps, 0, &[]).expect("endpoint");
            counts[(e.addr.port() - 1) as usize] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let eps = vec![ep(1, 1), ep(2, 1)];
        eps[0].active.store(5, Ordering::Relaxed);
        let st = LbState::default();
        // r picks index 0 and (r >> 32) picks index 1: the idle one wins.
        let r = 1u64 << 32;
        let e = pick(LbPolicy::LeastRequest, &st, &eps, r, &[]).expect("endpoint");
        assert_eq!(e.addr.port(), 2);
    }

    #[test]
    fn avoids_previous_hosts_when_possible() {
        let eps = vec![ep(1, 1), ep(2, 1)];
        let st = LbState::default();
        let avoid = [eps[0].addr];
        // Five attempts at 1/2 each leave the avoided host about 1/32 of the time; the draws are
        // fixed, so this is deterministic.
        let hits = (0..1000u64)
            .filter(|r| {
                pick(LbPolicy::Random, &st, &eps, mix(*r), &avoid).map(|e| e.addr) == Some(avoid[0])
            })
            .count();
        assert!(hits < 100, "avoided host chosen {hits} times in 1000");
        let single = vec![ep(3, 1)];
        let e = pick(LbPolicy::Random, &st, &single, 7, &[single[0].addr]).expect("endpoint");
        assert_eq!(
            e.addr.port(),
            3,
            "the only endpoint is used even if tried before"
        );
        assert!(pick(LbPolicy::Random, &st, &[], 7, &[]).is_none());
    }
}
