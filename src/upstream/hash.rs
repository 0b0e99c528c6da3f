//! Consistent-hash endpoint choice (DestinationRule `loadBalancer.consistentHash`): the same
//! key reaches the same endpoint while the endpoint set holds, and few keys move when it
//! changes. Both of Envoy's tables are built: a ring (RING_HASH) and Maglev's lookup table.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

/// What the key is taken from (Istio `consistentHash` `hashKey`).
#[derive(Debug, Clone)]
pub enum HashKey {
    Header(http::HeaderName),
    /// With a TTL, a missing cookie is generated and set on the response.
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
    },
    SourceIp,
    Query(String),
}

#[derive(Debug, Clone, Copy)]
pub enum TableKind {
    /// `ringHash.minimumRingSize` (Envoy's default 1024).
    Ring(usize),
    /// `maglev.tableSize` (a prime, Envoy's default 65537).
    Maglev(usize),
}

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub key: HashKey,
    pub table: TableKind,
}

/// A stable 64-bit hash (SipHash with fixed keys): the same input maps the same way in every
/// process, so sticky assignment survives restarts of the proxy.
pub fn hash_bytes(b: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Maps a hash to an endpoint index.
#[derive(Debug)]
pub enum Table {
    Ring(Vec<(u64, usize)>),
    Maglev(Vec<u32>),
}

impl Table {
    /// `endpoints` are (address, weight) in the cluster's order.
    pub fn build(kind: TableKind, endpoints: &[(SocketAddr, u32)]) -> Option<Table> {
        if endpoints.is_empty() {
            return None;
        }
        Some(match kind {
            TableKind::Ring(min) => {
                let total: u64 = endpoints.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut ring = Vec::new();
                for (i, (addr, w)) in endpoints.iter().enumerate() {
                    // Each host gets ring points in proportion to its weight.
                    let n = ((min as u64 * u64::from(*w)).div_ceil(total.max(1))).max(1);
                    for j in 0..n {
                        ring.push((hash_bytes(format!("{addr}_{j}").as_bytes()), i));
                    }
                }
                ring.sort_unstable();
                Table::Ring(ring)
            }
            TableKind::Maglev(size) => Table::Maglev(maglev(size, endpoints)),
        })
    }

    pub fn lookup(&self, hash: u64) -> usize {
        match self {
            Table::Ring(ring) => {
                let i = ring.partition_point(|(h, _)| *h < hash);
                ring[i % ring.len()].1
            }
            Table::Maglev(t) => t[(hash % t.len() as u64) as usize] as usize,
        }
    }
}

/// Maglev's table population (Eisenbud et al., 2016), weighted as Envoy does by letting
/// heavier hosts take turns more often.
fn maglev(size: usize, endpoints: &[(SocketAddr, u32)]) -> Vec<u32> {
    let m = size.max(1) as u64;
    let n = endpoints.len();
    let max_w = endpoints.iter().map(|(_, w)| *w).max().unwrap_or(1).max(1);
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|(a, _)| {
            let name = a.to_string();
            let offset = hash_bytes(name.as_bytes()) % m;
            let skip = hash_bytes(format!("{name}#skip").as_bytes()) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut credit = vec![0u64; n];
    let mut table = vec![u32::MAX; size.max(1)];
    let mut filled = 0usize;
    while filled < table.len() {
        for i in 0..n {
            credit[i] += u64::from(endpoints[i].1);
            if credit[i] < u64::from(max_w) {
                continue;
            }
            credit[i] -= u64::from(max_w);
            let (offset, skip) = perms[i];
            loop {
                let c = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[c] == u32::MAX {
                    table[c] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == table.len() {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| (SocketAddr::from(([10, 0, 0, 1], 8000 + i)), 1))
            .collect()
    }

    #[test]
    fn same_key_same_endpoint_and_spread() {
        for kind in [TableKind::Ring(1024), TableKind::Maglev(65537)] {
            let t = Table::build(kind, &eps(4)).expect("table");
            let mut counts = [0usize; 4];
            for k in 0..4000u32 {
                let h = hash_bytes(&k.to_le_bytes());
                assert_eq!(t.lookup(h), t.lookup(h));
                counts[t.lookup(h)] += 1;
            }
            assert!(counts.iter().all(|c| *c > 500), "{kind:?}: {counts:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_few_keys() {
        for kind in [TableKind::Ring(1024), TableKind::Maglev(65537)] {
            let four = Table::build(kind, &eps(4)).expect("table");
            let three = Table::build(kind, &eps(3)).expect("table");
            let moved = (0..4000u32)
                .filter(|k| {
                    let h = hash_bytes(&k.to_le_bytes());
                    let before = four.lookup(h);
                    before != 3 && three.lookup(h) != before
                })
                .count();
            assert!(
                moved < 600,
                "{kind:?}: {moved} keys of the surviving hosts moved"
            );
        }
    }
}
