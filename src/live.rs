//! What the admin page (`GET /`), its JSON (`GET /live.json`) and `switchyard top` show: per
//! route and destination, the configured weight beside the observed share, requests per
//! second, success rate and latency over the last 10 s and the last minute, and one point per
//! second for the last 5 minutes. A sampler reads each destination's window once a second;
//! nothing here touches the request path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::metrics::window::{Summary, Totals};
use crate::reload::Reloader;
use crate::route::Action;

/// Points kept per destination for the chart: five minutes at one a second.
const POINTS: usize = 300;
/// Full totals kept for the 10-second summaries.
const RECENT: usize = 11;

type Key = (String, String, String);

#[derive(Default)]
struct Track {
    /// Per-second requests and errors, oldest first.
    points: VecDeque<(u64, u64)>,
    recent: VecDeque<(Instant, Totals)>,
    last: Option<Totals>,
}

/// The sampler's memory, shared with whoever renders it.
pub struct Live {
    reloader: Arc<Reloader>,
    tracks: Mutex<HashMap<Key, Track>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Live {
    /// Starts the once-a-second sampler on the current runtime.
    pub fn start(reloader: Arc<Reloader>) -> Arc<Live> {
        let live = Arc::new(Live {
            reloader,
            tracks: Mutex::new(HashMap::new()),
        });
        let sampler = Arc::downgrade(&live);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(live) = sampler.upgrade() else {
                    return;
                };
                live.sample();
            }
        });
        live
    }

    fn sample(&self) {
        let table = self.reloader.table.load_full();
        let now = Instant::now();
        let mut tracks = lock(&self.tracks);
        let mut seen = Vec::new();
        for vh in table.virtual_hosts() {
            for r in vh.routes.iter() {
                let Action::Forward(pick) = &r.action else {
                    continue;
                };
                for (_, t) in pick.iter() {
                    let Some(c) = table.clusters.get(t.cluster) else {
                        continue;
                    };
                    let key = (vh.name.clone(), r.name.clone(), c.name.clone());
                    let totals = t.window.totals();
                    let track = tracks.entry(key.clone()).or_default();
                    let (req, err) = match &track.last {
                        Some(prev) => (
                            totals.requests.saturating_sub(prev.requests),
                            totals.errors.saturating_sub(prev.errors),
                        ),
                        None => (0, 0),
                    };
                    track.points.push_back((req, err));
                    while track.points.len() > POINTS {
                        track.points.pop_front();
                    }
                    track.recent.push_back((now, totals.clone()));
                    while track.recent.len() > RECENT {
                        track.recent.pop_front();
                    }
                    track.last = Some(totals);
                    seen.push(key);
                }
            }
        }
        // Routes gone from the config stop being tracked.
        tracks.retain(|k, _| seen.contains(k));
    }

    /// The documented JSON (README, "Live page").
    pub fn json(&self) -> Value {
        let table = self.reloader.table.load_full();
        let tracks = lock(&self.tracks);
        let mut routes = Vec::new();
        for vh in table.virtual_hosts() {
            for r in vh.routes.iter() {
                let Action::Forward(pick) = &r.action else {
                    continue;
                };
                let lone = pick.len() == 1;
                let mut dests = Vec::new();
                let mut sum10 = 0u64;
                let mut sum60 = 0u64;
                for (i, (w, t)) in pick.iter().enumerate() {
                    let Some(c) = table.clusters.get(t.cluster) else {
                        continue;
                    };
                    let key = (vh.name.clone(), r.name.clone(), c.name.clone());
                    let track = tracks.get(&key);
                    let ten = track.map_or_else(empty, |tr| {
                        match (tr.recent.front(), tr.recent.back()) {
                            (Some(a), Some(b)) if tr.recent.len() > 1 => {
                                (b.1.since(&a.1), b.0.duration_since(a.0).as_secs_f64())
                            }
                            _ => empty(),
                        }
                    });
                    let minute = t.window.last_minute();
                    sum10 += ten.0.requests;
                    sum60 += minute.requests;
                    let points = track.map(|tr| &tr.points);
                    dests.push((
                        ten,
                        minute,
                        json!({
                            "subset": if c.subset.is_empty() { c.service_host.to_string() } else { c.subset.clone() },
                            "cluster": c.name,
                            "weight": if lone { 100 } else { w },
                            "configured_share": pick.share(i),
                            "endpoints": c.endpoints().len(),
                            "series": {
                                "requests": points.map(|p| p.iter().map(|x| x.0).collect::<Vec<_>>()).unwrap_or_default(),
                                "errors": points.map(|p| p.iter().map(|x| x.1).collect::<Vec<_>>()).unwrap_or_default(),
                            },
                        }),
                    ));
                }
                let destinations: Vec<Value> = dests
                    .into_iter()
                    .map(|(ten, minute, mut d)| {
                        d["last_10s"] = period(&ten.0, ten.1, sum10);
                        d["last_1m"] = period(&minute, 60.0, sum60);
                        d
                    })
                    .collect();
                routes.push(json!({
                    "virtual_host": vh.name,
                    "route": r.name,
                    "destinations": destinations,
                }));
            }
        }
        let last_refused = self
            .reloader
            .last_report()
            .filter(|r| !r.accepted)
            .map(|r| {
                json!({
                    "time": epoch_secs(r.at),
                    "diagnostics": r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                })
            });
        json!({
            "config": {
                "version": table.version,
                "loaded_at": epoch_secs(table.loaded_at),
                "source_hash": table.source_hash,
                "last_refused": last_refused,
            },
            "routes": routes,
            "rollouts": crate::rollout::state::list(&self.reloader.ctx.path),
        })
    }
}

/// `switchyard top`'s frame: one line per route destination, from `/live.json`.
pub fn top_frame(j: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "config version {}   (10 s figures; share is of the route's requests)",
        j["config"]["version"]
    );
    if let Some(r) = j["config"]["last_refused"].as_object() {
        let _ = writeln!(
            o,
            "last reload REFUSED: {}",
            r.get("diagnostics")
                .and_then(|d| d.as_array())
                .and_then(|d| d.first())
                .and_then(|d| d.as_str())
                .unwrap_or("")
        );
    }
    for s in j["rollouts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "rollout {}: {} step {}/{} setWeight {} actualWeight {}",
            s["name"].as_str().unwrap_or(""),
            s["phase"].as_str().unwrap_or(""),
            s["step"],
            s["steps"],
            s["set_weight"],
            s["actual_weight"]
                .as_f64()
                .map_or("-".to_string(), |w| format!("{w:.1}"))
        );
    }
    let _ = writeln!(
        o,
        "{:<40} {:<10} {:>6} {:>8} {:>9} {:>9} {:>10}",
        "ROUTE", "SUBSET", "WEIGHT", "SHARE", "RATE", "SUCCESS", "P99"
    );
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0))
    };
    for r in j["routes"].as_array().into_iter().flatten() {
        let name = format!(
            "{} {}",
            r["virtual_host"].as_str().unwrap_or(""),
            r["route"].as_str().unwrap_or("")
        );
        for d in r["destinations"].as_array().into_iter().flatten() {
            let t = &d["last_10s"];
            let empty = d["endpoints"] == 0;
            let _ = writeln!(
                o,
                "{:<40} {:<10} {:>6} {:>8} {:>7.1}/s {:>9} {:>10}",
                name,
                d["subset"].as_str().unwrap_or(""),
                d["weight"],
                if empty {
                    "503 UH".to_string()
                } else {
                    pct(&t["share"])
                },
                t["rps"].as_f64().unwrap_or(0.0),
                pct(&t["success_rate"]),
                t["p99_ms"]
                    .as_f64()
                    .map_or("-".to_string(), |x| format!("{x:.1} ms"))
            );
        }
    }
    o
}

fn empty() -> (Summary, f64) {
    (
        Summary {
            requests: 0,
            success_rate: None,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
        },
        0.0,
    )
}

fn period(s: &Summary, secs: f64, route_total: u64) -> Value {
    json!({
        "requests": s.requests,
        "rps": if secs > 0.0 { (s.requests as f64 / secs * 10.0).round() / 10.0 } else { 0.0 },
        "share": (route_total > 0).then(|| s.requests as f64 / route_total as f64),
        "success_rate": s.success_rate,
        "p50_ms": s.p50_ms,
        "p99_ms": s.p99_ms,
    })
}
