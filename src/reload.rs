//! Turning a config path into a published table. A config is accepted or refused as a whole:
//! everything is read, validated and compiled off the request path, and only a table with no
//! error is swapped in, in one `store`. Requests already routed keep the table they started
//! with; a refused config leaves the last good table serving untouched.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::validate::{Mode, ValidateOptions, validate};
use crate::config::{Diagnostic, LoadOptions, ProxyIdentity, Severity, codes, load};
use crate::route::compile::{CompileOptions, OutboundPolicy, compile};
use crate::route::{AbortOnDrop, RouteTable};
use crate::upstream::{Discovery, PoolRegistry, dns};

/// A DNS cluster's first resolution may take this long before the table is published anyway
/// (its endpoints then fill in on the next refresh).
const INITIAL_DNS_BUDGET: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ReloadContext {
    pub path: PathBuf,
    pub identity: ProxyIdentity,
    pub outbound_policy: OutboundPolicy,
    pub istio_mutual_as_plaintext: bool,
    pub pools: Arc<PoolRegistry>,
}

/// The outcome of the latest load attempt, for `/config_dump` and logs.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub at: SystemTime,
    pub accepted: bool,
    pub version: u64,
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
    let c = ctx.clone();
    let built = tokio::task::spawn_blocking(move || build_sync(&c, version))
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
    version: u64,
) -> Result<(RouteTable, Vec<Diagnostic>), Vec<Diagnostic>> {
    let res = load(
        &ctx.path,
        &LoadOptions {
            default_namespace: ctx.identity.namespace.clone(),
        },
    );
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &ctx.identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: ctx.istio_mutual_as_plaintext,
        },
    ));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let table = compile(
        &res,
        &CompileOptions {
            identity: &ctx.identity,
            outbound_policy: ctx.outbound_policy,
            pools: &ctx.pools,
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

/// Owns the swap point and the reload history. One reload runs at a time.
pub struct Reloader {
    pub ctx: ReloadContext,
    pub table: Arc<ArcSwap<RouteTable>>,
    version: AtomicU64,
    last: Mutex<Option<ReloadReport>>,
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Builds the first table; `Err` when the config cannot be served at all.
    pub async fn start(ctx: ReloadContext) -> Result<(Reloader, Vec<Diagnostic>), Vec<Diagnostic>> {
        let (table, warnings) = build_table(&ctx, 1).await?;
        let reloader = Reloader {
            ctx,
            table: Arc::new(ArcSwap::from_pointee(table)),
            version: AtomicU64::new(1),
            last: Mutex::new(Some(ReloadReport {
                at: SystemTime::now(),
                accepted: true,
                version: 1,
                diagnostics: warnings.clone(),
            })),
            serial: tokio::sync::Mutex::new(()),
        };
        Ok((reloader, warnings))
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn last_report(&self) -> Option<ReloadReport> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the config and publishes it if it changed and has no error.
    pub async fn reload(&self) -> Result<ReloadOutcome, Vec<Diagnostic>> {
        let _one_at_a_time = self.serial.lock().await;
        let current_hash = self.table.load().source_hash.clone();
        let next_version = self.version() + 1;
        let result = build_table(&self.ctx, next_version).await;
        let report = |accepted: bool, version: u64, diagnostics: Vec<Diagnostic>| {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReloadReport {
                at: SystemTime::now(),
                accepted,
                version,
                diagnostics,
            });
        };
        match result {
            Err(diags) => {
                report(false, self.version(), diags.clone());
                Err(diags)
            }
            Ok((table, _)) if table.source_hash == current_hash => Ok(ReloadOutcome::Unchanged),
            Ok((table, warnings)) => {
                let old = self.table.swap(Arc::new(table));
                self.version.store(next_version, Ordering::Release);
                report(true, next_version, warnings.clone());
                // The old table is freed here, off the request path, once in-flight requests
                // holding it finish.
                drop(old);
                self.ctx.pools.prune();
                Ok(ReloadOutcome::Applied {
                    version: next_version,
                    warnings,
                })
            }
        }
    }
}
