//! The `switchyard` process over its life: the SIGTERM drain (readiness, drain delay, drain
//! timeout, a second signal), and reloading a rewritten config through the admin API and SIGHUP.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A config file in its own temporary directory.
struct Config {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Config {
    fn new(yaml: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.yaml");
        std::fs::write(&path, yaml).expect("write config");
        Config { _dir: dir, path }
    }

    fn rewrite(&self, yaml: &str) {
        // Write beside it and rename, as an editor or a deploy tool would.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("replace config");
    }

    fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

/// `web` served by one upstream, no VirtualService: Istio's default route to all endpoints.
fn single(up: &Upstream) -> String {
    service_yaml("web", &[("v1", up.addr)])
}

/// `web` with subsets v1 and v2, all traffic to `subset`.
fn routed_to(v1: &Upstream, v2: &Upstream, subset: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts:\n  - web\n  http:\n  - route:\n    - destination:\n        host: web\n        subset: {subset}\n",
        service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)])
    )
}

fn start(cfg: &Config, extra: &[&str]) -> ProxyProcess {
    let mut args = vec![
        "run",
        "--config",
        cfg.path_str(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    ProxyProcess::spawn(BIN, &args, &[])
}

fn addrs(p: &ProxyProcess) -> (SocketAddr, SocketAddr) {
    (
        p.proxy.expect("proxy address in the log"),
        p.admin.expect("admin address in the log"),
    )
}

/// Polls `/ready` until it answers 503; returns how long that took after `since`, or None if
/// it did not within `limit`.
async fn ready_fails_within(
    admin: SocketAddr,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut c = Client::h1(admin).await;
    c.set_timeout(Duration::from_secs(2));
    loop {
        if let Ok(r) = c.try_request("GET", "127.0.0.1", "/ready", &[]).await
            && r.status == 503
        {
            return Some(since.elapsed());
        }
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (≤ 5 s) until the upstream has seen more than `before` requests.
async fn until_upstream_sees(up: &Upstream, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests() <= before {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `GET path` on its own connection; resolves to the reply and when it ended.
fn in_flight(
    proxy: SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<(Result<Reply, String>, Instant)> {
    tokio::spawn(async move {
        let mut c = Client::h1(proxy).await;
        c.set_timeout(Duration::from_secs(10));
        let r = c.try_request("GET", "web", path, &[]).await;
        (r, Instant::now())
    })
}

/// One HTTP/1.1 exchange on a raw socket that is then left open and idle.
async fn idle_keepalive(proxy: SocketAddr) -> TcpStream {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy))
        .await
        .expect("connect timed out")
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("response timed out")
            .expect("read response");
        assert!(n > 0, "proxy closed before answering: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..head_end].to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{text}");
        assert!(
            !head.contains("connection: close"),
            "the first exchange must keep the connection alive: {text}"
        );
        let body = &buf[head_end + 4..];
        let complete = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
            Some(len) => body.len() >= len.trim().parse::<usize>().expect("content-length"),
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if complete {
            return s;
        }
    }
}

/// Whether the peer closes `s` within `limit` (EOF or reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(limit, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "unexpected bytes on an idle connection: {:?}",
            String::from_utf8_lossy(&b[..n])
        ),
        Err(_) => false,
    }
}

fn exit_ok(status: Option<ExitStatus>, p: &ProxyProcess, what: &str) {
    match status {
        Some(s) => assert_eq!(s.code(), Some(0), "{what}: {s}\n{}", p.stderr_text()),
        None => panic!("{what}: still running\n{}", p.stderr_text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let up = Upstream::start("web-v1").await;
    let cfg = Config::new(&single(&up));
    let mut p = start(&cfg, &[]);
    let (proxy, admin) = addrs(&p);

    let mut idle = idle_keepalive(proxy).await;
    let before = up.requests();
    // Long enough that "at once" below (bounded at 1 s, for a loaded machine running the
    // suite in parallel) still means well before the drain could have ended on its own.
    let slow = in_flight(proxy, "/slow/3000");
    until_upstream_sees(&up, before).await;

    p.signal(SIGTERM);
    let sent = Instant::now();
    let took = ready_fails_within(admin, sent, Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "/ready still 200 1 s after SIGTERM\n{}",
        p.stderr_text()
    );
    // 1.5 s: with /ready's 1 s above, still well before the 3 s request (and so the drain)
    // ends; 1 s was missed once on a machine running three builds beside the suite.
    assert!(
        closed_within(&mut idle, Duration::from_millis(1500)).await,
        "the idle keep-alive connection was not closed at once after SIGTERM"
    );
    assert!(
        p.child.try_wait().expect("try_wait").is_none(),
        "exited with a request in flight\n{}",
        p.stderr_text()
    );

    let (reply, done) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow request never finished")
        .expect("slow request task");
    let reply = reply.unwrap_or_else(|e| panic!("in-flight request failed during drain: {e}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "web-v1");
    let status = p.wait_exit_async(Duration::from_secs(3)).await;
    exit_ok(status, &p, "exit after the drain");
    assert!(
        done.elapsed() < Duration::from_secs(3),
        "exited {:?} after the last request finished",
        done.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delay_keeps_accepting_new_connections() {
    let up = Upstream::start("web-v1").await;
    let cfg = Config::new(&single(&up));
    let mut p = start(&cfg, &["--drain-delay", "1s"]);
    let (proxy, admin) = addrs(&p);

    p.signal(SIGTERM);
    let sent = Instant::now();
    assert!(
        ready_fails_within(admin, sent, Duration::from_millis(200))
            .await
            .is_some(),
        "/ready still 200 after SIGTERM\n{}",
        p.stderr_text()
    );
    for at in [Duration::from_millis(250), Duration::from_millis(600)] {
        if let Some(wait) = at.checked_sub(sent.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut c = Client::h1(proxy).await;
        c.set_timeout(Duration::from_secs(2));
        let r = c
            .try_request("GET", "web", "/", &[])
            .await
            .unwrap_or_else(|e| panic!("new connection {at:?} into the drain delay: {e}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "web-v1");
    }
    let status = p.wait_exit_async(Duration::from_secs(4)).await;
    let total = sent.elapsed();
    exit_ok(status, &p, "exit after the drain delay");
    assert!(
        total >= Duration::from_millis(900),
        "exited after {total:?}, before the 1 s drain delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_the_wait_for_slow_requests() {
    let up = Upstream::start("web-v1").await;
    let cfg = Config::new(&single(&up));
    let mut p = start(&cfg, &["--drain-timeout", "500ms"]);
    let (proxy, _) = addrs(&p);

    let before = up.requests();
    let slow = in_flight(proxy, "/slow/5000");
    until_upstream_sees(&up, before).await;

    p.signal(SIGTERM);
    let sent = Instant::now();
    let status = p.wait_exit_async(Duration::from_secs(4)).await;
    let took = sent.elapsed();
    slow.abort();
    exit_ok(status, &p, "exit at the drain timeout");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "exited {took:?} after SIGTERM; expected about 500 ms\n{}",
        p.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once_with_failure() {
    let up = Upstream::start("web-v1").await;
    let cfg = Config::new(&single(&up));
    let mut p = start(&cfg, &[]);
    let (proxy, admin) = addrs(&p);

    let before = up.requests();
    let slow = in_flight(proxy, "/slow/5000");
    until_upstream_sees(&up, before).await;

    p.signal(SIGTERM);
    let first = Instant::now();
    assert!(
        ready_fails_within(admin, first, Duration::from_millis(500))
            .await
            .is_some(),
        "/ready still 200 after SIGTERM\n{}",
        p.stderr_text()
    );
    // Draining now; leave the process a moment to be listening for the next signal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        p.child.try_wait().expect("try_wait").is_none(),
        "exited before the 5 s request finished\n{}",
        p.stderr_text()
    );
    p.signal(SIGTERM);
    let second = Instant::now();
    let status = p.wait_exit_async(Duration::from_secs(1)).await;
    slow.abort();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 1 s after the second SIGTERM\n{}",
            p.stderr_text()
        )
    });
    assert!(
        !status.success(),
        "a second signal must exit non-zero: {status}"
    );
    assert!(second.elapsed() < Duration::from_secs(1));
}

async fn admin_json(a: &mut Client, method: &str, path: &str) -> (u16, serde_json::Value) {
    let r = a.request(method, "127.0.0.1", path, &[]).await;
    let json = r.json();
    (r.status, json)
}

async fn routed_body(c: &mut Client) -> String {
    let r = c.get("web", "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_applies_a_good_config_and_refuses_a_bad_one() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let cfg = Config::new(&routed_to(&v1, &v2, "v1"));
    let p = start(&cfg, &[]);
    let (proxy, admin) = addrs(&p);
    let mut c = Client::h1(proxy).await;
    let mut a = Client::h1(admin).await;

    assert_eq!(routed_body(&mut c).await, "v1");
    let (_, dump) = admin_json(&mut a, "GET", "/config_dump").await;
    assert_eq!(dump["version"], 1, "{dump:#}");

    // GET cannot change state.
    let r = a.get("127.0.0.1", "/reload").await;
    assert_eq!(r.status, 405, "{}", r.text());

    cfg.rewrite(&routed_to(&v1, &v2, "v2"));
    let (status, body) = admin_json(&mut a, "POST", "/reload").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["result"], "accepted", "{body:#}");
    assert_eq!(body["version"], 2, "{body:#}");
    for _ in 0..5 {
        assert_eq!(routed_body(&mut c).await, "v2", "the new routing applies");
    }
    let (_, dump) = admin_json(&mut a, "GET", "/config_dump").await;
    assert_eq!(dump["version"], 2, "{dump:#}");

    let broken = routed_to(&v1, &v2, "v3");
    cfg.rewrite(&broken);
    let line = broken
        .lines()
        .position(|l| l == "        subset: v3")
        .expect("subset line")
        + 1;
    let diag = format!(
        "{}:{line}: Error IST0101 VirtualService/default/web: spec.http[0].route[0].destination.subset: Referenced host+subset in destinationrule not found: \"web.default.svc.cluster.local+v3\"",
        cfg.path_str()
    );
    let (status, body) = admin_json(&mut a, "POST", "/reload").await;
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(body["result"], "refused", "{body:#}");
    assert_eq!(body["diagnostics"], serde_json::json!([diag]), "{body:#}");
    let (_, dump) = admin_json(&mut a, "GET", "/config_dump").await;
    assert_eq!(dump["last_reload"]["result"], "refused", "{dump:#}");
    assert_eq!(
        dump["last_reload"]["diagnostics"],
        serde_json::json!([diag]),
        "{dump:#}"
    );
    assert_eq!(
        dump["version"], 2,
        "the last good table keeps serving: {dump:#}"
    );
    for _ in 0..5 {
        assert_eq!(routed_body(&mut c).await, "v2", "version 2 still serves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let cfg = Config::new(&routed_to(&v1, &v2, "v1"));
    let mut p = start(&cfg, &[]);
    let (proxy, admin) = addrs(&p);
    let mut c = Client::h1(proxy).await;
    let mut a = Client::h1(admin).await;
    assert_eq!(routed_body(&mut c).await, "v1");

    cfg.rewrite(&routed_to(&v1, &v2, "v2"));
    p.signal(SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, dump) = admin_json(&mut a, "GET", "/config_dump").await;
        if dump["version"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload within 5 s: {dump:#}\n{}",
            p.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(
            routed_body(&mut c).await,
            "v2",
            "the reloaded routing applies"
        );
    }
    assert!(
        p.child.try_wait().expect("try_wait").is_none(),
        "SIGHUP must not stop the proxy\n{}",
        p.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_listen_address_exits_and_the_first_keeps_all_traffic() {
    let up = Upstream::start("first").await;
    let cfg = Config::new(&single(&up));
    // Two workers: the first instance's own listeners share the port.
    let first = start(&cfg, &["--workers", "2"]);
    let (proxy, _) = addrs(&first);
    let listen = proxy.to_string();
    let mut second = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            cfg.path_str(),
            "--listen",
            &listen,
            "--admin",
            "127.0.0.1:0",
            "--metrics",
            "off",
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the second instance");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = second.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second instance kept running on {listen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {listen}"))
            && err.contains("address already in use"),
        "{err}"
    );
    // Every connection still reaches the first instance.
    for _ in 0..20 {
        let mut c = Client::h1(proxy).await;
        let r = c.get("web", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "first"));
    }
    assert_eq!(up.requests(), 20);
}
