//! `--workers`: one single-threaded runtime per worker, each accepting on its own
//! `SO_REUSEPORT` queue of the proxy port.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::chaos::{ChaosUpstream, Mode};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// CPU time (ns) of each `switchyard-worker-*` thread and of the main thread, by name.
fn thread_cpu(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim().to_string();
        let ns = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if name.starts_with("switchyard") {
            *out.entry(name).or_default() += ns;
        }
    }
    out
}

/// The proxy binary with `workers` workers in front of one `web` endpoint at `up`; the
/// directory holds its config and must outlive it.
fn spawn_with_workers(
    up: std::net::SocketAddr,
    workers: usize,
) -> (tempfile::TempDir, ProxyProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, service_yaml("web", &[("v1", up)])).expect("write config");
    let config = path.to_str().expect("utf-8 path");
    let workers = workers.to_string();
    let args = [
        "run",
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--workers",
        &workers,
    ];
    let proxy = ProxyProcess::spawn(BIN, &args, &[]);
    (dir, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_accepts_and_serves() {
    let up = Upstream::start("v1").await;
    let (_dir, mut proxy) = spawn_with_workers(up.addr, 3);
    assert!(
        proxy.stderr_text().contains("workers=3"),
        "{}",
        proxy.stderr_text()
    );
    let addr = proxy.proxy.expect("proxy address");
    let before = thread_cpu(proxy.pid());
    // comm is truncated to 15 bytes: "switchyard-worker-1" reads "switchyard-work".
    assert!(
        before.contains_key("switchyard-work"),
        "worker threads not found: {before:?}"
    );

    // Many short connections: the kernel hashes each to one of the three accept queues.
    let mut ok = 0;
    for _ in 0..120 {
        let mut c = Client::h1(addr).await;
        for _ in 0..3 {
            let r = c.get("web", "/").await;
            assert_eq!(r.status, 200, "{}", r.text());
            ok += 1;
        }
    }
    assert_eq!(ok, 360);
    let after = thread_cpu(proxy.pid());
    // Both the main thread (worker 0) and the worker threads did proxy work.
    let main_name = "switchyard";
    let grew = |n: &str| after.get(n).copied().unwrap_or(0) > before.get(n).copied().unwrap_or(0);
    assert!(grew(main_name), "main thread served nothing: {after:?}");
    assert!(
        grew("switchyard-work"),
        "worker threads served nothing: {before:?} -> {after:?}"
    );

    proxy.signal(15);
    let status = proxy
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    up.stop().await;
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_refused() {
    // std's listener sets SO_REUSEADDR but not SO_REUSEPORT: our bind must fail, not share.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(
        &path,
        service_yaml("web", &[("v1", "127.0.0.1:9".parse().expect("addr"))]),
    )
    .expect("write config");
    let listen = format!("127.0.0.1:{port}");
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            &listen,
            "--admin",
            "off",
            "--metrics",
            "off",
        ])
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {listen} (--listen)")),
        "{err}"
    );
    drop(taken);
}

#[test]
fn workers_flag_rejects_zero() {
    let out = std::process::Command::new(BIN)
        .args(["run", "--config", "x.yaml", "--workers", "0"])
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}

/// Each worker keeps its own shard of every upstream pool (as Envoy keeps a pool per worker):
/// with two workers, sequential keep-alive traffic is still carried by a handful of pooled
/// upstream connections, at most one per client connection, and none is lost on release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_reuses_its_own_upstream_connections() {
    let up = ChaosUpstream::start("v1", Mode::Ok).await;
    let (_dir, mut proxy) = spawn_with_workers(up.addr, 2);
    let addr = proxy.proxy.expect("proxy address");
    const CLIENTS: usize = 8;
    const EACH: usize = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        tasks.spawn(async move {
            let mut c = Client::h1(addr).await;
            for _ in 0..EACH {
                let r = c.get("web", "/").await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    assert_eq!(up.requests(), (CLIENTS * EACH) as u64);
    let conns = up.connections();
    assert!(
        (1..=CLIENTS as u64).contains(&conns),
        "{conns} upstream connections for {CLIENTS} keep-alive clients"
    );
    proxy.signal(15);
    proxy
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
}
