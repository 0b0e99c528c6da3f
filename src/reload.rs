//! Turning a config path into a published table. A config is accepted or refused as a whole:
//! everything is read, validated and compiled off the request path, and only a table with no
//! error is swapped in, in one `store`. Requests already routed keep the table they started
//! with; a refused config leaves the last good table serving untouched.
//!
//! Reloads are started by the file watcher (`crate::watch`), by SIGHUP and by `POST /reload`.
//! Whatever starts one, the outcome is logged here, once, in `validate`'s format, so the three
//! triggers cannot drift apart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::validate::{Mode, ValidateOptions, validate};
use crate::config::{
    self, Diagnostic, LoadOptions, ProxyIdentity, Resources, Severity, Sources, codes, load,
};
use crate::route::compile::{CompileOptions, OutboundPolicy, compile};
use crate::route::{AbortOnDrop, RouteTable};
use crate::upstream::{Discovery, PoolRegistry, dns};

/// A DNS cluster's first resolution may take this long before the table is published anyway
/// (its endpoints then fill in on the next refresh).
const INITIAL_DNS_BUDGET: Duration = Duration::from_secs(5);
/// Follow-up prunes after a swap (see [`Reloader::prune_later`]): bounded, then the next
/// reload takes over.
const PRUNE_AFTER: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

#[derive(Clone)]
pub struct ReloadContext {
    pub path: PathBuf,
    pub identity: ProxyIdentity,
    pub outbound_policy: OutboundPolicy,
    pub istio_mutual_as_plaintext: bool,
    pub pools: Arc<PoolRegistry>,
    /// Metric series, shared by every table so counts survive reloads.
    pub metrics: Arc<crate::metrics::Registry>,
    /// Where resources come from when not from `path`: the Kubernetes source's stores. A
    /// forced reload (SIGHUP, `POST /reload`) rereads them instead of the folder.
    pub snapshot: Option<Snapshot>,
}

/// Reads the current resources of a source that is not a folder.
pub type Snapshot = Arc<dyn Fn() -> Resources + Send + Sync>;

impl ReloadContext {
    /// A context with the defaults `run` uses (REGISTRY_ONLY, no ISTIO_MUTUAL downgrade) and
    /// a fresh metrics registry (tests and embedders; `run` sets its own).
    pub fn new(path: PathBuf, identity: ProxyIdentity, pools: Arc<PoolRegistry>) -> ReloadContext {
        ReloadContext {
            path,
            identity,
            outbound_policy: OutboundPolicy::RegistryOnly,
            istio_mutual_as_plaintext: false,
            pools,
            metrics: Arc::default(),
            snapshot: None,
        }
    }
}

/// What asked for a reload; logged and shown in `/config_dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first load, before serving.
    Startup,
    /// A file-system event on the config path, after the settle window.
    Watch,
    /// The periodic content-hash poll (events were missed).
    Poll,
    /// A change seen by the Kubernetes API watches, after the debounce.
    Kubernetes,
    /// SIGHUP.
    Signal,
    /// An explicit request: `POST /reload`, or a caller of [`Reloader::reload`].
    Forced,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Watch => "watch",
            Trigger::Poll => "poll",
            Trigger::Kubernetes => "kubernetes",
            Trigger::Signal => "sighup",
            Trigger::Forced => "forced",
        }
    }
}

/// The outcome of the latest load attempt, for `/config_dump` and logs.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub at: SystemTime,
    pub accepted: bool,
    /// False when the files hashed the same as the serving table (nothing was swapped).
    pub changed: bool,
    /// The serving version after this attempt.
    pub version: u64,
    pub trigger: Trigger,
    /// Content hash of the files this attempt read (accepted or not). The watcher compares
    /// against it so that one broken edit is refused, and logged, once rather than on every
    /// event or poll until it is fixed.
    pub source_hash: String,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new table was swapped in.
    Applied {
        version: u64,
        warnings: Vec<Diagnostic>,
    },
    /// The files hash the same as the serving table's: nothing to do.
    Unchanged,
}

/// Reads, validates and compiles `ctx.path` into a table with `version`. `Err` carries every
/// diagnostic when any of them is an error.
pub async fn build_table(
    ctx: &ReloadContext,
    version: u64,
) -> Result<(RouteTable, Vec<Diagnostic>), Vec<Diagnostic>> {
    let res = read_config(ctx).await.map_err(|e| vec![e])?;
    build_table_from(ctx, res, version).await
}

/// Reads the config path into resources on the blocking pool (file I/O must not stall the
/// request workers).
pub async fn read_config(ctx: &ReloadContext) -> Result<Resources, Diagnostic> {
    if let Some(snapshot) = ctx.snapshot.clone() {
        return tokio::task::spawn_blocking(move || snapshot())
            .await
            .map_err(|e| internal(&ctx.path, format!("config read task failed: {e}")));
    }
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || read_config_blocking(&c))
        .await
        .map_err(|e| internal(&ctx.path, format!("config read task failed: {e}")))
}

/// [`read_config`] on the calling thread.
pub fn read_config_blocking(ctx: &ReloadContext) -> Resources {
    load(&ctx.path, &load_options(ctx))
}

fn load_options(ctx: &ReloadContext) -> LoadOptions {
    LoadOptions {
        default_namespace: ctx.identity.namespace.clone(),
    }
}

/// Reads the config path's files without parsing them, on the blocking pool: the watcher
/// samples the files this way, and parses them only for a change it applies. (Parsing an
/// unchanged config on every poll was the poll's main cost, growing with the config.)
pub async fn read_sources(ctx: &ReloadContext) -> Result<Sources, Diagnostic> {
    let path = ctx.path.clone();
    tokio::task::spawn_blocking(move || config::read_sources(&path))
        .await
        .map_err(|e| internal(&ctx.path, format!("config read task failed: {e}")))
}

/// Parses what [`read_sources`] read, on the blocking pool.
pub async fn parse_sources(ctx: &ReloadContext, src: Sources) -> Result<Resources, Diagnostic> {
    let opts = load_options(ctx);
    tokio::task::spawn_blocking(move || config::parse_sources(src, &opts))
        .await
        .map_err(|e| internal(&ctx.path, format!("config parse task failed: {e}")))
}

/// Validates and compiles resources already read (the watcher reads them itself, to check
/// that the bytes are stable, and then builds exactly the bytes it checked).
pub async fn build_table_from(
    ctx: &ReloadContext,
    res: Resources,
    version: u64,
) -> Result<(RouteTable, Vec<Diagnostic>), Vec<Diagnostic>> {
    let c = ctx.clone();
    let built = tokio::task::spawn_blocking(move || build_sync(&c, &res, version))
        .await
        .map_err(|e| {
            vec![internal(
                &ctx.path,
                format!("config build task failed: {e}"),
            )]
        })??;
    let (mut table, diags) = built;
    let dns_clusters: Vec<_> = table
        .clusters
        .iter()
        .filter(|c| matches!(c.discovery, Discovery::Dns(_)))
        .cloned()
        .collect();
    if !dns_clusters.is_empty() {
        let pools = ctx.pools.clone();
        let first = async {
            let mut earliest: Option<std::time::Instant> = None;
            for c in &dns_clusters {
                let r = dns::refresh(c, &pools).await;
                if let Some(v) = r.valid_until {
                    earliest = Some(earliest.map_or(v, |e| e.min(v)));
                }
                if !r.failed.is_empty() {
                    tracing::warn!(cluster = %c.name, names = ?r.failed, "DNS lookup failed; the cluster has no endpoints until it resolves");
                }
            }
            earliest
        };
        let earliest = tokio::time::timeout(INITIAL_DNS_BUDGET, first)
            .await
            .ok()
            .flatten();
        table.dns_task = Some(AbortOnDrop(dns::spawn_refresher(
            dns_clusters,
            ctx.pools.clone(),
            earliest,
        )));
    }
    Ok((table, diags))
}

fn build_sync(
    ctx: &ReloadContext,
    res: &Resources,
    version: u64,
) -> Result<(RouteTable, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        res,
        &ValidateOptions {
            identity: &ctx.identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: ctx.istio_mutual_as_plaintext,
        },
    ));
    diags.extend(crate::ratelimit::read(res, &ctx.identity).1);
    diags.extend(crate::route::sticky::check(res));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let table = compile(
        res,
        &CompileOptions {
            identity: &ctx.identity,
            outbound_policy: ctx.outbound_policy,
            pools: &ctx.pools,
            metrics: &ctx.metrics,
            version,
        },
    )
    .map_err(|e| {
        let mut d = diags.clone();
        d.push(internal(&ctx.path, e.to_string()));
        d
    })?;
    Ok((table, diags))
}

fn is_empty(res: &Resources) -> bool {
    res.virtual_services.is_empty()
        && res.destination_rules.is_empty()
        && res.service_entries.is_empty()
        && res.workload_entries.is_empty()
}

fn internal(path: &std::path::Path, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: codes::PARSE_ERROR,
        file: path.to_path_buf(),
        line: 0,
        resource: String::new(),
        field_path: String::new(),
        message,
    }
}

/// Logs each diagnostic on its own line, exactly as `switchyard validate` prints it.
pub fn log_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        match d.severity {
            Severity::Error => tracing::error!("{d}"),
            Severity::Warning => tracing::warn!("{d}"),
            Severity::Info => tracing::info!("{d}"),
        }
    }
}

/// Running totals of reload attempts since start (the first load not counted), kept here so a
/// metrics exporter can read them without owning the reload path.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    unchanged: AtomicU64,
}

/// Owns the swap point and the reload history. One reload runs at a time.
pub struct Reloader {
    pub ctx: ReloadContext,
    pub table: Arc<ArcSwap<RouteTable>>,
    version: AtomicU64,
    last: Mutex<Option<ReloadReport>>,
    counters: Counters,
    serial: tokio::sync::Mutex<()>,
    /// Bumped per swap; see [`Reloader::prune_later`].
    prune_generation: Arc<AtomicU64>,
    /// Where each resource of the serving table came from, for `/config_dump`.
    serving: Mutex<Vec<Served>>,
}

/// One resource of the serving table and where it was read: `file:line`, or for the
/// Kubernetes source `Kind/namespace/name@resourceVersion`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Served {
    pub resource: String,
    /// As read: for the Kubernetes source, the version its kind is watched at (an older
    /// Istio serves `networking.istio.io/v1beta1`, not `v1`).
    pub api_version: String,
    pub from: String,
}

fn served(res: &Resources) -> Vec<Served> {
    fn each<S>(list: &[config::Resource<S>], out: &mut Vec<Served>) {
        out.extend(list.iter().map(|r| Served {
            resource: r.id(),
            api_version: r.api_version.clone(),
            from: if r.source.line == 0 {
                r.source.file.display().to_string()
            } else {
                format!("{}:{}", r.source.file.display(), r.source.line)
            },
        }));
    }
    let mut out = Vec::new();
    each(&res.virtual_services, &mut out);
    each(&res.destination_rules, &mut out);
    each(&res.service_entries, &mut out);
    each(&res.workload_entries, &mut out);
    out
}

impl Reloader {
    /// Builds the first table; `Err` when the config cannot be served at all.
    pub async fn start(ctx: ReloadContext) -> Result<(Reloader, Vec<Diagnostic>), Vec<Diagnostic>> {
        let res = read_config(&ctx).await.map_err(|e| vec![e])?;
        Self::start_from(ctx, res).await
    }

    /// Builds the first table from resources already read.
    pub async fn start_from(
        ctx: ReloadContext,
        res: Resources,
    ) -> Result<(Reloader, Vec<Diagnostic>), Vec<Diagnostic>> {
        let serving = Mutex::new(served(&res));
        let (table, warnings) = build_table_from(&ctx, res, 1).await?;
        let reloader = Reloader {
            serving,
            ctx,
            last: Mutex::new(Some(ReloadReport {
                at: SystemTime::now(),
                accepted: true,
                changed: true,
                version: 1,
                trigger: Trigger::Startup,
                source_hash: table.source_hash.clone(),
                diagnostics: warnings.clone(),
            })),
            table: Arc::new(ArcSwap::from_pointee(table)),
            version: AtomicU64::new(1),
            counters: Counters::default(),
            serial: tokio::sync::Mutex::new(()),
            prune_generation: Arc::new(AtomicU64::new(0)),
        };
        reloader.ctx.metrics.proxy.config_version.set(1);
        Ok((reloader, warnings))
    }

    /// Where each resource of the serving table came from.
    pub fn serving(&self) -> Vec<Served> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn last_report(&self) -> Option<ReloadReport> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Content hash of the files the latest attempt read, accepted or refused.
    pub fn last_attempted_hash(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.source_hash.clone())
    }

    /// Reloads that swapped in a new table.
    pub fn reloads_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Reloads refused because the config had an error (the last good table kept serving).
    pub fn reloads_refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Reloads that found the files identical to the serving table.
    pub fn reloads_unchanged(&self) -> u64 {
        self.counters.unchanged.load(Ordering::Relaxed)
    }

    /// Re-reads the config and publishes it if it changed and has no error (`POST /reload`).
    pub async fn reload(&self) -> Result<ReloadOutcome, Vec<Diagnostic>> {
        self.reload_with(Trigger::Forced).await
    }

    /// Like [`Reloader::reload`], naming what asked for it in the logs and the report. A forced
    /// reload does not wait for the watcher's settle window: the operator says the files are
    /// written.
    pub async fn reload_with(&self, trigger: Trigger) -> Result<ReloadOutcome, Vec<Diagnostic>> {
        let _one_at_a_time = self.serial.lock().await;
        match read_config(&self.ctx).await {
            Ok(res) => self.apply_locked(res, trigger).await,
            Err(d) => {
                let diags = vec![d];
                self.refuse(String::new(), trigger, diags.clone());
                Err(diags)
            }
        }
    }

    /// Builds and publishes resources the caller already read (the watcher, which checked
    /// that these exact bytes were stable).
    pub async fn apply(
        &self,
        res: Resources,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, Vec<Diagnostic>> {
        let _one_at_a_time = self.serial.lock().await;
        self.apply_locked(res, trigger).await
    }

    async fn apply_locked(
        &self,
        res: Resources,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, Vec<Diagnostic>> {
        let current_hash = self.table.load().source_hash.clone();
        let source_hash = res.content_hash.clone();
        let next_version = self.version() + 1;
        let serving = self.table.load();
        let serving_something = !serving.clusters.is_empty() || !serving.virtual_hosts().is_empty();
        drop(serving);
        if is_empty(&res) && serving_something {
            // An editor's truncating write (or a half-synced volume) looks exactly like this;
            // dropping every route on it would fail all traffic (reliability.md R2).
            let diags = vec![internal(
                &self.ctx.path,
                "the config holds no VirtualService, DestinationRule, ServiceEntry or \
                 WorkloadEntry; refusing to replace the serving routes with nothing (to stop \
                 serving, stop the proxy)"
                    .to_string(),
            )];
            self.refuse(source_hash, trigger, diags.clone());
            return Err(diags);
        }
        let sources = served(&res);
        match build_table_from(&self.ctx, res, next_version).await {
            Err(diags) => {
                self.refuse(source_hash, trigger, diags.clone());
                Err(diags)
            }
            Ok((table, warnings)) if table.source_hash == current_hash => {
                // Not swapped, but recorded: after a refused edit is reverted, the dump must
                // stop showing the refusal as the latest word.
                self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
                self.record(ReloadReport {
                    at: SystemTime::now(),
                    accepted: true,
                    changed: false,
                    version: self.version(),
                    trigger,
                    source_hash,
                    diagnostics: warnings,
                });
                tracing::info!(
                    trigger = trigger.as_str(),
                    version = self.version(),
                    "config unchanged"
                );
                Ok(ReloadOutcome::Unchanged)
            }
            Ok((table, warnings)) => {
                let summary = (
                    table.virtual_hosts().len(),
                    table.clusters.len(),
                    table
                        .clusters
                        .iter()
                        .map(|c| c.endpoints().len())
                        .sum::<usize>(),
                );
                let old = self.table.swap(Arc::new(table));
                *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = sources;
                self.version.store(next_version, Ordering::Release);
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                self.ctx.metrics.proxy.config_reloads_success.inc();
                self.ctx
                    .metrics
                    .proxy
                    .config_version
                    .set(next_version as i64);
                self.record(ReloadReport {
                    at: SystemTime::now(),
                    accepted: true,
                    changed: true,
                    version: next_version,
                    trigger,
                    source_hash,
                    diagnostics: warnings.clone(),
                });
                // The old table is freed here, off the request path, once in-flight requests
                // holding it finish.
                drop(old);
                self.ctx.pools.prune();
                self.prune_later();
                log_diagnostics(&warnings);
                tracing::info!(
                    trigger = trigger.as_str(),
                    version = next_version,
                    hosts = summary.0,
                    clusters = summary.1,
                    endpoints = summary.2,
                    "config reloaded"
                );
                Ok(ReloadOutcome::Applied {
                    version: next_version,
                    warnings,
                })
            }
        }
    }

    fn refuse(&self, source_hash: String, trigger: Trigger, diags: Vec<Diagnostic>) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.ctx.metrics.proxy.config_reloads_failure.inc();
        log_diagnostics(&diags);
        tracing::error!(
            trigger = trigger.as_str(),
            errors = diags.iter().filter(|d| d.is_error()).count(),
            version = self.version(),
            "config refused; the last good config keeps serving"
        );
        self.record(ReloadReport {
            at: SystemTime::now(),
            accepted: false,
            changed: false,
            version: self.version(),
            trigger,
            source_hash,
            diagnostics: diags,
        });
    }

    /// Requests still in flight on a removed cluster keep its pool alive through the first
    /// prune; once they finish only the registry holds it. Prune again a few times later so a
    /// removed cluster's pool (and its idle connections) goes without waiting for the next
    /// reload. A newer reload's follow-up replaces this one.
    fn prune_later(&self) {
        let generation = self.prune_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let latest = self.prune_generation.clone();
        let pools = self.ctx.pools.clone();
        tokio::spawn(async move {
            for wait in PRUNE_AFTER {
                tokio::time::sleep(wait).await;
                if latest.load(Ordering::Acquire) != generation {
                    return;
                }
                pools.prune();
            }
        });
    }

    fn record(&self, report: ReloadReport) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }
}
