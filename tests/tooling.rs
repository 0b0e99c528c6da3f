//! The tooling around the proxy, driven as a user drives it: `explain`, `simulate`,
//! `validate --output`, `probe`, the README's generated CLI reference and canary walkthrough,
//! the Kubernetes manifests and the Dockerfile.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::ProxyProcess;
use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{LoadOptions, ProxyIdentity, load_str};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const SHOP: &str = "tests/fixtures/tooling/shop.yaml";
/// A command that hangs past this has a bug; the normal case takes milliseconds.
const HANG: Duration = Duration::from_secs(15);

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary in `cwd` with no `SWITCHYARD_*` variables from the caller's environment.
fn run_in(cwd: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHYARD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
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
            Ok(None) if started.elapsed() < HANG => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                panic!("switchyard {args:?} still running after {HANG:?}");
            }
            Err(e) => panic!("waiting for switchyard {args:?}: {e}"),
        }
    };
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn run(args: &[&str]) -> Outcome {
    run_in(crate_root(), args)
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.code, Some(0), "switchyard {args:?}\n{}", out.describe());
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------------------

#[test]
fn explain_a_weighted_route_in_full() {
    let out = ok(&["explain", "--config", SHOP, "http://reviews:9080/"]);
    let expected = r#"request:  GET http://reviews:9080/
host:     reviews (port 9080)
served by VirtualService/default/reviews (tests/fixtures/tooling/shop.yaml:5)
          domains: reviews.default.svc.cluster.local, reviews, reviews.default.svc, reviews.default

routes, in order (the first match wins):
  [-] http[0].match[0]: not generated for this proxy: sourceLabels {app=productpage} are not all among this proxy's --labels {}
  [0] http[1].match[0] "admin": no match: uri "/" does not match prefix "/admin"
  [1] http[2].match[0] "moved": no match: uri "/" does not match exact "/old"
  [2] http[3].match[0] "jason": no match: header "end-user" absent
  [3] http[4] "split": MATCH

result:   route [3] forwards; each request is an independent weighted draw (weights 80 + 20 = 100):
   80.0%  subset v1 → outbound|9080|v1|reviews.default.svc.cluster.local (LEAST_REQUEST)
          10.0.0.1:9080 version=v1
   20.0%  subset v2 → outbound|9080|v2|reviews.default.svc.cluster.local (LEAST_REQUEST)
          10.0.0.2:9080 version=v2

policies of VirtualService/default/reviews spec.http[4]:
  timeout          2s
  retries          {attempts: 3, perTryTimeout: 500ms, retryOn: "gateway-error,connect-failure"}
  fault            -
  mirror           {host: reviews, subset: v3} [not enforced yet]
  mirrorPercentage {value: 10} [not enforced yet]
  connectionPool   v1: {http: {http1MaxPendingRequests: 10}} [not enforced yet] (DestinationRule/default/reviews)
  connectionPool   v2: {http: {http1MaxPendingRequests: 10}} [not enforced yet] (DestinationRule/default/reviews)
  outlierDetection v2: {consecutive5xxErrors: 5} [not enforced yet] (DestinationRule/default/reviews subset v2)
"#;
    // Whether a policy is enforced comes from the validator (SY0002), so an implemented
    // policy drops its marker; everything else must stay exactly as shown.
    let normalise = |s: &str| s.replace(" [not enforced yet]", "");
    assert_eq!(normalise(&out), normalise(expected), "\n{out}");
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

#[test]
fn explain_header_match_method_and_path_normalisation() {
    let out = ok(&[
        "explain",
        "--config",
        SHOP,
        "-X",
        "POST",
        "-H",
        "End-User: jason",
        "http://Reviews.default:9080/a/./b?x=1",
    ]);
    let l = lines(&out);
    assert_eq!(l[0], "request:  POST http://Reviews.default:9080/a/./b?x=1");
    assert_eq!(l[1], "          path normalised to /a/b before matching");
    assert_eq!(l[2], "host:     reviews.default (port 9080)");
    for line in [
        r#"  [0] http[1].match[0] "admin": no match: uri "/a/b" does not match prefix "/admin""#,
        r#"  [2] http[3].match[0] "jason": MATCH"#,
        r#"  [3] http[4] "split": not evaluated (an earlier route matched)"#,
        "result:   route [2] forwards every request to:",
        "  100.0%  subset v2 → outbound|9080|v2|reviews.default.svc.cluster.local (LEAST_REQUEST)",
    ] {
        assert!(has_line(&out, line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn explain_source_labels_put_the_route_in_the_table() {
    let out = ok(&[
        "explain",
        "--config",
        SHOP,
        "--labels",
        "app=productpage",
        "http://reviews:9080/",
    ]);
    assert!(
        has_line(&out, r#"  [0] http[0].match[0] "from-productpage": MATCH"#),
        "{out}"
    );
    assert!(!out.contains("not generated"), "{out}");
}

#[test]
fn explain_direct_response_redirect_no_route_and_unknown_host() {
    let cases: [(&str, &str); 4] = [
        (
            "http://reviews:9080/admin/users",
            r#"result:   route [0] answers directly: 403 Forbidden, body "forbidden""#,
        ),
        (
            "http://reviews:9080/old?page=2",
            "result:   route [1] redirects: 301 Moved Permanently, Location: http://reviews:9080/new?page=2",
        ),
        (
            "http://ratings:9080/other",
            "result:   no route matched: 404, response flag NR (empty body)",
        ),
        (
            "http://payments/",
            "result:   502 (outbound traffic policy REGISTRY_ONLY; Envoy logs no response flag, `-`)",
        ),
    ];
    for (url, result) in cases {
        let out = ok(&["explain", "--config", SHOP, url]);
        assert!(
            has_line(&out, result),
            "{url}: missing {result:?} in\n{out}"
        );
    }
    let out = ok(&["explain", "--config", SHOP, "http://ratings:9080/other"]);
    assert!(
        has_line(
            &out,
            r#"  [0] http[0].match[0]: no match: uri "/other" does not match prefix "/ratings""#
        ),
        "{out}"
    );
    let out = ok(&["explain", "--config", SHOP, "http://payments/"]);
    assert!(
        has_line(
            &out,
            "known hosts: ratings.default.svc.cluster.local, reviews.default.svc.cluster.local"
        ),
        "{out}"
    );
    let out = ok(&[
        "explain",
        "--config",
        SHOP,
        "--outbound-traffic-policy",
        "ALLOW_ANY",
        "http://payments:8080/",
    ]);
    assert!(
        has_line(
            &out,
            "result:   forwarded as is to payments:8080 (outbound traffic policy ALLOW_ANY, passthrough)"
        ),
        "{out}"
    );
}

#[test]
fn explain_dns_endpoints_and_a_host_header_like_curl() {
    let out = ok(&[
        "explain",
        "--config",
        SHOP,
        "-H",
        "Host: ratings:9080",
        "http://localhost:15001/ratings/7",
    ]);
    assert!(
        has_line(&out, "request:  GET http://ratings:9080/ratings/7"),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "          dns ratings-v1.default.svc.cluster.local:9080 (resolved every 5 s while serving)"
        ),
        "{out}"
    );
}

#[test]
fn explain_refuses_what_run_refuses_and_bad_requests() {
    let out = run(&[
        "explain",
        "--config",
        "tests/fixtures/cli/unknown-subset.yaml",
        "http://checkout/",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stdout.is_empty(), "{}", out.describe());
    assert!(out.stderr.contains("IST0101"), "{}", out.describe());
    assert!(
        out.stderr.contains("`run` would refuse this config"),
        "{}",
        out.describe()
    );

    for (args, message) in [
        (vec!["https://reviews/"], "only http:// URLs"),
        (
            vec!["-H", "no-colon", "http://reviews/"],
            "expected `Name: value`",
        ),
        (
            vec!["-X", "GE T", "http://reviews/"],
            "not a valid HTTP method",
        ),
    ] {
        let mut all = vec!["explain", "--config", SHOP];
        all.extend(args);
        let out = run(&all);
        assert_eq!(out.code, Some(1), "{all:?}\n{}", out.describe());
        assert!(out.stderr.contains(message), "{all:?}\n{}", out.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// simulate
// ---------------------------------------------------------------------------------------------

struct SimRow {
    label: String,
    configured: f64,
    count: u64,
    observed: f64,
    lo: f64,
    hi: f64,
}

fn pct(s: &str) -> f64 {
    s.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        / 100.0
}

/// The table rows of a `simulate` report.
fn sim_rows(out: &str) -> Vec<SimRow> {
    out.lines()
        .skip_while(|l| !l.starts_with("destination"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (head, rest) = l.split_once('[').expect("interval");
            let (interval, _) = rest.split_once(']').expect("interval end");
            let cols: Vec<&str> = head.split_whitespace().collect();
            let n = cols.len();
            let (lo, hi) = interval.split_once(',').expect("two bounds");
            SimRow {
                label: cols[..n - 3].join(" "),
                configured: pct(cols[n - 3]),
                count: cols[n - 2].parse().expect("count"),
                observed: pct(cols[n - 1]),
                lo: pct(lo),
                hi: pct(hi),
            }
        })
        .collect()
}

#[test]
fn simulate_same_seed_same_bytes_and_shares_inside_the_interval() {
    let args = [
        "simulate",
        "--config",
        SHOP,
        "-n",
        "100000",
        "--seed",
        "42",
        "http://reviews:9080/",
    ];
    let a = run(&args);
    let b = run(&args);
    assert_eq!(a.code, Some(0), "{}", a.describe());
    assert_eq!(a.stdout, b.stdout, "same seed, different output");
    assert!(!a.stdout.contains("time:"), "timings only with --verbose");
    let l = lines(&a.stdout);
    assert_eq!(l[0], "simulate: GET http://reviews:9080/");
    assert_eq!(l[1], "requests: 100000, seed 42");
    assert_eq!(
        l[2],
        r#"route:    VirtualService/default/reviews http[4] "split" (weights 80 + 20 = 100)"#
    );
    let rows = sim_rows(&a.stdout);
    assert_eq!(rows.len(), 2, "{}", a.stdout);
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 100_000);
    for (row, (label, configured)) in rows.iter().zip([("v1", 0.8), ("v2", 0.2)]) {
        assert_eq!(row.label, label);
        assert!((row.configured - configured).abs() < 1e-9);
        assert!((row.observed - row.count as f64 / 100_000.0).abs() < 1e-5);
        assert!(
            row.lo <= row.observed && row.observed <= row.hi,
            "{}",
            a.stdout
        );
        assert!(row.lo <= configured && configured <= row.hi, "{}", a.stdout);
    }
    assert!(
        has_line(
            &a.stdout,
            "The configured share lies inside the 99% interval for 2 of 2 destinations; about 1 in 100 falls outside by chance."
        ),
        "{}",
        a.stdout
    );
    assert!(
        has_line(
            &a.stdout,
            "v2 = outbound|9080|v2|reviews.default.svc.cluster.local"
        ),
        "{}",
        a.stdout
    );

    let other = run(&[
        "simulate",
        "--config",
        SHOP,
        "-n",
        "100000",
        "--seed",
        "43",
        "http://reviews:9080/",
    ]);
    assert_ne!(a.stdout, other.stdout, "the seed has no effect");
}

#[test]
fn simulate_verbose_random_seed_and_deterministic_routes() {
    let out = ok(&[
        "simulate",
        "--config",
        SHOP,
        "-n",
        "1000",
        "--verbose",
        "http://reviews:9080/",
    ]);
    let seed_line = lines(&out)[1];
    let seed = seed_line
        .strip_prefix("requests: 1000, seed ")
        .expect("the seed is printed");
    assert!(seed.parse::<u64>().is_ok(), "{seed_line}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("time: 1000 routing decisions in "))
    );
    let draws = out
        .lines()
        .find_map(|l| l.strip_prefix("first 40 draws: "))
        .expect("draws listed");
    assert_eq!(draws.split(' ').count(), 40);
    // The printed seed reproduces the run.
    let again = ok(&[
        "simulate",
        "--config",
        SHOP,
        "-n",
        "1000",
        "--seed",
        seed,
        "http://reviews:9080/",
    ]);
    // Verbose output is the plain report plus the draws and the timing.
    assert!(out.starts_with(&again), "{out}\n---\n{again}");

    let beta = ok(&[
        "simulate",
        "--config",
        SHOP,
        "-n",
        "500",
        "--seed",
        "1",
        "-H",
        "end-user: jason",
        "http://reviews:9080/",
    ]);
    let rows = sim_rows(&beta);
    assert_eq!(rows.len(), 1, "{beta}");
    assert_eq!((rows[0].label.as_str(), rows[0].count), ("v2", 500));
    assert!(has_line(
        &beta,
        "Every request gets the same answer: this route does not split traffic."
    ));

    let none = ok(&[
        "simulate",
        "--config",
        SHOP,
        "-n",
        "10",
        "--seed",
        "1",
        "http://ratings:9080/x",
    ]);
    let rows = sim_rows(&none);
    assert_eq!(
        (rows[0].label.as_str(), rows[0].count),
        ("404 NR", 10),
        "{none}"
    );

    let zero = run(&["simulate", "--config", SHOP, "-n", "0", "http://reviews/"]);
    assert_eq!(zero.code, Some(2), "{}", zero.describe());
}

// ---------------------------------------------------------------------------------------------
// validate --output
// ---------------------------------------------------------------------------------------------

#[test]
fn validate_json_and_yaml_put_one_document_on_stdout() {
    let out = run(&[
        "validate",
        "--output",
        "json",
        "tests/fixtures/cli/unknown-subset.yaml",
    ]);
    assert_eq!(out.code, Some(1), "errors exit 1\n{}", out.describe());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", out.stdout));
    assert_eq!(doc["summary"]["errors"], 1);
    assert_eq!(doc["summary"]["files"], 1);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["severity"], "Error");
    assert_eq!(d["code"], "IST0101");
    assert_eq!(d["file"], "tests/fixtures/cli/unknown-subset.yaml");
    assert_eq!(d["resource"], "VirtualService/default/checkout");
    assert_eq!(d["field_path"], "spec.http[1].route[1].destination.subset");
    assert!(d["line"].as_u64().is_some_and(|l| l > 0));
    assert!(
        out.stderr.contains("1 error(s)"),
        "the summary goes to stderr\n{}",
        out.describe()
    );

    // Warnings only: exit 0, and the same findings as the text output.
    let yaml = run(&["validate", "-o", "yaml", SHOP]);
    assert_eq!(yaml.code, Some(0), "{}", yaml.describe());
    let doc: yaml_serde::Value = yaml_serde::from_str(&yaml.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one YAML document: {e}\n{}", yaml.stdout));
    let diags = doc["diagnostics"].as_sequence().expect("a list");
    let text = ok(&["validate", SHOP]);
    assert_eq!(diags.len(), text.lines().count(), "{text}");
    assert!(
        diags
            .iter()
            .all(|d| d["severity"].as_str() == Some("Warning"))
    );
    assert_eq!(
        doc["summary"]["warnings"].as_u64(),
        Some(diags.len() as u64)
    );

    let clean = run(&["validate", "-o", "json", "config"]);
    assert_eq!(clean.code, Some(0), "{}", clean.describe());
    let doc: serde_json::Value = serde_json::from_str(&clean.stdout).expect("json");
    assert_eq!(doc["diagnostics"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------------
// probe
// ---------------------------------------------------------------------------------------------

/// Answers every connection with `response` (or never, if `None`) on a loopback port.
fn one_shot_server(response: Option<&'static str>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        // Bounded: the tests make at most a few connections.
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            match response {
                Some(r) => {
                    let _ = stream.write_all(r.as_bytes());
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        }
    });
    addr
}

#[test]
fn probe_exits_0_on_2xx_and_1_otherwise() {
    let up = one_shot_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nLIVE\n",
    ));
    let url = format!("http://{up}/healthz/ready");
    let out = run(&["probe", &url]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.stdout, format!("{url}: 200 OK LIVE\n"));

    let draining = one_shot_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nDRAINING\n",
    ));
    let url = format!("http://{draining}/healthz/ready");
    let out = run(&["probe", &url]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert_eq!(
        out.stderr,
        format!("{url}: 503 Service Unavailable DRAINING\n")
    );

    let silent = one_shot_server(None);
    let out = run(&["probe", "--timeout", "300ms", &format!("http://{silent}/")]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no answer within 300ms"),
        "{}",
        out.describe()
    );
    assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);

    let closed = support::closed_port();
    let out = run(&["probe", &format!("http://{closed}/")]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains("cannot connect"), "{}", out.describe());
}

#[test]
fn probe_reads_the_real_admin_readiness() {
    let proxy = ProxyProcess::spawn(
        BIN,
        &[
            "run",
            "--config",
            &crate_root().join("config").to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--metrics",
            "off",
        ],
        &[],
    );
    let admin = proxy.admin.expect("admin address logged");
    let url = format!("http://{admin}/healthz/ready");
    let out = run(&["probe", &url]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.stdout, format!("{url}: 200 OK LIVE\n"));

    let mut s = std::net::TcpStream::connect(admin).expect("admin");
    s.write_all(
        b"POST /healthcheck/fail HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let out = run(&["probe", &url]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert_eq!(
        out.stderr,
        format!("{url}: 503 Service Unavailable DRAINING\n")
    );
}

// ---------------------------------------------------------------------------------------------
// README: generated CLI reference and the canary walkthrough's outputs
// ---------------------------------------------------------------------------------------------

const CLI_BEGIN: &str = "<!-- BEGIN cli-reference";
const CLI_END: &str = "<!-- END cli-reference -->";
const WALK_MARK: &str = "<!-- walkthrough ";

/// Splits a README command line like a shell would for the simple cases used there.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// A scratch directory holding `canary/` and `staging/`, each the walkthrough's base files +
/// one step.
fn walkthrough_dir(step: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for copy in ["canary", "staging"] {
        let canary = dir.path().join(copy);
        std::fs::create_dir(&canary).expect("mkdir");
        let base = crate_root().join("examples/walkthrough/base");
        for entry in std::fs::read_dir(&base).expect("base") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name");
            std::fs::copy(&path, canary.join(name)).expect("copy base");
        }
        let step_file = crate_root().join(format!("examples/walkthrough/steps/{step}.yaml"));
        std::fs::copy(&step_file, canary.join("frontend-vs.yaml"))
            .unwrap_or_else(|e| panic!("{}: {e}", step_file.display()));
    }
    dir
}

/// What the README should say: the generated CLI reference, and each walkthrough block's
/// output as the binary prints it now.
fn regenerate_readme(readme: &str) -> String {
    let mut out = String::new();
    let mut lines = readme.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        if line.starts_with(CLI_BEGIN) {
            for skipped in lines.by_ref() {
                if skipped.starts_with(CLI_END) {
                    out.push_str(&ok(&["help-markdown"]));
                    out.push_str(skipped);
                    break;
                }
            }
        } else if let Some(rest) = line.strip_prefix(WALK_MARK) {
            let step = rest.trim().trim_end_matches("-->").trim().to_string();
            // The fence, then `$ switchyard ...`, then the output to replace.
            let fence = lines.next().expect("a code block after the marker");
            out.push_str(fence);
            let command = lines.next().expect("a command line");
            out.push_str(command);
            let words = shell_words(command.trim_start_matches('$').trim());
            assert_eq!(words.first().map(String::as_str), Some("switchyard"));
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let dir = walkthrough_dir(&step);
            let result = run_in(dir.path(), &args);
            assert_eq!(result.code, Some(0), "{args:?}\n{}", result.describe());
            out.push_str(&result.stdout);
            for skipped in lines.by_ref() {
                if skipped.trim_end() == "```" {
                    out.push_str(skipped);
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn readme_cli_reference_and_walkthrough_are_current() {
    let path = crate_root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    assert!(readme.contains(CLI_BEGIN) && readme.contains(CLI_END));
    assert!(readme.matches(WALK_MARK).count() >= 4);
    let want = regenerate_readme(&readme);
    if readme != want {
        if std::env::var_os("SWITCHYARD_UPDATE_README").is_some() {
            std::fs::write(&path, &want).expect("write README.md");
            return;
        }
        let first = readme
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "README.md is out of date from line {}: run `SWITCHYARD_UPDATE_README=1 cargo test --test tooling readme` and review the diff\n  README: {:?}\n  now:    {:?}",
            first + 1,
            readme.lines().nth(first),
            want.lines().nth(first)
        );
    }

    // The generated blocks are what `--help` prints, command by command.
    let reference = ok(&["help-markdown"]);
    let mut commands = vec![vec![]];
    for line in reference.lines() {
        if let Some(rest) = line.strip_prefix("<details><summary><code>switchyard ") {
            let name = rest.split(' ').next().expect("name");
            commands.push(vec![name]);
        }
    }
    assert!(commands.len() >= 7, "{reference}");
    for cmd in commands {
        let mut args = cmd.clone();
        args.push("--help");
        let help = ok(&args);
        assert!(
            reference.contains(&help),
            "`switchyard {args:?}` is not in the reference"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The walkthrough's files
// ---------------------------------------------------------------------------------------------

#[test]
fn walkthrough_steps_validate_explain_and_simulate_as_documented() {
    let steps = [
        ("1-canary-5", vec![("v1", 0.95), ("v2", 0.05)]),
        ("2-canary-25", vec![("v1", 0.75), ("v2", 0.25)]),
        ("3-canary-50", vec![("v1", 0.5), ("v2", 0.5)]),
        ("4-promoted-100", vec![("v2", 1.0)]),
        ("rollback", vec![("v1", 1.0)]),
    ];
    for (step, shares) in steps {
        let dir = walkthrough_dir(step);
        let v = run_in(dir.path(), &["validate", "canary"]);
        assert_eq!(v.code, Some(0), "{step}\n{}", v.describe());
        assert!(v.stdout.is_empty(), "{step}: findings\n{}", v.stdout);

        let explain = run_in(
            dir.path(),
            &["explain", "--config", "canary", "http://frontend/"],
        );
        assert_eq!(explain.code, Some(0), "{step}\n{}", explain.describe());
        for (subset, share) in &shares {
            let line = format!(
                "{:>6}  subset {subset} → outbound|80|{subset}|frontend.default.svc.cluster.local (LEAST_REQUEST)",
                format!("{:.1}%", share * 100.0)
            );
            assert!(
                explain
                    .stdout
                    .lines()
                    .any(|l| l.trim_start() == line.trim_start()),
                "{step}: missing {line:?}\n{}",
                explain.stdout
            );
        }
        // Beta testers reach v2 at every step.
        let beta = run_in(
            dir.path(),
            &[
                "explain",
                "--config",
                "canary",
                "-H",
                "X-User-Group: beta",
                "http://frontend/",
            ],
        );
        assert!(
            beta.stdout.contains("  100.0%  subset v2 → "),
            "{step}\n{}",
            beta.stdout
        );

        let sim = run_in(
            dir.path(),
            &[
                "simulate",
                "--config",
                "canary",
                "-n",
                "20000",
                "--seed",
                "5",
                "http://frontend/",
            ],
        );
        assert_eq!(sim.code, Some(0), "{step}\n{}", sim.describe());
        let rows = sim_rows(&sim.stdout);
        let got: Vec<(&str, f64)> = rows
            .iter()
            .map(|r| (r.label.as_str(), r.configured))
            .collect();
        let want: Vec<(&str, f64)> = shares.iter().map(|(s, x)| (*s, *x)).collect();
        assert_eq!(got, want, "{step}\n{}", sim.stdout);
        for r in &rows {
            assert!(
                r.lo <= r.configured && r.configured <= r.hi,
                "{step}\n{}",
                sim.stdout
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests
// ---------------------------------------------------------------------------------------------

fn manifests() -> Vec<(PathBuf, yaml_serde::Value)> {
    let dir = crate_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let value = <yaml_serde::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    docs
}

fn kind_of(v: &yaml_serde::Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name_of(v: &yaml_serde::Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

fn string_list(v: &yaml_serde::Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn labels(v: &yaml_serde::Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_are_consistent_and_the_configmap_validates() {
    let docs = manifests();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, v)| v)
            .find(|v| kind_of(v) == kind && name_of(v) == name)
            .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/kubernetes"))
    };

    // kustomization.yaml lists every other manifest.
    let kustomization = find("Kustomization", "");
    let listed = string_list(&kustomization["resources"]);
    let mut files: Vec<String> = docs
        .iter()
        .filter(|(_, v)| kind_of(v) != "Kustomization")
        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    files.dedup();
    assert_eq!(listed, files);

    // The ConfigMap's Istio YAML loads and validates (as strictly as `validate`) cleanly.
    let cm = find("ConfigMap", "switchyard-config");
    let data = cm["data"].as_mapping().expect("ConfigMap data");
    assert!(!data.is_empty());
    let identity = ProxyIdentity::default();
    let mut service_entries = Vec::new();
    for (key, text) in data {
        let key = key.as_str().expect("key");
        let text = text.as_str().expect("text");
        let res = load_str(Path::new(key), text, &LoadOptions::default());
        let mut diags = res.diagnostics.clone();
        diags.extend(validate(
            &res,
            &ValidateOptions {
                identity: &identity,
                mode: Mode::Analyze,
                istio_mutual_as_plaintext: false,
            },
        ));
        assert!(diags.is_empty(), "{key}: {diags:#?}");
        assert!(!res.virtual_services.is_empty() && !res.destination_rules.is_empty());
        service_entries.extend(res.service_entries);
    }

    // The ServiceEntry's DNS endpoints are the per-version headless Services, whose pods
    // carry the labels the endpoint (and so the DestinationRule subset) names.
    assert_eq!(service_entries.len(), 1);
    let se = &service_entries[0];
    assert_eq!(
        format!("{:?}", se.spec.resolution),
        "Some(Dns)",
        "resolution: DNS"
    );
    assert!(se.spec.endpoints.len() >= 2);
    for ep in &se.spec.endpoints {
        let address = ep.address.as_deref().expect("endpoint address");
        let svc_name = address
            .strip_suffix(".default.svc.cluster.local")
            .unwrap_or_else(|| panic!("{address} is not a Service DNS name"));
        let svc = find("Service", svc_name);
        assert_eq!(
            svc["spec"]["clusterIP"].as_str(),
            Some("None"),
            "{svc_name} is headless"
        );
        let selector = labels(&svc["spec"]["selector"]);
        let deployment = docs
            .iter()
            .map(|(_, v)| v)
            .find(|v| {
                kind_of(v) == "Deployment"
                    && labels(&v["spec"]["template"]["metadata"]["labels"]) == selector
            })
            .unwrap_or_else(|| panic!("no Deployment's pods match Service {svc_name}"));
        let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
        for (k, v) in &ep.labels {
            assert_eq!(pod_labels.get(k), Some(v), "{svc_name}: label {k}");
        }
    }

    // The app Deployment: switchyard as a native sidecar with the config mounted.
    let web = find("Deployment", "web");
    let pod = &web["spec"]["template"];
    let annotations = labels(&pod["metadata"]["annotations"]);
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port").map(String::as_str),
        Some("15090")
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/stats/prometheus")
    );
    let inits = pod["spec"]["initContainers"]
        .as_sequence()
        .expect("initContainers");
    let sidecar = inits
        .iter()
        .find(|c| c["name"].as_str() == Some("switchyard"))
        .expect("switchyard initContainer");
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "native sidecar"
    );
    assert!(
        sidecar["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("switchyard"))
    );

    // Its arguments and variables are ones the binary accepts.
    let mut args = string_list(&sidecar["args"]);
    assert_eq!(args.first().map(String::as_str), Some("run"));
    args.push("--help".into());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let help = ok(&arg_refs);
    for var in sidecar["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("env name");
        assert!(
            help.contains(&format!("[env: {name}]")),
            "`run` reads no {name}"
        );
    }
    let config_dir = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("--config");
    let mount = sidecar["volumeMounts"]
        .as_sequence()
        .and_then(|m| {
            m.iter()
                .find(|m| m["mountPath"].as_str() == Some(&config_dir))
        })
        .expect("the config directory is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "subPath mounts never update"
    );
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .expect("the mounted volume");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some("switchyard-config")
    );

    // Startup and readiness probes on /healthz/ready, on a port the container declares.
    let ports: Vec<(String, i64)> = sidecar["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["containerPort"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    for probe in ["startupProbe", "readinessProbe"] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz/ready"), "{probe}");
        let port = get["port"].as_str().expect("a named port");
        let number = ports
            .iter()
            .find(|(n, _)| n == port)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{probe}: no port {port}"));
        assert_eq!(number, 15090, "{probe}: the read-only metrics listener");
    }
    // That listener is the one the manifest configures.
    let metrics = sidecar["env"]
        .as_sequence()
        .and_then(|e| {
            e.iter()
                .find(|v| v["name"].as_str() == Some("SWITCHYARD_METRICS"))
        })
        .and_then(|v| v["value"].as_str())
        .expect("SWITCHYARD_METRICS");
    assert_eq!(metrics, "0.0.0.0:15090");
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

/// Instructions with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(crate_root().join("Dockerfile")).expect("Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let full = std::mem::take(&mut cur);
        if let Some((inst, rest)) = full.split_once(char::is_whitespace) {
            out.push((inst.to_ascii_uppercase(), rest.trim().to_string()));
        }
    }
    out
}

fn json_args(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{s:?} is not exec form: {e}"))
}

#[test]
fn dockerfile_builds_like_ci_and_runs_the_binary_unprivileged() {
    let inst = dockerfile();
    let all = |name: &str| -> Vec<&str> {
        inst.iter()
            .filter(|(i, _)| i == name)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    // Two ways to the binary: the Rust build stage (the default) or the build context
    // (`--build-arg BINARY_FROM=prebuilt`, what .ci/image builds); the runtime is scratch.
    assert!(all("ARG").contains(&"BINARY_FROM=build"), "{inst:?}");
    let from = all("FROM");
    assert!(from[0].starts_with("rust:") && from[0].ends_with(" AS build"));
    assert!(from.contains(&"scratch AS prebuilt"), "{from:?}");
    assert!(from.contains(&"${BINARY_FROM} AS binary"), "{from:?}");
    assert_eq!(
        from.last(),
        Some(&"scratch"),
        "the runtime has nothing but what it copies"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the build runs CI's command"
    );
    let user = all("USER");
    let uid = user
        .last()
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.parse::<u32>().ok())
        .expect("a numeric USER");
    assert_ne!(uid, 0, "non-root");
    assert_eq!(all("EXPOSE"), ["15001 15000 15090"]);
    assert_eq!(json_args(all("ENTRYPOINT")[0]), ["switchyard"]);
    assert_eq!(
        json_args(all("CMD")[0]),
        ["run", "--config", "/etc/switchyard"]
    );
    // The runtime stage: the binary, the CA bundle and /tmp from the chosen stage.
    let copies = all("COPY");
    let runtime_copies: Vec<&&str> = copies
        .iter()
        .filter(|c| c.contains("--from=binary"))
        .collect();
    assert_eq!(runtime_copies.len(), 3, "{copies:?}");
    assert!(copies.iter().all(|c| !c.contains("--from=build")));

    // The health check is the binary probing /healthz/ready, with arguments it accepts.
    let health = all("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    let cmd = health[0]
        .split_once("CMD ")
        .map(|(_, c)| json_args(c))
        .expect("HEALTHCHECK ... CMD [...]");
    assert_eq!(cmd[..2], ["switchyard", "probe"]);
    assert!(cmd.last().is_some_and(|u| u.ends_with("/healthz/ready")));
    let mut args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
    args.push("--help");
    ok(&args);

    // Every COPY source from the context exists (target/image/ is staged by .ci/image) and
    // .dockerignore lets it through.
    let ignore =
        std::fs::read_to_string(crate_root().join(".dockerignore")).expect(".dockerignore");
    for copy in copies.iter().filter(|c| !c.contains("--from=")) {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                src.starts_with("target/") || crate_root().join(src).exists(),
                "COPY {src}: missing"
            );
            assert!(
                ignore.lines().any(|l| l.trim() == format!("!{src}")),
                ".dockerignore keeps {src} out of the context"
            );
        }
    }
}

#[test]
fn explain_json_is_the_same_walk_as_a_document() {
    let out = ok(&[
        "explain",
        "--config",
        SHOP,
        "-o",
        "json",
        "http://reviews:9080/",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["request"]["host"], "reviews");
    assert_eq!(doc["request"]["port"], 9080);
    assert_eq!(doc["served_by"]["name"], "VirtualService/default/reviews");
    assert_eq!(doc["served_by"]["file"], SHOP);
    let routes = doc["routes"].as_array().expect("routes");
    let outcomes: Vec<&str> = routes
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        outcomes,
        ["not generated", "no match", "no match", "no match", "match"],
        "{out}"
    );
    assert_eq!(
        routes[2]["reason"],
        "uri \"/\" does not match exact \"/old\""
    );
    let result = &doc["result"];
    assert_eq!(result["action"], "forward");
    assert_eq!(result["route"], 3);
    let dests: Vec<(String, f64, String)> = result["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| {
            (
                d["subset"].as_str().unwrap_or("").to_string(),
                d["share"].as_f64().unwrap_or(-1.0),
                d["endpoints"][0]["address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        dests,
        [
            ("v1".to_string(), 0.8, "10.0.0.1:9080".to_string()),
            ("v2".to_string(), 0.2, "10.0.0.2:9080".to_string())
        ]
    );
    // The text lines are the text output, line for line.
    let text = ok(&["explain", "--config", SHOP, "http://reviews:9080/"]);
    let lines: Vec<&str> = doc["text"]
        .as_array()
        .expect("text")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(lines, text.lines().collect::<Vec<_>>());

    let unknown = ok(&["explain", "--config", SHOP, "-o", "json", "http://nope/"]);
    let doc: serde_json::Value = serde_json::from_str(&unknown).expect("JSON");
    assert_eq!(doc["result"]["action"], "reject");
    assert_eq!(doc["result"]["status"], 502);
}

// ---------------------------------------------------------------------------------------------
// Compose example
// ---------------------------------------------------------------------------------------------

/// deploy/compose/compose.yaml: the proxy's mounted config validates, its DNS endpoints are the
/// compose services, and the published port is the one it listens on.
#[test]
fn compose_example_mounts_a_config_that_validates_and_names_its_services() {
    let dir = crate_root().join("deploy/compose");
    let text = std::fs::read_to_string(dir.join("compose.yaml")).expect("compose.yaml");
    let compose: yaml_serde::Value = yaml_serde::from_str(&text).expect("compose YAML");
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(names, ["frontend-v1", "frontend-v2", "switchyard"]);
    let proxy = &compose["services"]["switchyard"];
    assert_eq!(proxy["image"].as_str(), Some("switchyard:0.1.0"));

    // The mounted files, gathered as the container sees /etc/switchyard.
    let config = tempfile::tempdir().expect("tempdir");
    for volume in string_list(&proxy["volumes"]) {
        let mut parts = volume.split(':');
        let (src, dst) = (parts.next().expect("source"), parts.next().expect("target"));
        let name = dst
            .strip_prefix("/etc/switchyard/")
            .unwrap_or_else(|| panic!("{volume}: not under /etc/switchyard"));
        std::fs::copy(dir.join(src), config.path().join(name))
            .unwrap_or_else(|e| panic!("{volume}: {e}"));
    }
    let cfg = config.path().to_str().expect("utf-8 path");
    let command = string_list(&proxy["command"]);
    assert_eq!(command[..3], ["run", "--config", "/etc/switchyard"]);
    let v = run(&["validate", "--config", cfg]);
    assert_eq!(v.code, Some(0), "{}", v.describe());
    assert!(v.stdout.is_empty(), "findings:\n{}", v.stdout);

    // Each version's endpoint is a compose service, by DNS, on the port it listens on.
    let explain = ok(&["explain", "--config", cfg, "http://frontend/"]);
    for version in ["v1", "v2"] {
        let service = format!("frontend-{version}");
        let listen = string_list(&compose["services"][service.as_str()]["command"])
            .iter()
            .find_map(|a| a.strip_prefix("-listen=:").map(str::to_string))
            .expect("-listen=:PORT");
        let line = format!("dns {service}:{listen} app=frontend,version={version}");
        assert!(explain.contains(&line), "no {line:?} in\n{explain}");
    }

    // The published proxy port is the one --listen names.
    let listen = command
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1].clone())
        .expect("--listen");
    let port = listen.trim_start_matches(':');
    assert!(
        string_list(&proxy["ports"]).contains(&format!("{port}:{port}")),
        "{listen} is not published"
    );
}

// ---------------------------------------------------------------------------------------------
// The walkthrough, run as written
// ---------------------------------------------------------------------------------------------

/// The commands of the README's canary walkthrough, in order: every line of its `sh` blocks
/// and every `$ ` line of its `console` blocks.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Canary walkthrough\n")
        .expect("walkthrough section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut out = Vec::new();
    let mut block: Option<&str> = None;
    for line in section.lines() {
        match (block, line.trim_end()) {
            (None, "```sh") => block = Some("sh"),
            (None, "```console") => block = Some("console"),
            (None, _) => {}
            (Some(_), "```") => block = None,
            (Some("sh"), l) if !l.trim().is_empty() => out.push(l.to_string()),
            (Some("console"), l) => {
                if let Some(cmd) = l.strip_prefix("$ ") {
                    out.push(cmd.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// `line` without a trailing `# comment` (outside quotes), and the comment.
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '#' if !quoted && (i == 0 || line[..i].ends_with(' ')) => {
                return (line[..i].trim_end(), Some(line[i + 1..].trim()));
            }
            _ => {}
        }
    }
    (line.trim_end(), None)
}

/// One HTTP/1.1 request as curl sends it; returns status and body.
fn http_get(
    addr: std::net::SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[String],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(HANG)).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs the walkthrough's commands in a scratch copy of the repository's examples: files
/// with `mkdir`/`cp`/`rm`/`mv`, `switchyard` with this binary, `curl` against `demo
/// --config canary` started where the prose says to (on ephemeral ports: the test moves the
/// base's endpoints and rewrites localhost:15001/15000 to the demo's addresses). A `# v1` or
/// `# v2` comment on a curl line is the body it must get; a `mv` into canary/ must be served
/// within 3 s (the watcher applies it at once).
#[test]
fn readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(crate_root().join("README.md")).expect("README.md");
    assert!(
        readme.contains("`switchyard demo --config canary`"),
        "the walkthrough starts the demo on canary/"
    );
    let commands = walkthrough_commands(&readme);
    assert!(commands.len() >= 25, "{commands:#?}");
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    // examples/, with the base's loopback ports moved to free ephemeral ones.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port()
        })
        .collect();
    for sub in ["base", "steps"] {
        let from = crate_root().join("examples/walkthrough").join(sub);
        let to = root.join("examples/walkthrough").join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for e in std::fs::read_dir(&from).expect("examples") {
            let p = e.expect("entry").path();
            let text = std::fs::read_to_string(&p)
                .expect("read")
                .replace("http: 18081", &format!("http: {}", ports[0]))
                .replace("http: 18082", &format!("http: {}", ports[1]));
            std::fs::write(to.join(p.file_name().expect("name")), text).expect("write");
        }
    }
    let mut demo: Option<ProxyProcess> = None;
    let dump =
        |admin: std::net::SocketAddr| http_get(admin, "GET", "127.0.0.1", "/config_dump", &[]).1;
    for line in &commands {
        let (cmd, comment) = split_comment(line);
        for part in cmd.split(" && ") {
            let words = shell_words(part);
            let args: Vec<&str> = words.iter().map(String::as_str).collect();
            let at = |p: &str| root.join(p);
            match args.as_slice() {
                ["mkdir", d] => std::fs::create_dir(at(d)).expect("mkdir"),
                ["rm", "-rf", d] => {
                    let _ = std::fs::remove_dir_all(at(d));
                }
                ["cp", "-r", from, to] => {
                    std::fs::create_dir(at(to)).expect("cp -r target");
                    for e in std::fs::read_dir(at(from)).expect("cp -r source") {
                        let p = e.expect("entry").path();
                        std::fs::copy(&p, at(to).join(p.file_name().expect("name"))).expect("cp");
                    }
                }
                ["cp", from, to] if from.ends_with("/*.yaml") => {
                    let dir = at(from.trim_end_matches("/*.yaml"));
                    for e in std::fs::read_dir(dir).expect("cp source") {
                        let p = e.expect("entry").path();
                        std::fs::copy(&p, at(to).join(p.file_name().expect("name"))).expect("cp");
                    }
                }
                ["cp", from, to] => {
                    std::fs::copy(at(from), at(to)).unwrap_or_else(|e| panic!("{line}: {e}"));
                }
                ["mv", from, to] => {
                    let before = demo.as_ref().and_then(|d| d.admin).map(dump);
                    std::fs::rename(at(from), at(to)).unwrap_or_else(|e| panic!("{line}: {e}"));
                    if let (Some(before), Some(admin)) =
                        (before, demo.as_ref().and_then(|d| d.admin))
                    {
                        let deadline = Instant::now() + Duration::from_secs(3);
                        while dump(admin) == before {
                            assert!(Instant::now() < deadline, "{line}: not applied within 3 s");
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                ["switchyard", rest @ ..] => {
                    let out = run_in(root, rest);
                    assert_eq!(out.code, Some(0), "{line}\n{}", out.describe());
                }
                ["curl", rest @ ..] => {
                    let d = demo.get_or_insert_with(|| {
                        let canary = root.join("canary");
                        ProxyProcess::spawn(
                            BIN,
                            &[
                                "demo",
                                "--config",
                                canary.to_str().expect("utf-8"),
                                "--listen",
                                "127.0.0.1:0",
                                "--admin",
                                "127.0.0.1:0",
                                "--metrics",
                                "off",
                                "--requests",
                                "200",
                                "--beta-requests",
                                "20",
                            ],
                            &[],
                        )
                    });
                    let (mut method, mut headers, mut url) = ("GET", Vec::new(), None);
                    let mut it = rest.iter();
                    while let Some(a) = it.next() {
                        match *a {
                            "-X" => method = it.next().expect("-X METHOD"),
                            "-H" => headers.push(it.next().expect("-H VALUE").to_string()),
                            "-s" => {}
                            u => url = Some(u),
                        }
                    }
                    let url = url.expect("a URL");
                    let (hostport, path) = url
                        .split_once('/')
                        .map_or((url, "/".to_string()), |(h, p)| (h, format!("/{p}")));
                    let addr = match hostport {
                        "localhost:15001" => d.proxy.expect("demo proxy address"),
                        "localhost:15000" => d.admin.expect("demo admin address"),
                        other => panic!("{line}: curl to {other}"),
                    };
                    let (status, body) = http_get(addr, method, "localhost", &path, &headers);
                    assert!((200..300).contains(&status), "{line}: {status} {body}");
                    if let Some(want @ ("v1" | "v2")) = comment {
                        assert_eq!(body.trim(), want, "{line}");
                    }
                }
                other => panic!("the walkthrough runs {other:?}, which this test does not know"),
            }
        }
    }
    assert!(demo.is_some(), "the walkthrough never reached the proxy");
}

/// Every repository path the README names in backticks exists: a path whose first component
/// is a top-level entry (build outputs under target/ aside), and a bare `*.md`/`*.rs`/`*.sh`/
/// `*.toml`/`*.yaml` name somewhere in the tree. Nothing points outside the repository.
#[test]
fn readme_names_only_files_that_exist() {
    let readme = std::fs::read_to_string(crate_root().join("README.md")).expect("README.md");
    fn find(dir: &Path, name: &str) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                let skip = p.file_name().is_some_and(|n| n == "target" || n == ".git");
                !skip
                    && (p.file_name().is_some_and(|n| n == name) || (p.is_dir() && find(&p, name)))
            })
    }
    let mut checked = 0;
    for (i, token) in readme.split('`').enumerate() {
        if i % 2 == 0 || token.contains(char::is_whitespace) || token.is_empty() {
            continue;
        }
        assert!(
            !token.starts_with("../"),
            "the README points outside the repository: {token}"
        );
        let path_like = token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        if !path_like || token.starts_with('/') {
            continue;
        }
        match token.split_once('/') {
            Some((first, _)) => {
                if first == "target" || !crate_root().join(first).exists() {
                    continue;
                }
                assert!(
                    crate_root().join(token).exists(),
                    "README names {token}: missing"
                );
                checked += 1;
            }
            None => {
                let ext = token.rsplit_once('.').map(|(_, e)| e);
                if matches!(ext, Some("md" | "rs" | "sh" | "toml" | "yaml")) {
                    assert!(
                        find(crate_root(), token),
                        "README names {token}: not in the tree"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} paths checked");
}

/// The README's list of environment variables is every `[env: ...]` of every command, no more.
#[test]
fn readme_lists_every_environment_variable() {
    let readme = std::fs::read_to_string(crate_root().join("README.md")).expect("README.md");
    let start = readme
        .find("also read environment variables")
        .expect("the environment paragraph");
    let para = &readme[start..start + readme[start..].find("\n\n").expect("paragraph end")];
    let listed: std::collections::BTreeSet<&str> = para
        .split('`')
        .filter(|t| t.starts_with("SWITCHYARD_"))
        .collect();
    let reference = ok(&["help-markdown"]);
    let read: std::collections::BTreeSet<&str> = reference
        .split("[env: ")
        .skip(1)
        .filter_map(|t| t.split(']').next())
        .collect();
    assert_eq!(listed, read);
    assert!(para.contains(&format!("{} in all", read.len())), "{para}");
}
