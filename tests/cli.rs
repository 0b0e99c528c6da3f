//! The `switchyard` binary as a user drives it: `validate`, `run` refusing or accepting a config,
//! the `SWITCHYARD_*` environment, how a config directory is read, `demo`, `--help`.
//!
//! Every expected diagnostic below is a full stdout/stderr line in the documented format
//! `FILE:LINE: SEVERITY CODE Kind/namespace/name: field.path: message`, with FILE as passed on
//! the command line (the fixtures are passed relative to the crate root).

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// `validate` and a refused `run` finish in milliseconds; this only bounds a hang.
const QUICK: Duration = Duration::from_secs(15);

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture path relative to the crate root, as a user would type it there.
fn fixture(name: &str) -> String {
    format!("tests/fixtures/cli/{name}")
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn describe(&self) -> String {
        format!(
            "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the binary to completion (cwd = crate root), killing it by PID if it outlives
/// `timeout`.
fn run_bin(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(crate_root())
        .env("NO_COLOR", "1")
        // The metrics listener defaults to the fixed port 15090; no test binds a fixed port.
        .env("SWITCHYARD_METRICS", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning switchyard {args:?}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "switchyard {args:?} still running after {timeout:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default()
                );
            }
            Err(e) => panic!("waiting on switchyard {args:?}: {e}"),
        }
    };
    let elapsed = started.elapsed();
    Outcome {
        status,
        stdout: strip_ansi(&out.join().unwrap_or_default()),
        stderr: strip_ansi(&err.join().unwrap_or_default()),
        elapsed,
    }
}

fn validate(path: &str) -> Outcome {
    run_bin(&["validate", path], &[], QUICK)
}

/// `validate FILE` prints exactly `expected` on stdout and exits 1.
fn assert_validate_error(name: &str, expected: &[String]) {
    let out = validate(&fixture(name));
    assert_eq!(out.stdout_lines(), expected, "{name}: {}", out.describe());
    assert_eq!(out.status.code(), Some(1), "{name}: {}", out.describe());
}

#[test]
fn validate_good_config_exits_0_without_findings() {
    let out = validate(&fixture("good.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, "", "a clean config has nothing to report");
}

#[test]
fn validate_unknown_subset() {
    assert_validate_error(
        "unknown-subset.yaml",
        &[format!(
            "{}:61: Error IST0101 VirtualService/default/checkout: spec.http[1].route[1].destination.subset: Referenced host+subset in destinationrule not found: \"checkout.default.svc.cluster.local+canary\"",
            fixture("unknown-subset.yaml")
        )],
    );
}

#[test]
fn validate_destination_host_without_service_entry() {
    assert_validate_error(
        "no-service-entry.yaml",
        &[format!(
            "{}:30: Error IST0101 VirtualService/default/orders: spec.http[0].route[0].destination.host: Referenced host not found: \"payments.default.svc.cluster.local\"",
            fixture("no-service-entry.yaml")
        )],
    );
}

#[test]
fn validate_invalid_regex() {
    assert_validate_error(
        "invalid-regex.yaml",
        &[format!(
            "{}:27: Error IST0106 VirtualService/default/search: spec.http[0].match[0].uri.regex: invalid regex \"/api/(v1|v2\": unclosed group; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)",
            fixture("invalid-regex.yaml")
        )],
    );
}

#[test]
fn validate_total_weight_zero() {
    assert_validate_error(
        "total-weight-zero.yaml",
        &[format!(
            "{}:44: Error IST0106 VirtualService/default/cart: spec.http[0].route: total destination weight = 0",
            fixture("total-weight-zero.yaml")
        )],
    );
}

#[test]
fn validate_bad_yaml_reports_the_line_in_the_file() {
    // The broken line is in the second document: the line number counts from the file's top.
    assert_validate_error(
        "bad-yaml.yaml",
        &[format!(
            "{}:21: Error SY0001: invalid YAML: mapping values are not allowed in this context",
            fixture("bad-yaml.yaml")
        )],
    );
}

#[test]
fn validate_unknown_field_is_named() {
    assert_validate_error(
        "unknown-field.yaml",
        &[format!(
            "{}:52: Error IST0106 VirtualService/default/profile: spec.http[0].route[1].weigth: unknown field \"weigth\"",
            fixture("unknown-field.yaml")
        )],
    );
}

#[test]
fn validate_directory_skips_other_kinds_with_a_notice() {
    let out = validate(&fixture("manifests"));
    assert_eq!(
        out.stdout_lines(),
        [format!(
            "{}/app.yaml:68: Info SY0003 ConfigMap/ratings-settings: skipped: ConfigMap (v1) is not one of the resources switchyard reads",
            fixture("manifests")
        )],
        "{}",
        out.describe()
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
}

/// Without a namespace `validate` judges each resource from its own, as istioctl does; a
/// namespace, from the flag or the environment, asks for one proxy's view.
#[test]
fn validate_perspective_follows_the_namespace_flag() {
    let file = "tests/fixtures/validate/perspective.yaml";
    let lines = |out: &Outcome| -> Vec<String> {
        out.stdout_lines()
            .iter()
            .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
            .collect()
    };
    let own = [
        "Error IST0101 VirtualService/shop/cart",
        "Error IST0101 VirtualService/shop/edge",
    ];
    for args in [
        &["validate", file][..],
        &["validate", "--all-namespaces", file],
    ] {
        let out = run_bin(args, &[], QUICK);
        assert_eq!(lines(&out), own, "{args:?}: {}", out.describe());
    }
    let proxy = [
        "Info SY0004 ServiceEntry/billing/ledger",
        "Error IST0101 VirtualService/billing/ledger",
        "Info SY0004 VirtualService/shop/cart",
        "Info SY0004 VirtualService/shop/edge",
    ];
    let out = run_bin(&["validate", "--namespace", "default", file], &[], QUICK);
    assert_eq!(lines(&out), proxy, "{}", out.describe());
    let out = run_bin(
        &["validate", file],
        &[("SWITCHYARD_NAMESPACE", "default")],
        QUICK,
    );
    assert_eq!(lines(&out), proxy, "{}", out.describe());
}

#[test]
fn validate_subset_without_endpoints_is_an_error() {
    assert_validate_error(
        "subset-no-endpoints.yaml",
        &[format!(
            "{}:32: Error IST0173 DestinationRule/default/frontend: spec.subsets[1].name: The Subset v2 defined in the DestinationRule does not select any endpoints of \"frontend.default.svc.cluster.local\", which may lead to 503 UH (NoHealthyUpstream).",
            fixture("subset-no-endpoints.yaml")
        )],
    );
}

/// A stderr line (a log record) that ends with exactly `diag`.
fn has_line_ending_with(text: &str, diag: &str) -> bool {
    text.lines().any(|l| l.trim_end().ends_with(diag))
}

#[test]
fn run_refuses_a_bad_config_promptly_with_the_diagnostic() {
    let path = fixture("unknown-subset.yaml");
    let out = run_bin(
        &[
            "run",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
        QUICK,
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.elapsed < Duration::from_secs(3),
        "refusing took {:?}",
        out.elapsed
    );
    let diag = format!(
        "{path}:61: Error IST0101 VirtualService/default/checkout: spec.http[1].route[1].destination.subset: Referenced host+subset in destinationrule not found: \"checkout.default.svc.cluster.local+canary\""
    );
    assert!(
        has_line_ending_with(&out.stderr, &diag),
        "stderr lacks {diag:?}\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("switchyard listening"),
        "a refused config must not be served\n{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_accepts_a_subset_without_endpoints_with_a_warning() {
    let path = fixture("subset-no-endpoints.yaml");
    let root = crate_root().join(&path);
    let root = root.to_str().expect("utf-8 path");
    let p = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--config",
            root,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    let diag = format!(
        "{root}:32: Warning IST0173 DestinationRule/default/frontend: spec.subsets[1].name: The Subset v2 defined in the DestinationRule does not select any endpoints of \"frontend.default.svc.cluster.local\", which may lead to 503 UH (NoHealthyUpstream)."
    );
    let stderr = p.stderr_text();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.trim_end().ends_with(&diag)),
        "expected the warning {diag:?} in the log:\n{stderr}"
    );
    let admin = p.admin.expect("admin address in the log");
    let mut c = Client::h1(admin).await;
    let r = c.get("127.0.0.1", "/ready").await;
    assert_eq!(r.status, 200, "the accepted config is served: {}", r.text());
}

fn ns_yaml(addr: std::net::SocketAddr) -> String {
    // Short names expand with the namespace the proxy runs in: only with `shop` does the
    // VirtualService's `web` resolve to the ServiceEntry's host.
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: web\nspec:\n  hosts:\n  - web.shop.svc.cluster.local\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n  endpoints:\n  - address: {}\n    ports:\n      http: {}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts:\n  - web\n  http:\n  - route:\n    - destination:\n        host: web\n",
        addr.ip(),
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_replace_flags() {
    let up = Upstream::start("shop-web").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("web.yaml");
    std::fs::write(&cfg, ns_yaml(up.addr)).expect("write config");
    let cfg = cfg.to_str().expect("utf-8 path").to_string();

    let p = ProxyProcess::spawn(
        BIN,
        &["run"],
        &[
            ("SWITCHYARD_CONFIG", cfg.as_str()),
            ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
            ("SWITCHYARD_ADMIN", "127.0.0.1:0"),
            ("SWITCHYARD_NAMESPACE", "shop"),
        ],
    );
    let proxy = p.proxy.expect("proxy address in the log");
    let admin = p
        .admin
        .expect("admin address in the log (SWITCHYARD_ADMIN)");
    assert!(
        proxy.ip().is_loopback(),
        "SWITCHYARD_LISTEN ignored: {proxy}"
    );
    assert_ne!(proxy.port(), 15001, "SWITCHYARD_LISTEN ignored: {proxy}");
    assert_ne!(admin.port(), 15000, "SWITCHYARD_ADMIN ignored: {admin}");

    let mut c = Client::h1(proxy).await;
    for host in ["web", "web.shop", "web.shop.svc.cluster.local"] {
        let r = c.get(host, "/").await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
        assert_eq!(r.text(), "shop-web", "Host {host}");
    }
    let mut a = Client::h1(admin).await;
    assert_eq!(a.get("127.0.0.1", "/ready").await.status, 200);

    // Without SWITCHYARD_NAMESPACE the same file means `web.default`, which has no
    // ServiceEntry: refused. So the variable above really was read.
    let out = run_bin(
        &["run"],
        &[
            ("SWITCHYARD_CONFIG", cfg.as_str()),
            ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
            ("SWITCHYARD_ADMIN", "off"),
            ("SWITCHYARD_NAMESPACE", "default"),
        ],
        QUICK,
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr
            .contains("Referenced host not found: \"web.default.svc.cluster.local\""),
        "{}",
        out.describe()
    );
}

const WEB_SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: web\nspec:\n  hosts:\n  - web.default.svc.cluster.local\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n  endpoints:\n  - address: 10.9.7.1\n";

fn web_vs(name: &str) -> String {
    format!(
        "# VirtualService {name}\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts:\n  - web\n  http:\n  - route:\n    - destination:\n        host: web\n"
    )
}

/// 1-based number of the line that is exactly `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in the fixture"))
        + 1
}

#[test]
fn validate_directory_reads_sorted_recursive_yaml_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    // Written in reverse of the expected load order.
    let c = web_vs("web-c");
    std::fs::write(dir.join("sub/c.yaml"), &c).expect("write");
    let b = format!("{WEB_SERVICE}---\n{}", web_vs("web-b"));
    std::fs::write(dir.join("b.yaml"), &b).expect("write");
    let a = web_vs("web-a");
    std::fs::write(dir.join("a.yml"), &a).expect("write");
    // Neither of these may be read: each would add a finding.
    std::fs::write(dir.join("notes.txt"), "this: is: not yaml\n").expect("write");
    std::fs::write(dir.join(".hidden.yaml"), "this: is: not yaml\n").expect("write");
    std::fs::write(dir.join(".git/x.yaml"), web_vs("web-git")).expect("write");

    let d = dir.to_str().expect("utf-8 path");
    let out = validate(d);
    let msg = "The VirtualServices default/web-a,default/web-b,default/web-c associated with mesh gateway define the same host web.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource. A sidecar uses the first loaded (default/web-a) for this host.";
    let expected = [
        format!(
            "{d}/a.yml:{}: Error IST0109 VirtualService/default/web-a: spec.hosts[0]: {msg}",
            line_of(&a, "  - web")
        ),
        format!(
            "{d}/b.yaml:{}: Error IST0109 VirtualService/default/web-b: spec.hosts[0]: {msg}",
            line_of(&b, "  - web")
        ),
        format!(
            "{d}/sub/c.yaml:{}: Error IST0109 VirtualService/default/web-c: spec.hosts[0]: {msg}",
            line_of(&c, "  - web")
        ),
    ];
    assert_eq!(out.stdout_lines(), expected, "{}", out.describe());
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("3 file(s), 4 resource(s)"),
        "{}",
        out.describe()
    );
}

fn full_service() -> String {
    std::fs::read_to_string(crate_root().join(fixture("good.yaml"))).expect("read good.yaml")
}

#[cfg(unix)]
#[test]
fn validate_reads_a_configmap_mount_once() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("tempdir");
    let cm = tmp.path().join("cm");
    let current = cm.join("..2026_11_21_00_00_00.123");
    std::fs::create_dir_all(&current).expect("mkdir");
    std::fs::write(current.join("frontend.yaml"), full_service()).expect("write");
    // The previous copy kubelet has not removed yet: never read.
    let old = cm.join("..2026_11_20_00_00_00.456");
    std::fs::create_dir_all(&old).expect("mkdir");
    std::fs::write(old.join("frontend.yaml"), "this: is: not yaml\n").expect("write");
    symlink("..2026_11_21_00_00_00.123", cm.join("..data")).expect("symlink ..data");
    symlink("..data/frontend.yaml", cm.join("frontend.yaml")).expect("symlink frontend.yaml");

    let d = cm.to_str().expect("utf-8 path");
    let out = validate(d);
    assert!(
        !out.stdout.contains("IST0109"),
        "the resource was read more than once:\n{}",
        out.describe()
    );
    assert_eq!(out.stdout, "", "{}", out.describe());
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("1 file(s), 3 resource(s)"),
        "{}",
        out.describe()
    );
}

#[cfg(unix)]
#[test]
fn validate_follows_a_symlinked_top_level_directory() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("elsewhere/checkout");
    std::fs::create_dir_all(&real).expect("mkdir");
    std::fs::write(real.join("checkout.yaml"), full_service()).expect("write");
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).expect("mkdir");
    symlink(&real, config.join("checkout")).expect("symlink");

    let d = config.to_str().expect("utf-8 path");
    let out = validate(d);
    assert_eq!(out.stdout, "", "{}", out.describe());
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("1 file(s), 3 resource(s)"),
        "the linked directory was not read:\n{}",
        out.describe()
    );

    // The config path itself may be a link to a directory, too.
    let link: PathBuf = tmp.path().join("config-link");
    symlink(&real, &link).expect("symlink");
    let out = validate(link.to_str().expect("utf-8 path"));
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("1 file(s), 3 resource(s)"),
        "{}",
        out.describe()
    );
}

/// One row of the demo report: subset, configured share in %, observed count.
type Row = (String, f64, usize);

/// The demo report's batches: title line and rows.
fn demo_batches(stdout: &str) -> Vec<(String, Vec<Row>)> {
    let mut batches: Vec<(String, Vec<Row>)> = Vec::new();
    for line in stdout.lines() {
        if line.contains(" requests, Host: frontend") {
            batches.push((line.to_string(), Vec::new()));
            continue;
        }
        let Some((_, rows)) = batches.last_mut() else {
            continue;
        };
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 4
            && let (Some(conf), Ok(count)) = (cols[1].strip_suffix('%'), cols[3].parse::<usize>())
            && let Ok(conf) = conf.parse::<f64>()
        {
            rows.push((cols[0].to_string(), conf, count));
        }
    }
    batches
}

#[test]
fn demo_reports_the_split_and_the_beta_rule() {
    let out = run_bin(
        &[
            "demo",
            "--exit",
            "--requests",
            "2000",
            "--beta-requests",
            "200",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--metrics",
            "off",
            // The shipped config's 18081/18082 may be taken: tests bind ephemeral ports only.
            "--free-upstream-ports",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    for (v, port) in [("v1", 18081), ("v2", 18082)] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("upstream {v}"))
                    && l.ends_with(&format!("(the config says 127.0.0.1:{port})"))),
            "the banner says where {v} moved from:\n{}",
            out.describe()
        );
    }
    let batches = demo_batches(&out.stdout);
    assert_eq!(
        batches.len(),
        2,
        "two batches expected:\n{}",
        out.describe()
    );

    let (title, rows) = &batches[0];
    assert!(title.starts_with("2000 requests"), "{title}");
    let row = |name: &str| rows.iter().find(|r| r.0 == name).cloned();
    let v1 = row("v1").unwrap_or_else(|| panic!("no v1 row:\n{}", out.stdout));
    let v2 = row("v2").unwrap_or_else(|| panic!("no v2 row:\n{}", out.stdout));
    assert_eq!(rows.len(), 2, "only v1 and v2 answer:\n{}", out.stdout);
    assert_eq!(
        (v1.1, v2.1),
        (95.0, 5.0),
        "configured shares:\n{}",
        out.stdout
    );
    assert_eq!(v1.2 + v2.2, 2000, "{}", out.stdout);
    let n = 2000.0_f64;
    let p = 0.05_f64;
    let sigma = (p * (1.0 - p) / n).sqrt();
    let share = v2.2 as f64 / n;
    assert!(
        (share - p).abs() <= 4.0 * sigma,
        "v2 share {share} is more than 4σ ({sigma}) from 5%:\n{}",
        out.stdout
    );

    let (title, rows) = &batches[1];
    assert!(
        title.starts_with("200 requests") && title.contains("x-user-group: beta"),
        "{title}"
    );
    assert_eq!(
        rows.as_slice(),
        [("v2".to_string(), 100.0, 200)],
        "the beta batch is all v2:\n{}",
        out.stdout
    );
}

/// The shipped demo config with its two endpoints moved to ports this test holds listeners
/// on: `demo` names the taken port and the way out; with that flag it serves.
#[test]
fn demo_names_a_taken_upstream_port_and_moves_on_request() {
    let hold = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let (taken, other) = (hold(), hold());
    let port = taken.local_addr().expect("local addr").port();
    let free = other.local_addr().expect("local addr").port();
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in ["frontend.yaml", "frontend-endpoints.yaml"] {
        let text = std::fs::read_to_string(crate_root().join("config").join(name)).expect("read");
        let text = text
            .replace("http: 18081", &format!("http: {port}"))
            .replace("http: 18082", &format!("http: {free}"));
        std::fs::write(tmp.path().join(name), text).expect("write");
    }
    let config = tmp.path().to_str().expect("utf-8 path");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "demo",
            "--config",
            config,
            "--exit",
            "--requests",
            "100",
            "--beta-requests",
            "10",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--metrics",
            "off",
        ];
        a.extend_from_slice(extra);
        a
    };
    let out = run_bin(&args(&[]), &[], QUICK);
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    for needle in [
        // The upstreams are started in address order.
        format!("127.0.0.1:{} is already in use", port.min(free)),
        "--free-upstream-ports".to_string(),
    ] {
        assert!(
            out.stderr.contains(&needle),
            "no {needle:?}:\n{}",
            out.describe()
        );
    }

    let out = run_bin(
        &args(&["--free-upstream-ports"]),
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains(&format!("(the config says 127.0.0.1:{port})")),
        "{}",
        out.describe()
    );
    let batches = demo_batches(&out.stdout);
    assert_eq!(batches.len(), 2, "{}", out.describe());
    let total: usize = batches[0].1.iter().map(|r| r.2).sum();
    assert_eq!(
        total, 100,
        "every request answered by a moved upstream:\n{}",
        out.stdout
    );
    assert!(
        batches[0].1.iter().all(|r| r.0 == "v1" || r.0 == "v2"),
        "no error rows:\n{}",
        out.stdout
    );
    drop((taken, other));
}

#[test]
fn help_lists_the_commands() {
    let out = run_bin(&["--help"], &[], QUICK);
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    for cmd in ["run", "validate", "demo"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(cmd)),
            "--help does not list `{cmd}`:\n{}",
            out.stdout
        );
    }
}

#[test]
fn validate_takes_the_config_as_a_flag_like_the_other_commands() {
    let path = fixture("unknown-subset.yaml");
    let positional = run_bin(&["validate", &path], &[], QUICK);
    let flag = run_bin(&["validate", "--config", &path], &[], QUICK);
    assert_eq!(flag.status.code(), Some(1), "{}", flag.describe());
    assert_eq!(flag.stdout, positional.stdout, "{}", flag.describe());
    assert!(flag.stdout.contains("IST0101"), "{}", flag.describe());
    let short = run_bin(&["validate", "-c", &fixture("good.yaml")], &[], QUICK);
    assert_eq!(short.status.code(), Some(0), "{}", short.describe());

    let both = run_bin(&["validate", &path, "--config", &path], &[], QUICK);
    assert_eq!(both.status.code(), Some(2), "{}", both.describe());
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.describe()
    );
    let neither = run_bin(&["validate"], &[], QUICK);
    assert_eq!(neither.status.code(), Some(2), "{}", neither.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_accepts_host_port_and_bare_port() {
    let config = crate_root().join(fixture("good.yaml"));
    let config = config.to_str().expect("utf-8 path");
    for (listen, admin, want_proxy_ip, want_admin_ip) in [
        ("localhost:0", ":0", "127.0.0.1", "0.0.0.0"),
        (":0", "localhost:0", "0.0.0.0", "127.0.0.1"),
    ] {
        let p = ProxyProcess::spawn(
            BIN,
            &[
                "run", "--config", config, "--listen", listen, "--admin", admin,
            ],
            &[],
        );
        let proxy = p
            .proxy
            .unwrap_or_else(|| panic!("{listen}: {}", p.stderr_text()));
        let admin_addr = p
            .admin
            .unwrap_or_else(|| panic!("{admin}: {}", p.stderr_text()));
        assert_eq!(proxy.ip().to_string(), want_proxy_ip, "--listen {listen}");
        assert_eq!(
            admin_addr.ip().to_string(),
            want_admin_ip,
            "--admin {admin}"
        );
        assert_ne!(proxy.port(), 0);
        let mut c = Client::h1(SocketAddr::from(([127, 0, 0, 1], admin_addr.port()))).await;
        assert_eq!(
            c.get("127.0.0.1", "/ready").await.status,
            200,
            "--admin {admin}"
        );
    }

    // A form it cannot take is refused with the forms it can.
    for bad in [
        "15001",
        "localhost",
        "127.0.0.1:http",
        "no-such-host.invalid:1",
    ] {
        let out = run_bin(&["run", "--config", config, "--listen", bad], &[], QUICK);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", out.describe());
        assert!(
            out.stderr.contains("IP:PORT, HOST:PORT or :PORT"),
            "{bad}: {}",
            out.describe()
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_profile() {
    let out = run_bin(&["--version"], &[], QUICK);
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    let line = out.stdout.trim();
    let rest = line
        .strip_prefix(&format!(
            "switchyard {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, profile) = rest
        .strip_suffix(" build)")
        .and_then(|r| r.split_once(", "))
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{line:?}"
    );
    // The test binary's own profile: tests build the binary in the same profile.
    let want = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(profile, want, "{line:?}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for (shell, marker) in [
        ("bash", "complete -F _switchyard"),
        ("zsh", "#compdef switchyard"),
        ("fish", "complete -c switchyard"),
    ] {
        let out = run_bin(&["completions", shell], &[], QUICK);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", out.describe());
        assert!(out.stdout.contains(marker), "{shell}: no {marker:?}");
        for word in ["validate", "simulate", "free-upstream-ports"] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run_bin(&["completions", "tcsh"], &[], QUICK);
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());

    let top = run_bin(&["man"], &[], QUICK);
    assert_eq!(top.status.code(), Some(0), "{}", top.describe());
    assert!(top.stdout.contains(".TH switchyard 1"), "{}", top.stdout);
    assert!(top.stdout.contains(".SH SUBCOMMANDS"), "{}", top.stdout);
    let run = run_bin(&["man", "run"], &[], QUICK);
    assert_eq!(run.status.code(), Some(0), "{}", run.describe());
    assert!(
        run.stdout.contains(".TH switchyard-run 1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(r"\fB\-\-listen\fR"), "{}", run.stdout);
    let none = run_bin(&["man", "serve"], &[], QUICK);
    assert_eq!(none.status.code(), Some(1), "{}", none.describe());
    assert!(
        none.stderr.contains("one of: run, validate"),
        "{}",
        none.describe()
    );
}
