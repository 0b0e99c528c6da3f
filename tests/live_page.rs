//! The live page (`GET /` on the admin listener), its JSON and `switchyard top`, against real
//! traffic through a 90/10 split whose canary fails 20%. The headless-Chromium test is
//! `#[ignore]`d (it needs Debian's `chromium`); `.ci/run` installs it and runs
//! `cargo test --test live_page -- --ignored`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::e2e_helpers::{admin_get, assert_within_4_sigma, par_tally};
use support::flaky::Flaky;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn config(v1: SocketAddr, v2: SocketAddr, w1: u32) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - name: split
    route:
    - destination: {{host: web, subset: v1}}
      weight: {w1}
    - destination: {{host: web, subset: v2}}
      weight: {}
",
        service_yaml("web", &[("v1", v1), ("v2", v2)]),
        100 - w1
    )
}

/// Polls `/live.json` (bounded) until `cond` holds.
async fn live_until(
    admin: SocketAddr,
    limit: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut c = Client::h1(admin).await;
    loop {
        let j = c.get("127.0.0.1", "/live.json").await.json();
        if cond(&j) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "live.json never got there: {j:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dest<'a>(j: &'a serde_json::Value, subset: &str) -> &'a serde_json::Value {
    j["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "split"))
        .and_then(|r| r["destinations"].as_array())
        .and_then(|d| d.iter().find(|d| d["subset"] == subset))
        .unwrap_or(&serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_json_shows_weights_shares_and_the_canarys_failures_and_follows_a_reload() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 2).await;
    let p = TestProxy::start(&config(v1.addr, v2.addr, 90)).await;
    let admin = p.admin.expect("admin");
    let n = 2000;
    // The 10-second figures are differences between readings, so traffic sent before the
    // sampler's first reading would never show: under a loaded machine that first reading can
    // come late, so wait for it.
    live_until(admin, Duration::from_secs(5), |j| {
        dest(j, "v2")["series"]["requests"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    })
    .await;
    let tally = par_tally(p.addr, Proto::H1, 4, n, "web", "/", &[]).await;
    // The sampler reads once a second: wait for a reading that covers the traffic.
    let j = live_until(admin, Duration::from_secs(5), |j| {
        let a = dest(j, "v1")["last_10s"]["requests"].as_u64().unwrap_or(0);
        let b = dest(j, "v2")["last_10s"]["requests"].as_u64().unwrap_or(0);
        a + b == n as u64
    })
    .await;
    let canary = dest(&j, "v2");
    assert_eq!(canary["weight"], 10);
    let requests = canary["last_10s"]["requests"].as_u64().unwrap_or(0) as usize;
    assert_within_4_sigma(requests, n, 0.10, "observed canary share");
    let share = canary["last_10s"]["share"].as_f64().unwrap_or(0.0);
    assert!(
        (share - requests as f64 / n as f64).abs() < 1e-9,
        "{canary}"
    );
    let success = canary["last_10s"]["success_rate"].as_f64().unwrap_or(0.0);
    assert!(
        (success - 0.8).abs() < 0.06,
        "canary success {success}: {canary}"
    );
    assert_eq!(dest(&j, "v1")["last_10s"]["success_rate"], 1.0);
    assert!(tally.contains_key("v2"), "{tally:?}");
    let series = canary["series"]["requests"].as_array().map_or(0, Vec::len);
    assert!(series >= 1, "{canary}");
    // A hot reload to 50/50 shows within 2 s.
    std::fs::write(p.config_path(), config(v1.addr, v2.addr, 50)).expect("rewrite");
    p.reloader.reload().await.expect("reload");
    let t = Instant::now();
    live_until(admin, Duration::from_secs(2), |j| {
        dest(j, "v2")["weight"] == 50
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_and_cross_site_posts_are_refused() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    let p = TestProxy::start(&config(v1.addr, v2.addr, 90)).await;
    let page = admin_get(&p, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.len() < 100 * 1024, "{} bytes", html.len());
    for external in ["http://", "https://", "//cdn", "<link"] {
        assert!(!html.contains(external), "the page loads {external}");
    }
    let admin = p.admin.expect("admin");
    let mut c = Client::h1(admin).await;
    let host = admin.to_string();
    for (origin, site, want) in [
        (Some("http://evil.example"), None, 403),
        (None, Some("cross-site"), 403),
        (
            Some(format!("http://{host}").as_str()),
            Some("same-origin"),
            200,
        ),
        (None, None, 200),
    ] {
        let mut h: Vec<(&str, &str)> = vec![("host", host.as_str())];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        if let Some(s) = site {
            h.push(("sec-fetch-site", s));
        }
        let r = c.request("POST", "", "/reload", &h).await;
        assert_eq!(
            r.status,
            want,
            "origin {origin:?} sec-fetch-site {site:?}: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_prints_each_subset_with_weight_share_and_success() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 5).await;
    let p = TestProxy::start(&config(v1.addr, v2.addr, 50)).await;
    let admin = p.admin.expect("admin");
    let n = 1000;
    par_tally(p.addr, Proto::H1, 4, n, "web", "/", &[]).await;
    live_until(admin, Duration::from_secs(5), |j| {
        let a = dest(j, "v1")["last_10s"]["requests"].as_u64().unwrap_or(0);
        let b = dest(j, "v2")["last_10s"]["requests"].as_u64().unwrap_or(0);
        a + b == n as u64
    })
    .await;
    let out = std::process::Command::new(BIN)
        .args(["top", "--once", "--admin", &admin.to_string()])
        .output()
        .expect("top");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with("config version 1")),
        "{text}"
    );
    let row = |subset: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("VirtualService/default/web split")
                    && l.split_whitespace().nth(2) == Some(subset)
            })
            .unwrap_or_else(|| panic!("no {subset} row in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (a, b) = (row("v1"), row("v2"));
    // ROUTE (2 words), SUBSET, WEIGHT, SHARE, RATE, SUCCESS, P99.
    assert_eq!((a[3].as_str(), b[3].as_str()), ("50", "50"), "{text}");
    assert_eq!(a[6], "100.0%", "{text}");
    let canary: f64 = b[6].trim_end_matches('%').parse().expect("a percentage");
    assert!(
        (canary - 50.0).abs() < 2.0,
        "the canary fails 5 of 10: {text}"
    );
    let shares: f64 = [&a[4], &b[4]]
        .iter()
        .map(|s| s.trim_end_matches('%').parse::<f64>().expect("share"))
        .sum();
    assert!((shares - 100.0).abs() < 0.2, "{text}");
}

fn chromium(args: &[&str]) -> std::process::Output {
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args(args)
        .output()
        .expect("chromium is installed (apt-get install chromium; .ci/run does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium; .ci/run installs it and runs this target"]
async fn headless_chromium_renders_the_live_page_and_follows_a_reload() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 2).await;
    let p = TestProxy::start(&config(v1.addr, v2.addr, 90)).await;
    let admin = p.admin.expect("admin");
    par_tally(p.addr, Proto::H1, 4, 2000, "web", "/", &[]).await;
    live_until(admin, Duration::from_secs(5), |j| {
        dest(j, "v2")["last_10s"]["requests"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().expect("profile");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let dom = |extra: &[&str]| {
        let mut args = vec![profile_arg.as_str(), "--virtual-time-budget=3000"];
        args.extend_from_slice(extra);
        args.push(url.as_str());
        let out = chromium(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let html = dom(&["--dump-dom"]);
    let row = |html: &str, subset: &str| -> (String, f64, f64) {
        let at = html
            .find(&format!("data-subset=\"{subset}\""))
            .unwrap_or_else(|| panic!("no {subset} row in the rendered page:\n{html}"));
        let attr = |name: &str| {
            let rest = &html[at..];
            let i = rest.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
            rest[i..rest[i..].find('"').expect("quote") + i].to_string()
        };
        (
            attr("data-weight"),
            attr("data-share").parse().unwrap_or(-1.0),
            attr("data-success").parse().unwrap_or(-1.0),
        )
    };
    let (w, share, success) = row(&html, "v2");
    assert_eq!(w, "10");
    assert!((share - 0.10).abs() < 0.03, "canary share {share}");
    assert!((success - 0.8).abs() < 0.06, "canary success {success}");
    assert_eq!(row(&html, "v1").0, "90");
    // A screenshot, kept as a CI artifact.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    dom(&[shot_arg.as_str(), "--window-size=1280,900"]);
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    // The hot reload reaches a freshly rendered page within 2 s.
    std::fs::write(p.config_path(), config(v1.addr, v2.addr, 50)).expect("rewrite");
    p.reloader.reload().await.expect("reload");
    let html = dom(&["--dump-dom"]);
    assert_eq!(row(&html, "v2").0, "50", "{html}");
}
