//! A lock-free histogram with fixed bucket bounds, in Prometheus' cumulative text form.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Envoy's default histogram buckets, which Istio's three request histograms use.
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Observations are integers in a raw unit (`scale` raw units per exposed unit): durations
/// are observed in microseconds and exposed in milliseconds, so sums stay exact integers.
#[derive(Debug)]
pub struct Histogram {
    scale: f64,
    counts: [AtomicU64; ENVOY_BUCKETS.len() + 1],
    sum_raw: AtomicU64,
}

impl Histogram {
    pub fn new(scale: u64) -> Histogram {
        Histogram {
            scale: scale as f64,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_raw: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, raw: u64) {
        let v = raw as f64 / self.scale;
        let i = ENVOY_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(ENVOY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_raw.fetch_add(raw, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum_raw.load(Ordering::Relaxed) as f64 / self.scale
    }

    /// Writes `name_bucket{labels,le="…"}`, `name_sum`, `name_count`.
    pub fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in ENVOY_BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[ENVOY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum());
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = Histogram::new(1000);
        h.observe(500); // 0.5 ms: in le="0.5"
        h.observe(3_000); // 3 ms: le="5"
        h.observe(4_000_000_000); // beyond the last bound
        let mut out = String::new();
        h.encode(&mut out, "d", "a=\"b\"");
        assert!(out.contains("d_bucket{a=\"b\",le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("d_bucket{a=\"b\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("d_bucket{a=\"b\",le=\"5\"} 2\n"), "{out}");
        assert!(
            out.contains("d_bucket{a=\"b\",le=\"3600000\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("d_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("d_count{a=\"b\"} 3\n"), "{out}");
        assert!(out.contains("d_sum{a=\"b\"} 4000003.5\n"), "{out}");
    }
}
