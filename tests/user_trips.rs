//! Small things a new user trips over (issue #19 §4): a config that routes nothing, a subset
//! with no endpoints in `simulate`, the admin's endpoint list, a bad log level, and the
//! effective weight of a lone destination in `/config_dump`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::e2e_helpers::admin_get;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn switchyard(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SWITCHYARD_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder with nothing switchyard routes: a Deployment, and a JSON file it does not read.
fn nothing_routable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("vs.json"), "{\"kind\": \"VirtualService\"}").expect("write");
    dir
}

#[test]
fn validate_warns_when_nothing_is_routable_and_names_the_extensions_read() {
    let dir = nothing_routable_dir();
    let path = dir.path().to_str().expect("utf-8");
    let (code, stdout, _) = switchyard(&["validate", path]);
    assert_eq!(code, Some(0), "a warning, not an error: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("SY0005"))
        .unwrap_or_else(|| panic!("no SY0005 in:\n{stdout}"));
    assert!(
        line.starts_with(&format!("{path}: Warning SY0005")),
        "{line}"
    );
    assert!(line.contains("nothing routable"), "{line}");
    assert!(line.contains("*.yaml and *.yml"), "{line}");
    // A config that routes something says nothing of the kind.
    let (_, stdout, _) = switchyard(&["validate", "config"]);
    assert!(!stdout.contains("SY0005"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_warns_at_start_and_on_every_reload_that_nothing_is_routable() {
    let dir = nothing_routable_dir();
    let path = dir.path().to_str().expect("utf-8");
    let p = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--config",
            path,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ],
        &[],
    );
    let warned = |text: &str| {
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("SY0005"))
            .count()
    };
    assert_eq!(warned(&p.stderr_text()), 1, "{}", p.stderr_text());
    // A changed but still empty config is reloaded, and warned about again.
    std::fs::write(
        dir.path().join("more.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: app}\n",
    )
    .expect("write");
    let admin = p.admin.expect("admin address");
    let mut c = Client::h1(admin).await;
    let r = c.request("POST", "127.0.0.1", "/reload", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        p.wait_for_stderr("config reloaded", Duration::from_secs(5))
            .await,
        "{}",
        p.stderr_text()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(warned(&p.stderr_text()), 2, "{}", p.stderr_text());
}

#[test]
fn simulate_shows_a_subset_without_endpoints_as_503_uh() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.yaml"),
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9}, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 90}
    - {destination: {host: web, subset: v2}, weight: 10}
",
    )
    .expect("write");
    let cfg = dir.path().to_str().expect("utf-8");
    let (code, stdout, stderr) = switchyard(&[
        "simulate",
        "--config",
        cfg,
        "-n",
        "2000",
        "--seed",
        "7",
        "http://web/",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let v2 = stdout
        .lines()
        .find(|l| l.starts_with("v2"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(v2.starts_with("v2 -> 503 UH (no endpoints)"), "{v2}");
    let v1 = stdout
        .lines()
        .find(|l| l.starts_with("v1 "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(!v1.contains("503"), "{v1}");
}

fn lone_destination_config(up: &Upstream) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {{host: web}}
",
        service_yaml("web", &[("v1", up.addr)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_its_endpoints_and_config_dump_shows_the_effective_weight() {
    let up = Upstream::start("v1").await;
    let p = TestProxy::start(&lone_destination_config(&up)).await;
    let page = admin_get(&p, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>switchyard</title>"));
    for path in ["/help"] {
        let r = admin_get(&p, path).await;
        assert_eq!(r.status, 200, "{path}");
        let text = r.text();
        for listed in [
            "/ready",
            "/config_dump",
            "/stats/prometheus",
            "/reload",
            "/logging",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{listed}:"))),
                "{path} does not list {listed}:\n{text}"
            );
        }
    }
    let dump = admin_get(&p, "/config_dump").await.json();
    let dest = &dump["virtual_hosts"][0]["routes"][0]["action"]["route"][0];
    assert_eq!(dest["weight"], 100, "{dest}");
    assert_eq!(dest["share"], 1.0, "{dest}");
    assert_eq!(
        dest["configured_weight"], 0,
        "the YAML's value, kept apart: {dest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_log_level_is_400_and_changes_nothing() {
    let up = Upstream::start("v1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, lone_destination_config(&up)).expect("write");
    let p = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--config",
            dir.path().to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ],
        &[],
    );
    let mut admin = Client::h1(p.admin.expect("admin")).await;
    let r = admin
        .request("POST", "127.0.0.1", "/logging?level=bogus", &[])
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("trace, debug, info, warning, error, critical, off"),
        "{}",
        r.text()
    );
    // INFO lines still appear: an applied reload logs one.
    let before = p
        .stderr_text()
        .lines()
        .filter(|l| l.contains(" INFO "))
        .count();
    std::fs::write(
        &file,
        format!("{}\n# again\n", lone_destination_config(&up)),
    )
    .expect("write");
    let r = admin.request("POST", "127.0.0.1", "/reload", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = p
        .stderr_text()
        .lines()
        .filter(|l| l.contains(" INFO "))
        .count();
    assert!(
        after > before,
        "INFO logging was muted:\n{}",
        p.stderr_text()
    );
    // A real level still works, Envoy's names included.
    let r = admin
        .request("POST", "127.0.0.1", "/logging?level=warning", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
