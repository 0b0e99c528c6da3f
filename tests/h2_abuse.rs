//! HTTP/2 abuse against the real `switchyard` binary (issue #8; reliability.md R12), driven by
//! frame-level probes written in Rust (tests/h2probes/mod.rs: hand-built frames over a
//! `TcpStream`): rapid reset, CONTINUATION flood, SETTINGS and PING floods, one stream past
//! `max_concurrent_streams`, and a header list over the limit. Each probe runs against its own
//! proxy process, whose RSS (/proc/<pid>/status VmRSS) is read before and after; the proxy must
//! still serve a normal request afterwards.
//!
//! The four floods take 1-5 s each and are `#[ignore]`d; CI runs them with
//! `cargo test --test h2_abuse -- --ignored`. The rest stay in the default suite, which needs
//! nothing but the Rust toolchain.

#[path = "h2probes/mod.rs"]
mod h2probes;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use h2probes::{Conn, Report};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Per-probe budget; each finishes in a few seconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(40);
/// reliability.md R12: floods must not grow the proxy by more than this.
const MAX_RSS_GROWTH_KB: u64 = 20 * 1024;
/// h2 error codes (RFC 9113 §7).
const REFUSED_STREAM: u32 = 7;
/// GOAWAY ENHANCE_YOUR_CALM.
const ENHANCE_YOUR_CALM: u32 = 11;

/// `web` on a real upstream; `/hold` is delayed 10 s by a fault so its streams stay open.
fn config(up: &Upstream) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts:
  - web
  http:
  - match:
    - uri:
        prefix: /hold
    fault:
      delay:
        fixedDelay: 10s
        percentage:
          value: 100
    route:
    - destination:
        host: web
  - route:
    - destination:
        host: web
",
        service_yaml("web", &[("v1", up.addr)])
    )
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

type Probe = fn(&mut Conn) -> Report;

/// Runs one probe on its own thread and connection, bounded by PROBE_TIMEOUT.
fn run_probe(name: &str, probe: Probe, addr: std::net::SocketAddr) -> Report {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let report = match Conn::connect(addr, "web") {
            Ok(mut conn) => probe(&mut conn),
            Err(e) => Report {
                error: Some(format!("connect {addr}: {e}")),
                ..Report::default()
            },
        };
        let _ = tx.send(report);
    });
    rx.recv_timeout(PROBE_TIMEOUT)
        .unwrap_or_else(|e| panic!("probe {name} still running after {PROBE_TIMEOUT:?}: {e}"))
}

struct Outcome {
    report: Report,
    rss_before_kb: u64,
    /// Highest VmRSS sampled every 5 ms while the probe ran.
    rss_peak_kb: u64,
    rss_after_kb: u64,
}

impl Outcome {
    fn growth_kb(&self) -> u64 {
        self.rss_peak_kb
            .max(self.rss_after_kb)
            .saturating_sub(self.rss_before_kb)
    }

    fn ended_connection(&self) -> bool {
        self.report.ended_connection()
    }
}

/// Starts a proxy, warms it up, runs `probe`, and checks the proxy still serves h1 and h2
/// afterwards and grew by less than MAX_RSS_GROWTH_KB.
async fn abuse(name: &'static str, probe: Probe) -> Outcome {
    let up = Upstream::start("v1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("web.yaml");
    std::fs::write(&cfg, config(&up)).expect("write config");
    let cfg_str = cfg.to_str().expect("utf-8 path").to_string();
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::spawn(
            BIN,
            &[
                "run",
                "--config",
                &cfg_str,
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "off",
                "--no-watch",
            ],
            &[],
        )
    })
    .await
    .expect("spawn proxy");
    let addr = proxy.proxy.expect("proxy address in the log");
    // Warm up both protocols so lazily built state is in the baseline.
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(addr, proto).await;
        for _ in 0..20 {
            assert_eq!(c.get("web", "/").await.status, 200);
        }
    }
    let pid = proxy.pid();
    let rss_before_kb = rss_kb(pid);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let report = tokio::task::spawn_blocking(move || run_probe(name, probe, addr))
        .await
        .expect("probe task");
    done.store(true, Ordering::Relaxed);
    let rss_peak_kb = sampler.join().expect("RSS sampler");
    assert!(report.error.is_none(), "probe {name}: {report:?}");
    // Closed streams and connections are freed asynchronously; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_kb = rss_kb(pid);
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(addr, proto).await;
        let r = c.get("web", "/").await;
        assert_eq!(
            r.status,
            200,
            "{proto:?} request after {name}: {}",
            r.text()
        );
    }
    assert!(proxy_alive(&proxy), "the proxy exited during {name}");
    let outcome = Outcome {
        report,
        rss_before_kb,
        rss_peak_kb,
        rss_after_kb,
    };
    eprintln!(
        "{name}: {:?} | RSS {} kB, peak {} kB, after {} kB (+{} kB)",
        outcome.report,
        outcome.rss_before_kb,
        outcome.rss_peak_kb,
        outcome.rss_after_kb,
        outcome.growth_kb()
    );
    assert!(
        outcome.growth_kb() < MAX_RSS_GROWTH_KB,
        "{name}: RSS grew by {} kB (limit {MAX_RSS_GROWTH_KB} kB)",
        outcome.growth_kb()
    );
    drop(proxy);
    up.stop().await;
    outcome
}

fn proxy_alive(p: &ProxyProcess) -> bool {
    Path::new(&format!("/proc/{}", p.pid())).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway() {
    let o = abuse("rapid_reset", h2probes::rapid_reset).await;
    assert!(
        o.ended_connection(),
        "2000 HEADERS+RST_STREAM and no GOAWAY or close: {:?}",
        o.report
    );
    if let Some(goaway) = o.report.goaway {
        // A reset flood is answered with ENHANCE_YOUR_CALM (11), as hyper's h2 did before our
        // own HTTP/2 server.
        assert_eq!(goaway.error_code, ENHANCE_YOUR_CALM, "{:?}", o.report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let o = abuse("continuation_flood", h2probes::continuation_flood).await;
    assert!(
        o.ended_connection(),
        "10 000 CONTINUATION frames without END_HEADERS and no GOAWAY or close: {:?}",
        o.report
    );
}

/// No SETTINGS/PING flood counter (hyper's h2 had none either; Envoy's is a cap on queued
/// outbound frames): a client that reads gets every ACK, at no memory cost, and one that does
/// not is no longer read once 64 KiB of answers wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flood: 1-5 s each; CI runs it with --ignored"]
async fn settings_flood_is_answered_without_growth() {
    let o = abuse("settings_flood", h2probes::settings_flood).await;
    // SETTINGS ACKs include the one for the connection preface.
    assert_answered_or_ended(&o, o.report.settings_acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flood: 1-5 s each; CI runs it with --ignored"]
async fn ping_flood_is_answered_without_growth() {
    let o = abuse("ping_flood", h2probes::ping_flood).await;
    assert_answered_or_ended(&o, o.report.pongs);
}

/// The dangerous variant: tens of MB of PINGs from a client that never reads the PONGs. The
/// proxy must stop reading (TCP backpressure) or close; queueing the answers would show in
/// the RSS bound `abuse` enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flood: 1-5 s each; CI runs it with --ignored"]
async fn ping_flood_without_reading_is_pushed_back() {
    let o = abuse("ping_flood_noread", h2probes::ping_flood_noread).await;
    assert_pushed_back(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flood: 1-5 s each; CI runs it with --ignored"]
async fn settings_flood_without_reading_is_pushed_back() {
    let o = abuse("settings_flood_noread", h2probes::settings_flood_noread).await;
    assert_pushed_back(&o);
}

fn assert_answered_or_ended(o: &Outcome, answered: u64) {
    let sent = o.report.frames_sent;
    assert!(sent >= 10_000, "the flood was cut short: {:?}", o.report);
    assert!(
        o.ended_connection() || answered >= sent,
        "{sent} frames, {answered} answers, and the connection still open: {:?}",
        o.report
    );
}

fn assert_pushed_back(o: &Outcome) {
    assert!(o.report.bytes_total > 30_000_000, "{:?}", o.report);
    assert!(
        o.report.backpressure || o.ended_connection(),
        "the proxy read all {} bytes without pushing back or closing: {:?}",
        o.report.bytes_total,
        o.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_past_max_concurrent_streams_is_refused() {
    let o = abuse("max_streams", h2probes::max_streams).await;
    assert_eq!(
        o.report.limit,
        Some(1024),
        "advertised SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    assert_eq!(
        o.report.extra_reset,
        Some(REFUSED_STREAM),
        "stream {:?} past the limit: {:?}",
        o.report.extra_stream,
        o.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_list_over_the_limit_is_refused_and_the_connection_survives() {
    let o = abuse("big_headers", h2probes::big_headers).await;
    assert!(
        o.report.big_status == Some(431) || o.report.big_reset.is_some(),
        "an 80 KiB header list must get 431 or a stream reset: {:?}",
        o.report
    );
    assert_eq!(
        o.report.after_status,
        Some(200),
        "same connection afterwards: {:?}",
        o.report
    );
}
