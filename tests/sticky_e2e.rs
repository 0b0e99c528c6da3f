//! Sticky canary (`switchyard.io/sticky`): a user stays on their version as the canary weight
//! grows through hot reloads, with real requests through the real proxy.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use support::e2e_helpers::assert_within_4_sigma;
use support::flaky::Flaky;
use support::*;

fn config(v1: SocketAddr, v2: SocketAddr, canary: u32, annotations: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  annotations:
{annotations}spec:
  hosts: [web]
  http:
  - name: split
    route:
    - destination: {{host: web, subset: v1}}
      weight: {}
    - destination: {{host: web, subset: v2}}
      weight: {canary}
",
        service_yaml("web", &[("v1", v1), ("v2", v2)]),
        100 - canary
    )
}

const STICKY: &str = "    switchyard.io/sticky: header:x-user-id\n";

/// Each user's subset for one request each (4 connections).
async fn assign(addr: SocketAddr, users: usize) -> BTreeMap<usize, String> {
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..4 {
        tasks.spawn(async move {
            let mut c = Client::h1(addr).await;
            let mut out = Vec::new();
            for u in (part..users).step_by(4) {
                let id = format!("user-{u}");
                let r = c
                    .request("GET", "web", "/", &[("x-user-id", id.as_str())])
                    .await;
                out.push((u, r.text()));
            }
            out
        });
    }
    let mut all = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("client task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_the_canary_stay_on_it_as_the_weight_grows_through_reloads() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    let p = TestProxy::start(&config(v1.addr, v2.addr, 5, STICKY)).await;
    let users = 2000;
    let mut on_canary: Vec<bool> = vec![false; users];
    for weight in [5u32, 25, 50, 100] {
        if weight != 5 {
            std::fs::write(p.config_path(), config(v1.addr, v2.addr, weight, STICKY))
                .expect("rewrite");
            p.reloader.reload().await.expect("reload");
        }
        let first = assign(p.addr, users).await;
        // Each user's requests within a step all reach one subset.
        let again = assign(p.addr, 400).await;
        for (u, s) in &again {
            assert_eq!(
                Some(s),
                first.get(u),
                "user-{u} moved within the {weight}% step"
            );
        }
        let mut canary = 0;
        for (u, s) in &first {
            let now = s == "v2";
            assert!(
                now || !on_canary[*u],
                "user-{u} was on v2 and is back on v1 at {weight}%"
            );
            on_canary[*u] = now;
            canary += usize::from(now);
        }
        if weight < 100 {
            assert_within_4_sigma(
                canary,
                users,
                f64::from(weight) / 100.0,
                &format!("{weight}% of users"),
            );
        } else {
            assert_eq!(canary, users);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_or_the_annotation_each_request_is_an_independent_draw() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    // The annotation, but no key on the request: random.
    let p = TestProxy::start(&config(v1.addr, v2.addr, 50, STICKY)).await;
    let mut c = Client::h1(p.addr).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(c.get("web", "/").await.text());
    }
    assert_eq!(seen.len(), 2, "keyless requests are drawn at random");
    // No annotation: the same user id lands on both subsets over many requests.
    let p = TestProxy::start(&config(v1.addr, v2.addr, 50, "    other: x\n")).await;
    let mut c = Client::h1(p.addr).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(
            c.request("GET", "web", "/", &[("x-user-id", "u1")])
                .await
                .text(),
        );
    }
    assert_eq!(seen.len(), 2, "Istio's behaviour without the annotation");
}

#[test]
fn validate_checks_the_annotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    std::fs::write(
        dir.path().join("c.yaml"),
        config(addr, addr, 5, "    switchyard.io/sticky: ip:client\n"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "validate",
            "--namespace",
            "default",
            dir.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("Error IST0106 VirtualService/default/web")
                && l.contains("switchyard.io/sticky")
                && l.contains("unknown key kind \"ip\"")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaggers_session_affinity_shape_works_unchanged() {
    let v1 = Flaky::start("v1", 0).await;
    let v2 = Flaky::start("v2", 0).await;
    // What Flagger writes for sessionAffinity: a cookie-regex route above the weighted route,
    // and a Set-Cookie on the canary destination's responses.
    let config = format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - match:
    - headers:
        cookie:
          regex: \".*flagger-cookie.*\"
    route:
    - destination: {{host: web, subset: v2}}
  - route:
    - destination: {{host: web, subset: v1}}
      weight: 80
    - destination: {{host: web, subset: v2}}
      weight: 20
      headers:
        response:
          add:
            Set-Cookie: \"flagger-cookie=LpsIaLdoNZ; Max-Age=86400\"
",
        service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)])
    );
    let p = TestProxy::start(&config).await;
    let mut c = Client::h1(p.addr).await;
    let mut cookie = None;
    for _ in 0..200 {
        let r = c.get("web", "/").await;
        if r.text() == "v2" {
            cookie = r.header("set-cookie").map(str::to_string);
            break;
        }
        assert_eq!(r.header("set-cookie"), None, "only the canary sets it");
    }
    let cookie = cookie.expect("a canary response set the cookie");
    let value = cookie.split(';').next().expect("name=value").to_string();
    for _ in 0..50 {
        let r = c
            .request("GET", "web", "/", &[("cookie", value.as_str())])
            .await;
        assert_eq!(r.text(), "v2", "the cookie keeps the user on the canary");
    }
}

#[test]
fn explain_says_whether_the_request_carries_the_key_and_where_it_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    std::fs::write(dir.path().join("c.yaml"), config(addr, addr, 10, STICKY)).expect("write");
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", dir.path().to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        args.push("http://web/");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .output()
            .expect("explain");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with = explain(&["-H", "x-user-id: alice"]);
    assert!(
        with.lines().any(|l| l.starts_with(
            "sticky:   header x-user-id is present: this request always goes to outbound|80|v"
        )),
        "{with}"
    );
    let without = explain(&[]);
    assert!(
        without.contains("sticky:   header x-user-id is absent: an independent weighted draw"),
        "{without}"
    );
}
