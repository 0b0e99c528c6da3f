//! `switchyard simulate`: one request routed N times through the real `RouteTable::route`,
//! each time with a fresh uniform draw from a seeded RNG, exactly as the proxy draws one per
//! request. It makes the canary articles' point visible: "5%" means each request has an
//! independent 5% chance, not "every twentieth request".

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::explain::{RequestSpec, destination_label, route_label};
use crate::route::{Action, Decision, OutboundPolicy, RouteTable};

/// Two-sided 99% normal quantile.
pub const Z_99: f64 = 2.575_829_303_548_900_4;

/// Most draws `--verbose` lists.
const SHOWN_DRAWS: usize = 40;

#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub requests: u64,
    pub seed: u64,
}

/// One outcome: a weighted destination, or the single answer a non-forwarding route gives.
#[derive(Debug, Clone)]
pub struct Row {
    /// Subset (or host) for a destination; `404 NR` etc. otherwise.
    pub label: String,
    /// Cluster name for a destination.
    pub cluster: Option<String>,
    pub configured: f64,
    pub count: u64,
    /// Most consecutive requests that did not land here.
    pub longest_miss: u64,
    last_hit: Option<u64>,
}

impl Row {
    fn new(label: String, cluster: Option<String>, configured: f64) -> Row {
        Row {
            label,
            cluster,
            configured,
            count: 0,
            longest_miss: 0,
            last_hit: None,
        }
    }

    fn hit(&mut self, i: u64) {
        let gap = match self.last_hit {
            Some(last) => i - last - 1,
            None => i,
        };
        self.longest_miss = self.longest_miss.max(gap);
        self.last_hit = Some(i);
        self.count += 1;
    }

    fn finish(&mut self, n: u64) {
        let tail = match self.last_hit {
            Some(last) => n - last - 1,
            None => n,
        };
        self.longest_miss = self.longest_miss.max(tail);
    }

    /// Whether the configured share lies inside the 99% Wilson interval of what was observed.
    pub fn configured_inside(&self, n: u64) -> bool {
        let (lo, hi) = wilson(self.count, n, Z_99);
        // The bounds of a 0% or 100% observation are 0 and 1 up to rounding.
        self.configured >= lo - 1e-12 && self.configured <= hi + 1e-12
    }

    pub fn observed(&self, n: u64) -> f64 {
        if n == 0 {
            0.0
        } else {
            self.count as f64 / n as f64
        }
    }
}

/// Wilson score interval for `count` successes out of `n` at normal quantile `z`.
pub fn wilson(count: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = count as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

#[derive(Debug, Clone)]
pub struct Report {
    pub request: String,
    pub requests: u64,
    pub seed: u64,
    /// `VirtualService/default/frontend-vs http[1] "canary-split"`, or why nothing matched.
    pub route: String,
    pub weights: Option<String>,
    pub rows: Vec<Row>,
    /// The first draws' outcomes (row indexes), for `--verbose`.
    pub first: Vec<usize>,
    pub elapsed: Duration,
}

/// Routes `req` `opts.requests` times.
pub fn simulate(table: &RouteTable, req: &RequestSpec, opts: SimOptions) -> Report {
    let view = req.view();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut rows: Vec<Row> = Vec::new();
    let mut weights = None;

    // The outcomes to expect, from one decision: every destination of a weighted route gets
    // a row even if it is never drawn.
    let route_text = match table.route(&req.host, &view, 0) {
        Decision::Forward { vhost, route, .. } => {
            if let Action::Forward(pick) = &route.action {
                let mut labels: Vec<String> = Vec::new();
                for (i, (_, t)) in pick.iter().enumerate() {
                    let (label, name) = match table.clusters.get(t.cluster) {
                        // As explain says: every request drawn here is answered 503 UH.
                        Some(c) if has_no_endpoints(c) => (
                            format!("{} -> 503 UH (no endpoints)", destination_label(c)),
                            Some(c.name.clone()),
                        ),
                        Some(c) => (destination_label(c), Some(c.name.clone())),
                        None => (format!("#{i}"), None),
                    };
                    let label = if labels.contains(&label) {
                        format!("{label}#{i}")
                    } else {
                        label
                    };
                    labels.push(label.clone());
                    rows.push(Row::new(label, name, pick.share(i)));
                }
                if pick.len() > 1 {
                    let ws: Vec<String> = pick.iter().map(|(w, _)| w.to_string()).collect();
                    weights = Some(format!("{} = {}", ws.join(" + "), pick.total()));
                }
            }
            format!("{} {}", vhost.name, route_label(route))
        }
        Decision::Redirect {
            vhost,
            route,
            redirect,
        } => {
            rows.push(Row::new(
                format!("redirect {}", redirect.code.as_u16()),
                None,
                1.0,
            ));
            format!("{} {}", vhost.name, route_label(route))
        }
        Decision::Direct {
            vhost,
            route,
            response,
        } => {
            rows.push(Row::new(
                format!("direct {}", response.status.as_u16()),
                None,
                1.0,
            ));
            format!("{} {}", vhost.name, route_label(route))
        }
        Decision::NoRoute { vhost } => {
            rows.push(Row::new("404 NR".to_string(), None, 1.0));
            format!("{}: no route matched", vhost.name)
        }
        Decision::UnknownHost => {
            let label = match table.outbound_policy {
                OutboundPolicy::RegistryOnly => "502 (REGISTRY_ONLY)",
                OutboundPolicy::AllowAny => "passthrough (ALLOW_ANY)",
            };
            rows.push(Row::new(label.to_string(), None, 1.0));
            format!("no VirtualService or ServiceEntry serves {:?}", req.host)
        }
    };

    let mut first = Vec::with_capacity(SHOWN_DRAWS);
    let started = Instant::now();
    for i in 0..opts.requests {
        let r: u64 = rng.random();
        let row = match table.route(&req.host, &view, r) {
            Decision::Forward { route, target, .. } => match &route.action {
                Action::Forward(pick) => pick
                    .iter()
                    .position(|(_, t)| std::ptr::eq(t, target))
                    .unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        };
        if let Some(x) = rows.get_mut(row) {
            x.hit(i);
        }
        if first.len() < SHOWN_DRAWS {
            first.push(row);
        }
    }
    let elapsed = started.elapsed();
    for row in &mut rows {
        row.finish(opts.requests);
    }
    Report {
        request: req.summary(),
        requests: opts.requests,
        seed: opts.seed,
        route: route_text,
        weights,
        rows,
        first,
        elapsed,
    }
}

/// A cluster that can never be sent to, as `explain` reports it: no static endpoint, or a
/// DNS cluster with no name to resolve. A resolution-NONE cluster forwards to the address
/// the request names.
fn has_no_endpoints(c: &crate::upstream::Cluster) -> bool {
    match &c.discovery {
        crate::upstream::Discovery::OriginalDst => false,
        crate::upstream::Discovery::Dns(targets) => targets.is_empty(),
        crate::upstream::Discovery::Static => c.endpoints().is_empty(),
    }
}

fn pct3(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

impl Report {
    /// The printed report. Identical for identical inputs and seed unless `verbose` (which
    /// adds the wall-clock time).
    pub fn render(&self, verbose: bool) -> String {
        let mut o = String::new();
        let n = self.requests;
        let _ = writeln!(o, "simulate: {}", self.request);
        let _ = writeln!(o, "requests: {n}, seed {}", self.seed);
        let _ = write!(o, "route:    {}", self.route);
        if let Some(w) = &self.weights {
            let _ = write!(o, " (weights {w})");
        }
        let _ = writeln!(o);
        let _ = writeln!(o);

        let head = [
            "destination",
            "configured",
            "requests",
            "observed",
            "99% interval (Wilson score)",
            "longest run without",
        ];
        let bounds: Vec<(String, String)> = self
            .rows
            .iter()
            .map(|r| {
                let (lo, hi) = wilson(r.count, n, Z_99);
                (pct3(lo), pct3(hi))
            })
            .collect();
        let lo_w = bounds.iter().map(|b| b.0.len()).max().unwrap_or(0);
        let hi_w = bounds.iter().map(|b| b.1.len()).max().unwrap_or(0);
        let body: Vec<[String; 6]> = self
            .rows
            .iter()
            .zip(&bounds)
            .map(|(r, (lo, hi))| {
                [
                    r.label.clone(),
                    pct3(r.configured),
                    r.count.to_string(),
                    pct3(r.observed(n)),
                    format!("[{lo:>lo_w$}, {hi:>hi_w$}]"),
                    r.longest_miss.to_string(),
                ]
            })
            .collect();
        let mut width = head.map(|h| h.chars().count());
        for row in &body {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |o: &mut String, cells: &[String; 6]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(cell.chars().count());
                if i == 0 || i == 4 {
                    s.push_str(cell);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                }
                s.push_str("  ");
            }
            let _ = writeln!(o, "{}", s.trim_end());
        };
        line(&mut o, &head.map(str::to_string));
        for row in &body {
            line(&mut o, row);
        }
        let _ = writeln!(o);

        for r in &self.rows {
            if let Some(c) = &r.cluster {
                let _ = writeln!(o, "{} = {c}", r.label);
            }
        }
        if self.rows.len() < 2 {
            let _ = writeln!(
                o,
                "Every request gets the same answer: this route does not split traffic."
            );
        } else {
            let inside = self.rows.iter().filter(|r| r.configured_inside(n)).count();
            let _ = writeln!(
                o,
                "The configured share lies inside the 99% interval for {inside} of {} destinations; about 1 in 100 falls outside by chance.",
                self.rows.len()
            );
            if let Some(small) = self
                .rows
                .iter()
                .filter(|r| r.configured > 0.0 && r.configured < 1.0)
                .min_by(|a, b| a.configured.total_cmp(&b.configured))
            {
                let miss = 1.0 - small.configured;
                let _ = writeln!(
                    o,
                    "Each request is an independent draw: with {} to {}, 10 requests in a row all miss it with probability {}, 100 in a row {}.",
                    crate::explain::percent(small.configured),
                    small.label,
                    crate::explain::percent(miss.powi(10)),
                    crate::explain::percent(miss.powi(100)),
                );
            }
        }
        if verbose {
            let _ = writeln!(o);
            let shown: Vec<&str> = self
                .first
                .iter()
                .filter_map(|&i| self.rows.get(i).map(|r| r.label.as_str()))
                .collect();
            let _ = writeln!(o, "first {} draws: {}", shown.len(), shown.join(" "));
            let per = if n == 0 {
                0.0
            } else {
                self.elapsed.as_nanos() as f64 / n as f64
            };
            let _ = writeln!(
                o,
                "time: {n} routing decisions in {:.1} ms ({per:.0} ns each)",
                self.elapsed.as_secs_f64() * 1000.0
            );
        }
        o
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_a_known_value() {
        // 5000 of 100000 at z = 2.5758: about 4.825% .. 5.182%.
        let (lo, hi) = wilson(5_000, 100_000, Z_99);
        assert!((lo - 0.048_26).abs() < 1e-4, "{lo}");
        assert!((hi - 0.051_80).abs() < 1e-4, "{hi}");
        assert_eq!(wilson(0, 0, Z_99), (0.0, 1.0));
        let (lo, hi) = wilson(10, 10, Z_99);
        assert!(hi <= 1.0 && lo > 0.5);
    }

    #[test]
    fn longest_miss_counts_leading_inner_and_trailing_gaps() {
        let mut r = Row::new("a".into(), None, 0.5);
        for i in [3, 4, 9] {
            r.hit(i);
        }
        r.finish(12);
        assert_eq!((r.count, r.longest_miss), (3, 4));
        let mut never = Row::new("b".into(), None, 0.0);
        never.finish(7);
        assert_eq!(never.longest_miss, 7);
    }
}
