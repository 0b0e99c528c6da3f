//! Success rate and latency percentiles per route and subset, over the last minute and since
//! start, for `/stats/subsets`: what a rollout gate reads without running Prometheus. Six
//! ten-second slots rotate; each holds a fine log-scale latency histogram, so percentiles are
//! within about 9% of the true value.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bucket i covers latencies up to 2^(i/8) microseconds: ~9% wide, 1 µs to over an hour.
const BUCKETS: usize = 264;
const SLOT_SECS: u64 = 10;
const SLOTS: usize = 6;

#[derive(Debug)]
struct Slot {
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            epoch: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for b in self.latency.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    fn record(&self, bucket: usize, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// Latency and success for one (route, subset).
#[derive(Debug)]
pub struct Window {
    slots: [Slot; SLOTS],
    total: Slot,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: std::array::from_fn(|_| Slot::new()),
            total: Slot::new(),
        }
    }
}

/// Seconds since the process's first use of a window, at `t`: periods are relative, and a
/// monotonic clock needs no extra clock read on the request path (the caller has the time).
fn secs_at(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_secs()
}

/// 2^(j/8) for j in 0..8, as fixed point with 63 fractional bits (rounded down).
const EIGHTHS: [u64; 8] = [
    0x8000_0000_0000_0000,
    0x8B95_C1E3_EA8B_D6E6,
    0x9837_F051_8DB8_A96F,
    0xA5FE_D6A9_B151_38EA,
    0xB504_F333_F9DE_6484,
    0xC567_2A11_5506_DADD,
    0xD744_FCCA_D69D_6AF4,
    0xEAC0_C6E7_DD24_392E,
];

/// The smallest i with 2^(i/8) ≥ `micros`, i.e. ⌈8·log2(micros)⌉, in integers: every request
/// records one, and a libm `log2` cost more than the rest of the recording.
fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    let k = 63 - micros.leading_zeros();
    // micros is in [2^k, 2^(k+1)): the bucket is 8k + the first eighth whose bound reaches it
    // (an integer is ≤ a bound exactly when it is ≤ the bound's floor).
    let eighth = EIGHTHS
        .iter()
        .position(|&f| ((u128::from(f) << k) >> 63) >= u128::from(micros))
        .unwrap_or(8);
    (8 * k as usize + eighth).min(BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 8.0) / 1000.0
}

/// A summary of one period.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    /// Share of requests not answered 5xx (Flagger's definition: 4xx counts as success).
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Window {
    /// A request that started at `started` and took `elapsed`; `error`: the response was 5xx
    /// (or no response).
    pub fn record(&self, started: Instant, elapsed: Duration, error: bool) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = bucket_of(micros);
        let epoch = secs_at(started + elapsed) / SLOT_SECS;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        // The first writer of a new period clears what the slot held six periods ago.
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.reset();
        }
        slot.record(bucket, error);
        self.total.record(bucket, error);
    }

    pub fn last_minute(&self) -> Summary {
        let epoch = secs_at(Instant::now()) / SLOT_SECS;
        let live: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| {
                let e = s.epoch.load(Ordering::Acquire);
                e != u64::MAX && epoch.saturating_sub(e) < SLOTS as u64
            })
            .collect();
        summarize(&live)
    }

    pub fn since_start(&self) -> Summary {
        summarize(&[&self.total])
    }

    /// The running totals, to subtract an earlier copy from: a summary over any period,
    /// exact to the request, not only the ten-second slots.
    pub fn totals(&self) -> Totals {
        let t = &self.total;
        Totals {
            requests: t.requests.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
            latency: t
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A copy of a window's totals at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    latency: Box<[u64]>,
}

impl Totals {
    /// Adds another window's totals (several clusters of one subset).
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.len() < other.latency.len() {
            let mut grown = vec![0; other.latency.len()];
            grown[..self.latency.len()].copy_from_slice(&self.latency);
            self.latency = grown.into();
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a += b;
        }
    }

    /// What happened between `earlier` and these totals.
    pub fn since(&self, earlier: &Totals) -> Summary {
        let slot = Slot::new();
        slot.requests.store(
            self.requests.saturating_sub(earlier.requests),
            Ordering::Relaxed,
        );
        slot.errors.store(
            self.errors.saturating_sub(earlier.errors),
            Ordering::Relaxed,
        );
        for (i, b) in slot.latency.iter().enumerate() {
            let now = self.latency.get(i).copied().unwrap_or(0);
            let then = earlier.latency.get(i).copied().unwrap_or(0);
            b.store(now.saturating_sub(then), Ordering::Relaxed);
        }
        summarize(&[&slot])
    }
}

fn summarize(slots: &[&Slot]) -> Summary {
    let requests: u64 = slots
        .iter()
        .map(|s| s.requests.load(Ordering::Relaxed))
        .sum();
    let errors: u64 = slots.iter().map(|s| s.errors.load(Ordering::Relaxed)).sum();
    let mut hist = vec![0u64; BUCKETS];
    for s in slots {
        for (h, b) in hist.iter_mut().zip(s.latency.iter()) {
            *h += b.load(Ordering::Relaxed);
        }
    }
    let total: u64 = hist.iter().sum();
    let quantile = |q: f64| -> Option<f64> {
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in hist.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((bucket_upper_ms(i) * 1000.0).round() / 1000.0);
            }
        }
        None
    };
    Summary {
        requests,
        success_rate: (requests > 0).then(|| (requests - errors) as f64 / requests as f64),
        p50_ms: quantile(0.5),
        p90_ms: quantile(0.9),
        p99_ms: quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_within_nine_percent() {
        for micros in [2u64, 10, 999, 1000, 25_000, 3_600_000_000] {
            let upper = bucket_upper_ms(bucket_of(micros)) * 1000.0;
            assert!(upper >= micros as f64 * 0.999, "{micros}: {upper}");
            assert!(upper <= micros as f64 * 1.091, "{micros}: {upper}");
        }
    }

    /// The float definition the integer one replaced.
    fn bucket_by_log2(micros: u64) -> usize {
        if micros <= 1 {
            return 0;
        }
        (((micros as f64).log2() * 8.0).ceil() as usize).min(BUCKETS - 1)
    }

    #[test]
    fn integer_buckets_match_the_log2_definition() {
        // Around every bound (where the two could disagree), over a dense low range, and at
        // the extremes.
        let mut probes: Vec<u64> = (0..100_000).collect();
        for i in 0..BUCKETS + 8 {
            let bound = 2f64.powf(i as f64 / 8.0) as u64;
            probes.extend(bound.saturating_sub(2)..=bound.saturating_add(2));
        }
        probes.extend([u64::MAX, u64::MAX / 2, 1 << 40, (1 << 33) + 1]);
        for m in probes {
            assert_eq!(bucket_of(m), bucket_by_log2(m), "{m} µs");
        }
    }

    #[test]
    fn summary_counts_errors_and_quantiles() {
        let w = Window::default();
        let now = Instant::now();
        for i in 0..100 {
            w.record(now, Duration::from_millis(3), i % 10 == 0);
        }
        let s = w.since_start();
        assert_eq!(s.requests, 100);
        assert_eq!(s.success_rate, Some(0.9));
        assert!(s.p99_ms.is_some());
        assert_eq!(w.last_minute().requests, 100);
    }
}
