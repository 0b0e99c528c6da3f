//! Hot reload through the file watcher (`switchyard::watch`): every way a config gets edited
//! (in-place writes, temp file + rename, files added and removed, the Kubernetes ConfigMap
//! `..data` symlink swap), the settle rule that keeps half-written files out, refusals, the
//! poll fallback and re-arming. Real files, real sockets; every wait is bounded.
//!
//! Most tests run with the poll disabled, so only file events can have triggered a reload.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard::config::{LoadOptions, ProxyIdentity};
use switchyard::upstream::PoolRegistry;
use switchyard::watch::{WatchHandle, WatchOptions, spawn_watcher};
use switchyard::{ReloadContext, Reloader};

use support::e2e_helpers::admin_get;
use support::*;

/// Generous bound for "the change is served": the default window is ~55 ms.
const APPLY_LIMIT: Duration = Duration::from_secs(5);

/// Events only: a change the watcher applies cannot have come from the poll.
fn events_only() -> WatchOptions {
    WatchOptions {
        poll_interval: None,
        ..WatchOptions::default()
    }
}

/// `web` with subsets v1/v2: `v2_weight`% to v2, the rest to v1, and every response marked
/// `x-gen: <g>` so a reply names the table that routed it.
fn weighted(v1: &Upstream, v2: &Upstream, g: u64, v2_weight: u32) -> String {
    format!(
        "{}{}",
        service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)]),
        vs_yaml("web", g, v2_weight)
    )
}

fn vs_yaml(host: &str, g: u64, v2_weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {host}\nspec:\n  hosts:\n  - {host}\n  http:\n  - headers:\n      response:\n        set:\n          x-gen: \"{g}\"\n    route:\n    - destination:\n        host: web\n        subset: v1\n      weight: {}\n    - destination:\n        host: web\n        subset: v2\n      weight: {v2_weight}\n",
        100 - v2_weight
    )
}

/// Polls `cond` every 5 ms for at most `limit`.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends GETs until one is answered with `x-gen: g`; the body of that reply.
async fn until_gen(c: &mut Client, g: u64) -> String {
    let deadline = tokio::time::Instant::now() + APPLY_LIMIT;
    loop {
        let r = c.get("web", "/").await;
        if r.header("x-gen") == Some(g.to_string().as_str()) {
            assert_eq!(r.status, 200, "{}", r.text());
            return r.text();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "g {g} not served within {APPLY_LIMIT:?}; last reply {} {:?} {}",
            r.status,
            r.header("x-gen"),
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Writes `text` to `path` the way an editor like `sed -i` or vim does: a temp file beside
/// it, renamed over it.
fn write_renamed(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cfg")
    ));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the config");
}

/// A Kubernetes ConfigMap volume as kubelet's AtomicWriter lays it out:
/// `..<timestamp>/<file>`, `..data -> ..<timestamp>`, `<file> -> ..data/<file>`.
struct ConfigMapDir {
    dir: PathBuf,
    current: Option<String>,
    updates: u32,
}

impl ConfigMapDir {
    fn new(dir: &Path) -> ConfigMapDir {
        ConfigMapDir {
            dir: dir.to_path_buf(),
            current: None,
            updates: 0,
        }
    }

    /// One kubelet update: new timestamped dir, `..data_tmp` renamed over `..data`, the
    /// top-level links (created once), the old dir removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        let stamp = if self.updates == 0 {
            // The exact name from the issue.
            "..2026_11_21_00_00_00.123".to_string()
        } else {
            format!(
                "..2026_11_21_00_{:02}_{:02}.{:03}",
                self.updates / 60,
                self.updates % 60,
                self.updates % 1000
            )
        };
        self.updates += 1;
        let ts = self.dir.join(&stamp);
        std::fs::create_dir(&ts).expect("create the timestamped dir");
        for (name, text) in files {
            std::fs::write(ts.join(name), text).expect("write into the timestamped dir");
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        for (name, _) in files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link)
                    .expect("symlink the file");
            }
        }
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old dir");
        }
    }
}

/// A reloader over `path` with no proxy in front (file-mode tests check the table itself).
async fn reloader_for(path: &Path) -> Arc<Reloader> {
    let ctx = ReloadContext::new(
        path.to_path_buf(),
        ProxyIdentity::default(),
        Arc::new(PoolRegistry::default()),
    );
    match Reloader::start(ctx).await {
        Ok((r, _)) => Arc::new(r),
        Err(d) => panic!(
            "refused: {}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// The content hash the loader computes for `path` right now.
fn hash_of(path: &Path) -> String {
    switchyard::load(path, &LoadOptions::default()).content_hash
}

/// Waits until the serving table was built from exactly what `path` holds now.
async fn serves_current(r: &Reloader, path: &Path) -> bool {
    let want = hash_of(path);
    wait_for(APPLY_LIMIT, || r.table.load().source_hash == want).await
}

async fn upstreams() -> (Upstream, Upstream) {
    (Upstream::start("v1").await, Upstream::start("v2").await)
}

fn watch(p: &TestProxy, opts: WatchOptions) -> WatchHandle {
    spawn_watcher(p.reloader.clone(), opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_write_is_applied_once() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let w = watch(&p, events_only());
    let mut c = Client::h1(p.addr).await;
    assert_eq!(until_gen(&mut c, 1).await, "v1");

    std::fs::write(p.config_path(), weighted(&v1, &v2, 2, 100)).expect("write");
    assert_eq!(until_gen(&mut c, 2).await, "v2");
    assert_eq!(p.reloader.version(), 2);
    // A later look must not find another reload: one write, one swap.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(p.reloader.reloads_accepted(), 1);
    assert_eq!(p.reloader.reloads_refused(), 0);
    assert_eq!(w.stats().event_applies, 1, "{:?}", w.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_file_renamed_over_the_config_is_applied() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let _w = watch(&p, events_only());
    let mut c = Client::h2(p.addr).await;
    for (g, weight, want) in [(2, 100, "v2"), (3, 0, "v1"), (4, 100, "v2")] {
        write_renamed(&p.config_path(), &weighted(&v1, &v2, g, weight));
        assert_eq!(until_gen(&mut c, g).await, want);
    }
    assert_eq!(p.reloader.version(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_data_symlink_swap_is_applied_in_directory_mode() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    // Turn the directory into a ConfigMap mount serving the same routes.
    std::fs::remove_file(p.config_path()).expect("remove config.yaml");
    let mut cm = ConfigMapDir::new(p.dir.path());
    cm.update(&[("frontend.yaml", &weighted(&v1, &v2, 2, 0))]);
    assert!(p.dir.path().join("..2026_11_21_00_00_00.123").is_dir());
    let w = watch(&p, events_only());
    let mut c = Client::h1(p.addr).await;
    // The layout changed before the watcher started; its first look picks that up.
    assert_eq!(until_gen(&mut c, 2).await, "v1");

    for (g, weight, want) in [(3, 100, "v2"), (4, 0, "v1"), (5, 100, "v2")] {
        cm.update(&[("frontend.yaml", &weighted(&v1, &v2, g, weight))]);
        assert_eq!(until_gen(&mut c, g).await, want);
    }
    // Each swap is a burst of 4-5 events; each burst is one reload.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(p.reloader.reloads_accepted(), 4, "{:?}", w.stats());
    assert_eq!(w.stats().event_applies, 3, "{:?}", w.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_swap_is_applied_when_the_config_is_the_file_symlink() {
    let (v1, v2) = upstreams().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cm = ConfigMapDir::new(dir.path());
    cm.update(&[("frontend.yaml", &weighted(&v1, &v2, 1, 0))]);
    // `--config /etc/config/frontend.yaml`: a symlink whose inode never changes while what it
    // resolves to does.
    let path = dir.path().join("frontend.yaml");
    let r = reloader_for(&path).await;
    let w = spawn_watcher(r.clone(), events_only());
    for (g, weight) in [(2, 100), (3, 5), (4, 25)] {
        cm.update(&[("frontend.yaml", &weighted(&v1, &v2, g, weight))]);
        assert!(serves_current(&r, &path).await, "g {g}: {:?}", w.stats());
    }
    assert_eq!(r.version(), 4);
    assert_eq!(w.stats().event_applies, 3, "{:?}", w.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_follows_writes_and_renames_and_ignores_neighbours() {
    let (v1, v2) = upstreams().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, weighted(&v1, &v2, 1, 0)).expect("write");
    let r = reloader_for(&path).await;
    let w = spawn_watcher(r.clone(), events_only());

    std::fs::write(&path, weighted(&v1, &v2, 2, 50)).expect("write");
    assert!(serves_current(&r, &path).await, "in-place: {:?}", w.stats());
    write_renamed(&path, &weighted(&v1, &v2, 3, 25));
    assert!(serves_current(&r, &path).await, "rename: {:?}", w.stats());
    // The watch survived the rename (a watch on the file itself would not have).
    std::fs::write(&path, weighted(&v1, &v2, 4, 75)).expect("write");
    assert!(
        serves_current(&r, &path).await,
        "after rename: {:?}",
        w.stats()
    );
    assert_eq!(r.version(), 4);

    // Other files in the same directory wake the watcher but change nothing it reads.
    let attempts = r.reloads_accepted() + r.reloads_refused() + r.reloads_unchanged();
    std::fs::write(dir.path().join("other.yaml"), "not: [ours").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "hello").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.stats().events > 0, "{:?}", w.stats());
    assert_eq!(
        r.reloads_accepted() + r.reloads_refused() + r.reloads_unchanged(),
        attempts,
        "a neighbour file must not cause a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_and_deleted_in_the_directory_are_applied() {
    let (v1, v2) = upstreams().await;
    let base = service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)]);
    let p = TestProxy::start(&base).await;
    let _w = watch(&p, events_only());
    let mut c = Client::h1(p.addr).await;

    // A new file routes `web` with a g marker.
    let extra = p.dir.path().join("web-vs.yaml");
    std::fs::write(&extra, vs_yaml("web", 2, 100)).expect("write");
    assert_eq!(until_gen(&mut c, 2).await, "v2");

    // A new subdirectory is watched too (recursive).
    std::fs::remove_file(&extra).expect("remove");
    let team = p.dir.path().join("team");
    std::fs::create_dir(&team).expect("mkdir");
    std::fs::write(team.join("web-vs.yml"), vs_yaml("web", 3, 0)).expect("write");
    assert_eq!(until_gen(&mut c, 3).await, "v1");

    // Deleting it brings back the default route (no VirtualService, no marker).
    std::fs::remove_dir_all(&team).expect("remove dir");
    let gone = wait_for(APPLY_LIMIT, || p.reloader.version() == 4).await;
    assert!(
        gone,
        "deletion not applied: version {}",
        p.reloader.version()
    );
    let r = c.get("web", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gen"), None, "the deleted route still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_one_reload_of_the_last_content() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    // A wide window so that 2 ms gaps are a burst even on a busy machine.
    let opts = WatchOptions {
        debounce: Duration::from_millis(300),
        ..events_only()
    };
    let w = watch(&p, opts);
    let mut c = Client::h1(p.addr).await;
    for g in 2..=21 {
        std::fs::write(p.config_path(), weighted(&v1, &v2, g, (g % 2) as u32 * 100))
            .expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until_gen(&mut c, 21).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        p.reloader.reloads_accepted(),
        1,
        "20 quick writes must be one reload: {:?}",
        w.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_mid_write_is_not_applied_until_closed() {
    use std::io::Write;
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let _w = watch(&p, events_only());
    let mut c = Client::h1(p.addr).await;
    // The prefix is a valid config on its own (services, no VirtualService): validation
    // alone would accept it.
    let full = weighted(&v1, &v2, 2, 100);
    let cut = full.find("kind: VirtualService").expect("VS in config");
    let cut = full[..cut].rfind("---").expect("separator") + 4;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p.config_path())
        .expect("open for writing");
    f.write_all(&full.as_bytes()[..cut]).expect("write prefix");
    f.flush().expect("flush");
    // Far longer than the settle window; the writer still has the file open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        p.reloader.version(),
        1,
        "a half-written file was applied: {:?}",
        p.reloader.last_report()
    );
    f.write_all(&full.as_bytes()[cut..])
        .expect("write the rest");
    drop(f);
    assert_eq!(until_gen(&mut c, 2).await, "v2");
    assert_eq!(p.reloader.reloads_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_still_changing_inside_the_window_is_not_applied() {
    use std::io::Write;
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    // Window 300 ms, gap 30 ms: a 10x margin before the prefix could count as settled.
    let _w = watch(
        &p,
        WatchOptions {
            debounce: Duration::from_millis(300),
            ..events_only()
        },
    );
    let mut c = Client::h1(p.addr).await;
    let full = weighted(&v1, &v2, 2, 100);
    let cut = full.find("kind: VirtualService").expect("VS") - 4;
    // Two separate writers, each closing the file: only the hash comparison can tell.
    std::fs::write(p.config_path(), &full[..cut]).expect("write prefix");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p.config_path())
        .expect("open to append");
    f.write_all(&full.as_bytes()[cut..]).expect("append");
    drop(f);
    assert_eq!(until_gen(&mut c, 2).await, "v2");
    assert_eq!(p.reloader.reloads_accepted(), 1, "the prefix was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_file_is_refused_and_the_last_table_keeps_serving() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let _w = watch(&p, events_only());
    std::fs::write(p.config_path(), "").expect("truncate");
    let refused = wait_for(APPLY_LIMIT, || p.reloader.reloads_refused() >= 1).await;
    assert!(refused, "{:?}", p.reloader.last_report());
    assert_eq!(p.reloader.version(), 1);
    let report = format!("{:?}", p.reloader.last_report());
    assert!(
        report.contains("refusing to replace the serving routes"),
        "{report}"
    );
    let r = Client::h1(p.addr).await.get("web", "/").await;
    assert_eq!(r.status, 200, "the last good table serves: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_refused_once_and_the_dump_says_why() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 5)).await;
    // A fast poll as well: it must not retry (and re-log) the same broken content.
    let w = watch(
        &p,
        WatchOptions {
            poll_interval: Some(Duration::from_millis(50)),
            ..WatchOptions::default()
        },
    );
    let mut c = Client::h1(p.addr).await;
    let good = weighted(&v1, &v2, 1, 5);
    let broken = good.replace("subset: v2", "subset: v9");
    // Renamed over, not written in place: a reader that sees a half-written file refuses
    // that too (rightly), which would make the counts below depend on the machine's load.
    write_renamed(&p.config_path(), &broken);
    assert!(wait_for(APPLY_LIMIT, || p.reloader.reloads_refused() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.reloader.reloads_refused(), 1, "{:?}", w.stats());
    assert_eq!(p.reloader.version(), 1);
    until_gen(&mut c, 1).await;

    let dump = admin_get(&p, "/config_dump").await.json();
    let last = &dump["last_reload"];
    assert_eq!(last["result"], "refused", "{dump:#}");
    assert_eq!(last["trigger"], "watch", "{dump:#}");
    assert!(last["time"].as_f64().is_some_and(|t| t > 0.0), "{dump:#}");
    let line = broken
        .lines()
        .position(|l| l.contains("subset: v9"))
        .expect("line")
        + 1;
    let diag = format!(
        "{}:{line}: Error IST0101 VirtualService/default/web: spec.http[0].route[1].destination.subset: Referenced host+subset in destinationrule not found: \"web.default.svc.cluster.local+v9\"",
        p.config_path().display()
    );
    assert_eq!(last["diagnostics"], serde_json::json!([diag]), "{dump:#}");
    assert_eq!(dump["version"], 1, "{dump:#}");
    assert_eq!(dump["reloads"]["refused"], 1, "{dump:#}");
    let hash = dump["source_hash"].as_str().expect("source_hash");
    assert_eq!(hash.len(), 64, "{dump:#}");
    assert!(dump["loaded_at"].as_f64().is_some_and(|t| t > 0.0));
    assert_eq!(
        dump["virtual_hosts"][0]["domains"][0],
        "web.default.svc.cluster.local"
    );
    let shares: Vec<u64> = dump["virtual_hosts"][0]["routes"][0]["action"]["route"]
        .as_array()
        .expect("weighted route")
        .iter()
        .map(|d| d["weight"].as_u64().expect("weight"))
        .collect();
    assert_eq!(shares, [95, 5], "{dump:#}");
    assert!(
        dump["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .any(|c| c["endpoints"][0]["address"] == v2.addr.to_string()),
        "{dump:#}"
    );

    // Reverting to the serving content clears the refusal without a new version.
    write_renamed(&p.config_path(), &good);
    let cleared = wait_for(APPLY_LIMIT, || {
        p.reloader.last_report().is_some_and(|r| r.accepted)
    })
    .await;
    assert!(cleared, "{:?}", p.reloader.last_report());
    assert_eq!(p.reloader.version(), 1);
    let dump = admin_get(&p, "/config_dump").await.json();
    assert_eq!(dump["last_reload"]["result"], "accepted", "{dump:#}");
    assert_eq!(dump["last_reload"]["changed"], false, "{dump:#}");

    // And a real fix applies normally.
    write_renamed(&p.config_path(), &weighted(&v1, &v2, 2, 100));
    assert_eq!(until_gen(&mut c, 2).await, "v2");
    assert_eq!(p.reloader.reloads_refused(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_catches_changes_when_there_are_no_events() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let w = watch(
        &p,
        WatchOptions {
            native: false,
            poll_interval: Some(Duration::from_millis(100)),
            ..WatchOptions::default()
        },
    );
    assert!(!w.stats().native);
    let mut c = Client::h1(p.addr).await;
    std::fs::write(p.config_path(), weighted(&v1, &v2, 2, 100)).expect("write");
    assert_eq!(until_gen(&mut c, 2).await, "v2");
    assert_eq!(w.stats().poll_applies, 1, "{:?}", w.stats());
    assert_eq!(w.stats().event_applies, 0, "{:?}", w.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_config_does_not_wake_the_watcher() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    // The poll reads the files every 20 ms; those opens must not look like changes.
    let w = watch(
        &p,
        WatchOptions {
            poll_interval: Some(Duration::from_millis(20)),
            ..WatchOptions::default()
        },
    );
    let mut c = Client::h1(p.addr).await;
    assert_eq!(c.get("web", "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = std::fs::read(p.config_path()).expect("read");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.stats().events, 0, "{:?}", w.stats());
    assert_eq!(
        p.reloader.reloads_accepted()
            + p.reloader.reloads_refused()
            + p.reloader.reloads_unchanged(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_config_directory_is_watched_again() {
    let (v1, v2) = upstreams().await;
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = root.path().join("config");
    std::fs::create_dir(&cfg).expect("mkdir");
    std::fs::write(cfg.join("web.yaml"), weighted(&v1, &v2, 1, 0)).expect("write");
    let r = reloader_for(&cfg).await;
    let w = spawn_watcher(
        r.clone(),
        WatchOptions {
            poll_interval: Some(Duration::from_millis(100)),
            ..WatchOptions::default()
        },
    );
    // Replace the whole directory (a new inode at the same path): the old watch is useless.
    std::fs::rename(&cfg, root.path().join("config.old")).expect("move away");
    std::fs::create_dir(&cfg).expect("mkdir");
    std::fs::write(cfg.join("web.yaml"), weighted(&v1, &v2, 2, 100)).expect("write");
    assert!(serves_current(&r, &cfg).await, "{:?}", w.stats());
    assert!(
        wait_for(APPLY_LIMIT, || w.stats().rearms >= 1).await,
        "{:?}",
        w.stats()
    );
    // Events flow from the new directory.
    let events = w.stats().event_applies;
    std::fs::write(cfg.join("web.yaml"), weighted(&v1, &v2, 3, 50)).expect("write");
    assert!(serves_current(&r, &cfg).await, "{:?}", w.stats());
    assert_eq!(w.stats().event_applies, events + 1, "{:?}", w.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_survive_watched_reloads() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 0)).await;
    let _w = watch(&p, events_only());
    let mut c = Client::h1(p.addr).await;
    assert_eq!(until_gen(&mut c, 1).await, "v1");
    let conns = v1.connections();
    // Only the marker changes; the cluster and its endpoint are the same.
    for g in 2..=4 {
        std::fs::write(p.config_path(), weighted(&v1, &v2, g, 0)).expect("write");
        assert_eq!(until_gen(&mut c, g).await, "v1");
    }
    assert_eq!(
        v1.connections(),
        conns,
        "a reload must keep the pooled upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_cluster_drains_then_its_pool_is_dropped() {
    let (v1, v2) = upstreams().await;
    let p = TestProxy::start(&weighted(&v1, &v2, 1, 100)).await;
    let _w = watch(&p, events_only());
    // In flight on v2 when v2 disappears from the config.
    let addr = p.addr;
    let slow = tokio::spawn(async move {
        let mut c = Client::h1(addr).await;
        c.get("web", "/slow/200").await
    });
    assert!(wait_for(APPLY_LIMIT, || v2.requests() >= 1).await);
    let only_v1 = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts:\n  - web\n  http:\n  - headers:\n      response:\n        set:\n          x-gen: \"2\"\n    route:\n    - destination:\n        host: web\n        subset: v1\n",
        service_yaml("web", &[("v1", v1.addr)])
    );
    std::fs::write(p.config_path(), only_v1).expect("write");
    let mut c = Client::h1(p.addr).await;
    assert_eq!(until_gen(&mut c, 2).await, "v1");
    let swapped = tokio::time::Instant::now();
    // The request finishes on the table it started with.
    let r = slow.await.expect("slow request task");
    assert_eq!((r.status, r.text().as_str()), (200, "v2"));
    let pools = &p.reloader.ctx.pools;
    assert!(
        pools.get(v2.addr, false).idle_connections() >= 1,
        "the drained request's connection went back to its pool"
    );
    // Nothing routes to v2 any more: the follow-up prune (1 s after the swap) drops the pool
    // and its idle connection, without waiting for another reload.
    tokio::time::sleep_until(swapped + Duration::from_millis(1500)).await;
    assert_eq!(
        pools.get(v2.addr, false).idle_connections(),
        0,
        "the removed cluster's pool is still registered"
    );
}
