//! Follows the config path on disk and reloads when its content changes: the hot-reload half
//! of Envoy picking up a new route from istiod.
//!
//! # What is watched
//! Directories only, each non-recursively. A watch on the file itself would die with the first
//! rename or `..data` swap (the old inode gets `DELETE_SELF`, then silence).
//! - `--config` is a **directory**: it and each subdirectory the loader reads (dot-entries
//!   skipped). A ConfigMap's `..<timestamp>` folders are not watched: kubelet makes and
//!   deletes one per update, and the `..data` swap shows in the top directory anyway. New
//!   subdirectories are watched as they appear.
//! - `--config` is a **file**: its parent directory.
//! - A config file or directory that is a symlink resolving outside the watched tree: the
//!   directory it resolves to as well.
//!
//! Every event is only a hint that something *may* have changed: editors rename temp files
//! over the original, kubelet swaps the `..data` symlink (no event ever names the config
//! file), in-place writers truncate then write. So no event kind or file name is trusted;
//! the files are re-read and their content hash (the loader's SHA-256 over paths and bytes)
//! decides. Our own reads produce `OPEN`/`CLOSE_NOWRITE` events; those are ignored, so reading
//! never feeds back into another check.
//!
//! # When a change is applied (the settle rule)
//! An in-place write is first seen as an empty or truncated file, which is often still valid
//! YAML, so validation alone cannot tell a half-written file from an edit. A change is applied
//! only when:
//! 1. events have gone quiet for [`COALESCE`] (one write's burst of events is one change), then
//!    the files are read (sample A);
//! 2. a full **settle window** (`debounce`, default [`DEFAULT_DEBOUNCE`] = 50 ms) passes with
//!    no new event, and a second read (sample B) hashes the same as A. Any event inside the
//!    window restarts it, so a burst of events (a ConfigMap swap emits 4-5) is one reload;
//! 3. no YAML file has been written (`MODIFY`) without being closed (`CLOSE_WRITE`) in the
//!    last `writer_grace` (default 2 s): a writer that pauses mid-file with the file still open
//!    holds the reload back.
//!
//! Exactly the bytes of sample B are validated, compiled and swapped in, so a write landing
//! between the check and the build cannot sneak in half a file. A file emptied on purpose
//! that stays empty passes the same rule and is applied like any other edit. Expect a change
//! to serve about `COALESCE + debounce` (≈ 55 ms by default) plus the build after the write.
//! Events that keep arriving for longer than `max_defer` (a noisy directory) stop restarting
//! the window; the hash comparison alone then decides.
//!
//! A content hash equal to the last attempt's (applied or refused) is not tried again, so a
//! broken edit is refused and logged once, not on every event or poll until it is fixed.
//!
//! # Poll fallback
//! inotify is not a 100 % reliable source (queue overflow, network and overlay filesystems,
//! watch limits, a watched directory replaced). Every `poll_interval` (default 5 s) the files
//! are hashed anyway and any difference goes through the same settle rule; the watches are
//! re-armed then too if their directory was replaced. If no native watcher can be created at
//! all, polling is the only source.
//!
//! # Limits
//! Kubernetes `subPath` mounts never see ConfigMap updates (kubelet does not update them), so
//! they cannot hot-reload. SIGHUP and `POST /reload` force a reload without the settle window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{self, Sources};
use crate::reload::{Reloader, Trigger, parse_sources, read_sources};

/// Default settle window: short enough that a canary shift serves in well under 100 ms, long
/// enough to span the gap between a truncate and the write that follows it.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
/// Default interval of the content-hash poll that catches what events miss.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Quiet time after the last event before the first sample: the events of one write arrive
/// within microseconds of each other.
pub const COALESCE: Duration = Duration::from_millis(5);
/// Events buffered between the notify thread and the watch task. Past it, events are
/// dropped and an overflow is noted, which the task treats as "something changed".
const EVENT_QUEUE: usize = 1024;
/// Files tracked as "written, not yet closed"; past it the oldest half is forgotten (their
/// grace would have expired anyway, or a pathological writer is churning names).
const MAX_TRACKED_WRITERS: usize = 256;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The settle window (see the module docs).
    pub debounce: Duration,
    /// Content-hash poll interval; `None` disables polling.
    pub poll_interval: Option<Duration>,
    /// How long a file written but not closed holds a reload back.
    pub writer_grace: Duration,
    /// How long a stream of events may keep restarting the settle window.
    pub max_defer: Duration,
    /// Use OS file events (inotify). `false` leaves only the poll.
    pub native: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEFAULT_DEBOUNCE,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
            writer_grace: Duration::from_secs(2),
            max_defer: Duration::from_secs(1),
            native: true,
        }
    }
}

/// Why the native watcher could not be set up (the watcher then polls only).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create a file watcher: {0}")]
    Create(#[source] notify::Error),
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Counters for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WatchStats {
    /// A native (inotify) watcher is running.
    pub native: bool,
    /// Batches of file events that counted as "maybe changed".
    pub events: u64,
    /// Settled changes handed to the reloader: seen by file events, or by the poll alone.
    pub event_applies: u64,
    pub poll_applies: u64,
    /// Watches armed after the first arming: a watched directory was replaced, or a new
    /// subdirectory appeared.
    pub rearms: u64,
}

#[derive(Default)]
struct SharedStats {
    native: AtomicBool,
    events: AtomicU64,
    event_applies: AtomicU64,
    poll_applies: AtomicU64,
    rearms: AtomicU64,
}

/// Keeps the watcher running; dropping it stops the watcher.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<SharedStats>,
}

impl WatchHandle {
    pub fn stats(&self) -> WatchStats {
        let s = &self.stats;
        WatchStats {
            native: s.native.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            event_applies: s.event_applies.load(Ordering::Relaxed),
            poll_applies: s.poll_applies.load(Ordering::Relaxed),
            rearms: s.rearms.load(Ordering::Relaxed),
        }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `reloader.ctx.path`. Must be called inside a Tokio runtime. Never fails:
/// without a native watcher it polls (and says so in the log).
///
/// The watches are armed before this returns, so any change made after it is seen. The
/// config is also read once here, on the calling thread, so that a change made between the
/// first load and now (which no event will report) is applied too.
pub fn spawn_watcher(reloader: Arc<Reloader>, opts: WatchOptions) -> WatchHandle {
    let stats = Arc::new(SharedStats::default());
    let mut native = if opts.native {
        match Native::new() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "no file events; falling back to polling the config");
                None
            }
        }
    } else {
        None
    };
    if let Some(n) = native.as_mut() {
        n.ensure(&reloader.ctx.path, &stats);
    }
    stats.native.store(native.is_some(), Ordering::Relaxed);
    let at = Instant::now();
    let res = config::read_sources(&reloader.ctx.path);
    let changed = reloader.last_attempted_hash().as_deref() != Some(res.content_hash.as_str());
    let pending = changed.then_some(Pending {
        trigger: Trigger::Poll,
        first: at,
        last_event: at,
        // Still has to hold for a settle window.
        sample: Some(Sample { at, res }),
    });
    tracing::info!(
        config = %reloader.ctx.path.display(),
        events = native.is_some(),
        debounce = ?opts.debounce,
        poll_interval = ?opts.poll_interval,
        "watching the config for changes"
    );
    let task = tokio::spawn(
        WatchTask {
            reloader,
            opts,
            native,
            stats: stats.clone(),
            writers: HashMap::new(),
            pending,
        }
        .run(),
    );
    WatchHandle { task, stats }
}

/// The OS watcher and the channel its thread feeds.
struct Native {
    watcher: RecommendedWatcher,
    rx: mpsc::Receiver<notify::Result<Event>>,
    overflow: Arc<AtomicBool>,
    armed: Vec<Armed>,
    /// The last watch error logged, so a missing directory is not reported every poll.
    last_error: Option<String>,
    /// The first arming is done: later ones are re-arms.
    started: bool,
}

struct Armed {
    path: PathBuf,
    id: FileId,
}

type FileId = (u64, u64);

impl Native {
    fn new() -> Result<Native, WatchError> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        // Runs on notify's own thread: never block it, never lose the fact that something
        // happened (a full queue becomes the overflow flag).
        let handler = move |res: notify::Result<Event>| {
            if tx.try_send(res).is_err() {
                flag.store(true, Ordering::Release);
            }
        };
        let watcher = notify::recommended_watcher(handler).map_err(WatchError::Create)?;
        Ok(Native {
            watcher,
            rx,
            overflow,
            armed: Vec::new(),
            last_error: None,
            started: false,
        })
    }

    /// Makes the armed watches match what `config` needs now: a directory replaced (new
    /// inode), a symlink target moved, or a path that appeared since the last try.
    fn ensure(&mut self, config: &Path, stats: &SharedStats) {
        let want = desired_watches(config);
        let mut keep = Vec::new();
        for a in std::mem::take(&mut self.armed) {
            let still_wanted = want.contains(&a.path);
            if still_wanted && file_id(&a.path) == Some(a.id) {
                keep.push(a);
            } else {
                // Fails when the OS already dropped the watch with its directory: fine.
                let _ = self.watcher.unwatch(&a.path);
            }
        }
        self.armed = keep;
        for path in want {
            if self.armed.iter().any(|a| a.path == path) {
                continue;
            }
            let Some(id) = file_id(&path) else {
                continue;
            };
            // One level each: see `desired_watches` for why not recursive.
            match self.watcher.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.last_error = None;
                    if self.started {
                        stats.rearms.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(path = %path.display(), "watching");
                    self.armed.push(Armed { path, id });
                }
                Err(source) => {
                    let e = WatchError::Watch { path, source }.to_string();
                    if self.last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "config watch not armed; the poll still runs");
                        self.last_error = Some(e);
                    }
                }
            }
        }
        self.started = true;
    }
}

/// The directories to watch for `config`, each non-recursively:
/// - a directory: it and every subdirectory the loader reads (dot-entries skipped, symlinked
///   subdirectories followed only at the top, as `config::load` does). A ConfigMap's
///   `..<timestamp>` folders are therefore not watched: kubelet creates and deletes one per
///   update, and its swap shows as events in the top directory anyway;
/// - a file: its parent directory;
/// - plus, for a config path or YAML file that is a symlink, the directory it resolves to when
///   that lies outside what is already watched (a link into another tree is edited there),
///   and the parent of a config directory that is itself a symlink (its swap shows there).
fn desired_watches(config: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut links = Vec::new();
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let parent = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::metadata(config).is_ok_and(|m| m.is_dir()) {
        walk_dirs(config, 0, &mut dirs, &mut links);
        if is_link(config) {
            dirs.push(parent);
        }
    } else {
        dirs.push(parent);
        links.push(config.to_path_buf());
    }
    let real: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    for link in links.iter().filter(|l| is_link(l)) {
        if let Ok(target) = std::fs::canonicalize(link)
            && let Some(target_dir) = target.parent()
            && !real.iter().any(|r| target_dir.starts_with(r))
        {
            dirs.push(target_dir.to_path_buf());
        }
    }
    dirs.sort_unstable();
    dirs.dedup();
    dirs
}

/// Bounds on the directory walk, so a pathological tree cannot stall the watcher.
const MAX_WATCH_DEPTH: usize = 16;
const MAX_WATCHED_DIRS: usize = 1024;

/// Collects `dir` and the subdirectories `config::load` would read, and the YAML files
/// reached through a symlink (their targets may need a watch of their own).
fn walk_dirs(dir: &Path, depth: usize, dirs: &mut Vec<PathBuf>, links: &mut Vec<PathBuf>) {
    if depth > MAX_WATCH_DEPTH || dirs.len() >= MAX_WATCHED_DIRS {
        return;
    }
    dirs.push(dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() && (!link || depth == 0) => {
                walk_dirs(&path, depth + 1, dirs, links)
            }
            Ok(m) if m.is_file() && link && is_yaml(&path) => links.push(path),
            _ => {}
        }
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// A change noticed and not yet applied.
struct Pending {
    trigger: Trigger,
    first: Instant,
    last_event: Instant,
    sample: Option<Sample>,
}

struct Sample {
    at: Instant,
    res: Sources,
}

struct WatchTask {
    reloader: Arc<Reloader>,
    opts: WatchOptions,
    native: Option<Native>,
    stats: Arc<SharedStats>,
    /// YAML files with a `MODIFY` not yet followed by `CLOSE_WRITE`, and when it was seen.
    writers: HashMap<PathBuf, Instant>,
    pending: Option<Pending>,
}

impl WatchTask {
    async fn run(mut self) {
        let debounce = self.opts.debounce.max(Duration::from_millis(1));
        self.opts.debounce = debounce;
        let mut poll = self.opts.poll_interval.map(|d| {
            let d = d.max(Duration::from_millis(10));
            let mut i = tokio::time::interval_at(Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let wake = self.pending.as_ref().map(|p| self.wake_at(p));
            tokio::select! {
                ev = next_event(&mut self.native) => match ev {
                    Some(ev) => self.on_events(ev),
                    None => {
                        tracing::warn!("the file watcher stopped; relying on the config poll");
                        self.native = None;
                        self.stats.native.store(false, Ordering::Relaxed);
                    }
                },
                _ = next_tick(&mut poll) => {
                    self.ensure_watches();
                    if self.pending.is_none() {
                        self.poll_check().await;
                    }
                }
                _ = sleep_until(wake) => self.step().await,
            }
        }
    }

    fn ensure_watches(&mut self) {
        if let Some(n) = self.native.as_mut() {
            n.ensure(&self.reloader.ctx.path, &self.stats);
        }
    }

    fn wake_at(&self, p: &Pending) -> Instant {
        match &p.sample {
            // Wait for the burst to end, but not forever if it never does.
            None => (p.last_event + COALESCE).min(p.first + self.opts.max_defer),
            Some(s) => s.at + self.opts.debounce,
        }
    }

    /// Handles the event just received and every event already queued behind it.
    fn on_events(&mut self, first: notify::Result<Event>) {
        let mut changed = false;
        let mut rearm = false;
        let mut batch = vec![first];
        if let Some(n) = self.native.as_mut() {
            while batch.len() < EVENT_QUEUE {
                match n.rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            if n.overflow.swap(false, Ordering::AcqRel) {
                tracing::debug!("file event queue overflowed; rechecking the config");
                changed = true;
            }
        }
        let now = Instant::now();
        for ev in batch {
            match ev {
                Ok(ev) => {
                    let (c, r) = self.classify(&ev, now);
                    changed |= c;
                    rearm |= r;
                }
                Err(e) => {
                    // An error usually means a lost watch or a dropped queue: recheck
                    // everything rather than trust what we have.
                    tracing::debug!(error = %e, "file watcher error");
                    changed = true;
                    rearm = true;
                }
            }
        }
        if rearm {
            self.ensure_watches();
        }
        if changed {
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            self.note_change(now, Trigger::Watch);
        }
    }

    /// Whether `ev` may mean a content change, and whether a watch may have been lost.
    fn classify(&mut self, ev: &Event, now: Instant) -> (bool, bool) {
        match &ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &ev.paths {
                    self.writers.remove(p);
                }
                (true, false)
            }
            // Opens and reads, including our own: not changes.
            EventKind::Access(_) => (false, false),
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                for p in ev.paths.iter().filter(|p| is_yaml(p)) {
                    if self.writers.len() >= MAX_TRACKED_WRITERS {
                        self.forget_oldest_writers();
                    }
                    self.writers.insert(p.clone(), now);
                }
                (true, false)
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                for p in &ev.paths {
                    self.writers.remove(p);
                }
                // The tree changed shape: a watched directory may be gone or replaced.
                (true, true)
            }
            // A new subdirectory needs its own watch before files land in it.
            EventKind::Create(_) => (true, true),
            // Creates, metadata, rescans, anything new: maybe.
            _ => (true, ev.need_rescan()),
        }
    }

    fn forget_oldest_writers(&mut self) {
        let mut times: Vec<Instant> = self.writers.values().copied().collect();
        times.sort_unstable();
        if let Some(cut) = times.get(times.len() / 2).copied() {
            self.writers.retain(|_, t| *t > cut);
        }
    }

    fn note_change(&mut self, now: Instant, trigger: Trigger) {
        match self.pending.as_mut() {
            None => {
                self.pending = Some(Pending {
                    trigger,
                    first: now,
                    last_event: now,
                    sample: None,
                })
            }
            Some(p) => {
                p.last_event = now;
                // A poll that raced an event to the same change: the events did see it.
                p.trigger = trigger;
                if now.duration_since(p.first) < self.opts.max_defer {
                    // The sample may predate this change: restart the settle window.
                    p.sample = None;
                }
            }
        }
    }

    /// A writer that modified a YAML file and has not closed it within the grace period.
    fn writer_open(&mut self, now: Instant) -> bool {
        let grace = self.opts.writer_grace;
        self.writers
            .retain(|_, seen| now.duration_since(*seen) < grace);
        !self.writers.is_empty()
    }

    /// Takes the next sample of a pending change and applies it once it has settled.
    async fn step(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        let at = Instant::now();
        let res = match read_sources(&self.reloader.ctx).await {
            Ok(res) => res,
            Err(e) => {
                // Only a panicked read task gets here; the next event or poll retries.
                tracing::warn!("{e}");
                return;
            }
        };
        let settled = match &p.sample {
            Some(s) => s.res.content_hash == res.content_hash && !self.writer_open(at),
            None => false,
        };
        if !settled {
            p.sample = Some(Sample { at, res });
            self.pending = Some(p);
            return;
        }
        if self.reloader.last_attempted_hash().as_deref() != Some(res.content_hash.as_str()) {
            let counter = match p.trigger {
                Trigger::Poll => &self.stats.poll_applies,
                _ => &self.stats.event_applies,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            match parse_sources(&self.reloader.ctx, res).await {
                // Outcomes are logged by the reloader; a refusal leaves the old table serving.
                Ok(res) => {
                    let _ = self.reloader.apply(res, p.trigger).await;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        // A `..data` swap moves where a file symlink resolves: follow it.
        self.ensure_watches();
    }

    /// Hashes the files and starts a pending change if they differ from the last attempt.
    async fn poll_check(&mut self) {
        let at = Instant::now();
        let Ok(res) = read_sources(&self.reloader.ctx).await else {
            return;
        };
        if self.reloader.last_attempted_hash().as_deref() == Some(res.content_hash.as_str()) {
            return;
        }
        tracing::debug!("config poll found a change");
        // The read is the first sample: the change still has to hold for a settle window.
        self.pending = Some(Pending {
            trigger: Trigger::Poll,
            first: at,
            last_event: at,
            sample: Some(Sample { at, res }),
        });
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

async fn next_event(native: &mut Option<Native>) -> Option<notify::Result<Event>> {
    match native {
        Some(n) => n.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_tick(poll: &mut Option<tokio::time::Interval>) {
    match poll {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
