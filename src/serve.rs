//! Assembles a running switchyard: the config's first load, the route table, the proxy and its
//! listeners (proxy workers, admin, metrics), the config watcher and the rollout controller.
//! `main` only turns arguments into [`ServeOptions`] and handles the process's signals; the
//! tests serve through the same [`Server::start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::access_log::{AccessLog, Format, Sink};
use crate::admin::{Admin, LogControl};
use crate::config::{Diagnostic, ProxyIdentity};
use crate::downstream::server::Limits;
use crate::downstream::workers::{self, ListenLock, Workers};
use crate::metrics::{Registry, Reporter, SourceLabels};
use crate::proxy::Proxy;
use crate::reload::{ReloadContext, Reloader, Snapshot};
use crate::route::OutboundPolicy;
use crate::source::kubernetes::{KubeError, KubeOptions, KubeSource, Screen};
use crate::upstream::PoolRegistry;
use crate::watch::{WatchHandle, WatchOptions};

/// Everything a server is started with; `ServeOptions::new` holds `run`'s defaults, except
/// that every listener binds port 0 on loopback until told otherwise.
pub struct ServeOptions {
    /// A config file or folder.
    pub config: PathBuf,
    pub identity: ProxyIdentity,
    pub outbound_policy: OutboundPolicy,
    pub istio_mutual_as_plaintext: bool,
    pub reporter: Reporter,
    pub listen: SocketAddr,
    /// Threads accepting on `listen`; `None`: one per core this process may use.
    pub workers: Option<usize>,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub access_log: Option<(Sink, Format)>,
    pub limits: Limits,
    /// `None`: the config is read once (and on SIGHUP or `POST /reload`).
    pub watch: Option<WatchOptions>,
    /// Runs the rollout controller on the config folder.
    pub rollouts: bool,
    /// Lets `POST /logging` change the log filter.
    pub log_control: Option<LogControl>,
    /// Read the config from the Kubernetes API instead of `config` (which then only names
    /// the source in logs); `watch` does not apply.
    pub kubernetes: Option<KubeOptions>,
}

impl ServeOptions {
    pub fn new(config: impl Into<PathBuf>) -> ServeOptions {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        ServeOptions {
            config: config.into(),
            identity: ProxyIdentity::default(),
            outbound_policy: OutboundPolicy::RegistryOnly,
            istio_mutual_as_plaintext: false,
            reporter: Reporter::Source,
            listen: loopback,
            workers: Some(1),
            admin: Some(loopback),
            metrics: None,
            access_log: None,
            limits: Limits::default(),
            watch: None,
            rollouts: false,
            log_control: None,
            kubernetes: None,
        }
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}: refused: {errors} error(s) in the config", path.display())]
    Refused {
        path: PathBuf,
        errors: usize,
        /// Every finding, errors and warnings, for the caller to show.
        diagnostics: Vec<Diagnostic>,
    },
    #[error("cannot listen on {addr} ({flag})")]
    Listen {
        addr: SocketAddr,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the proxy workers")]
    Workers(#[source] std::io::Error),
    #[error("--access-log {what}: cannot open")]
    AccessLog {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--rollouts needs --config to be a folder (it writes the VirtualService and a state file there); {} is a file",
        .0.display()
    )]
    RolloutsNeedFolder(PathBuf),
    #[error(transparent)]
    RolloutLock(#[from] crate::rollout::state::LockError),
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
}

/// A serving switchyard. Dropping it stops the watcher and the rollout controller; call
/// [`Server::drain`] to stop serving the way SIGTERM does.
pub struct Server {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub proxy: Arc<Proxy>,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Registry>,
    /// Notified by `POST /quitquitquit`.
    pub quit: Arc<Notify>,
    /// What the first load warned about, for the caller to show.
    pub warnings: Vec<Diagnostic>,
    workers: Workers,
    _listen_lock: ListenLock,
    _watch: Option<WatchHandle>,
    _rollouts: Option<(Option<crate::rollout::state::FolderLock>, AbortOnDrop)>,
    _kubernetes: Option<(KubeSource, AbortOnDrop)>,
}

impl Server {
    pub async fn start(opts: ServeOptions) -> Result<Server, StartError> {
        let started = Instant::now();
        let workers = opts.workers.unwrap_or_else(workers::default_workers);
        // Before any pool exists: each keeps one shard of connections per worker.
        crate::upstream::set_worker_count(workers);
        let pools = Arc::new(PoolRegistry::default());
        let metrics = Arc::new(Registry::new(
            SourceLabels::new(
                &opts.identity.workload,
                &opts.identity.namespace,
                &opts.identity.labels,
            ),
            opts.reporter,
        ));
        let namespace = opts.identity.namespace.clone();
        // With --rollouts the controller watches the API server itself (its own kinds).
        let rollout_kube = opts.kubernetes.clone().filter(|_| opts.rollouts);
        let kube = match opts.kubernetes {
            Some(k) => {
                let source = KubeSource::start(k).await?;
                source.synced().await?;
                Some(source)
            }
            None => None,
        };
        let screen = Screen {
            identity: opts.identity.clone(),
            istio_mutual_as_plaintext: opts.istio_mutual_as_plaintext,
        };
        let snapshot: Option<Snapshot> = kube.as_ref().map(|k| k.snapshot(screen.clone()));
        let ctx = ReloadContext {
            path: opts.config.clone(),
            identity: opts.identity,
            outbound_policy: opts.outbound_policy,
            istio_mutual_as_plaintext: opts.istio_mutual_as_plaintext,
            pools: pools.clone(),
            metrics: metrics.clone(),
            snapshot,
        };
        // Read here rather than by the reloader, so the first load is recorded as served.
        let first = ctx.snapshot.as_ref().map(|snapshot| snapshot());
        let first_load = match first.clone() {
            Some(res) => Reloader::start_from(ctx, res).await,
            None => Reloader::start(ctx).await,
        };
        if let (true, Some(k), Some(res)) = (first_load.is_ok(), &kube, &first) {
            k.served(res);
        }
        let (reloader, warnings) = first_load.map_err(|diagnostics| StartError::Refused {
            path: opts.config.clone(),
            errors: diagnostics.iter().filter(|d| d.is_error()).count(),
            diagnostics,
        })?;
        let reloader = Arc::new(reloader);
        log_loaded(&reloader, &opts.config);

        let listen_error = |addr, flag| move |source| StartError::Listen { addr, flag, source };
        let (listener, listen_lock) =
            workers::bind_first(opts.listen).map_err(listen_error(opts.listen, "--listen"))?;
        let proxy_addr = listener
            .local_addr()
            .map_err(listen_error(opts.listen, "--listen"))?;
        let admin_listener = bind(opts.admin, "--admin").await?;
        let metrics_listener = bind(opts.metrics, "--metrics").await?;

        let mut proxy = Proxy::new(reloader.table.clone(), pools, metrics.clone());
        if let Some((sink, format)) = opts.access_log {
            let what = sink.to_string();
            let log = AccessLog::start(sink, format, metrics.clone())
                .map_err(|source| StartError::AccessLog { what, source })?;
            proxy.access_log.store(Some(Arc::new(log)));
        }
        // ALLOW_ANY passthrough must never loop back into one of our own listeners.
        proxy.own_addrs.push(proxy_addr);
        for (l, _) in admin_listener.iter().chain(metrics_listener.iter()) {
            if let Ok(a) = l.local_addr() {
                proxy.own_addrs.push(a);
            }
        }
        let proxy = Arc::new(proxy);
        let quit = Arc::new(Notify::new());

        let admin_addr = match admin_listener {
            Some((l, addr)) => Some(
                Arc::new(Admin {
                    reloader: reloader.clone(),
                    state: proxy.state.clone(),
                    quit: quit.clone(),
                    started,
                    metrics: metrics.clone(),
                    set_log_level: opts.log_control,
                })
                .spawn(l)
                .map_err(listen_error(addr, "--admin"))?,
            ),
            None => None,
        };
        let metrics_addr = match metrics_listener {
            Some((l, addr)) => Some(
                crate::metrics::server::spawn(l, metrics.clone(), proxy.state.clone())
                    .map_err(listen_error(addr, "--metrics"))?,
            ),
            None => None,
        };
        let workers = Workers::start(listener, workers, proxy.clone(), opts.limits)
            .map_err(StartError::Workers)?;

        // Over the API server the controller patches the VirtualService and this proxy follows
        // its watch like every other; it only reads this proxy's counters.
        let rollouts = if let Some(k) = rollout_kube {
            let backend = crate::rollout::kubernetes::Kube::start(&k, namespace).await?;
            let controller =
                crate::rollout::Controller::with_backend(backend, Some(metrics.clone()), None);
            tracing::info!("rollout controller running in this proxy, against the Kubernetes API");
            Some((None, AbortOnDrop(tokio::spawn(controller.run()))))
        } else if opts.rollouts {
            // The rollout controller writes the folder this proxy reads; one writer per folder.
            if !opts.config.is_dir() {
                return Err(StartError::RolloutsNeedFolder(opts.config));
            }
            let lock = crate::rollout::state::lock(&opts.config)?;
            let controller = crate::rollout::Controller::new(
                opts.config.clone(),
                namespace,
                Some(metrics.clone()),
                Some(reloader.clone()),
            );
            tracing::info!("rollout controller running in this proxy");
            Some((Some(lock), AbortOnDrop(tokio::spawn(controller.run()))))
        } else {
            None
        };
        let (watch, kubernetes) = match kube {
            Some(source) => {
                let publisher = AbortOnDrop(source.publish(reloader.clone(), screen));
                (None, Some((source, publisher)))
            }
            None => (
                opts.watch
                    .map(|w| crate::watch::spawn_watcher(reloader.clone(), w)),
                None,
            ),
        };

        Ok(Server {
            proxy_addr,
            admin_addr,
            metrics_addr,
            proxy,
            reloader,
            metrics,
            quit,
            warnings,
            workers,
            _listen_lock: listen_lock,
            _watch: watch,
            _rollouts: rollouts,
            _kubernetes: kubernetes,
        })
    }

    /// Threads accepting proxy connections.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stops serving as SIGTERM does: readiness fails now, the listeners close after `delay`,
    /// and open connections get up to `timeout` to finish. True if every one finished.
    pub async fn drain(self, delay: Duration, timeout: Duration) -> bool {
        self.workers.drain(delay, timeout).await
    }
}

async fn bind(
    addr: Option<SocketAddr>,
    flag: &'static str,
) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let Some(addr) = addr else { return Ok(None) };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some((l, addr))),
        Err(source) => Err(StartError::Listen { addr, flag, source }),
    }
}

fn log_loaded(reloader: &Reloader, config: &std::path::Path) {
    let table = reloader.table.load();
    let endpoints: usize = table.clusters.iter().map(|c| c.endpoints().len()).sum();
    tracing::info!(
        config = %config.display(),
        hosts = table.virtual_hosts().len(),
        routes = table.virtual_hosts().iter().map(|v| v.routes.len()).sum::<usize>(),
        clusters = table.clusters.len(),
        endpoints,
        "config loaded"
    );
}

/// Stops a task when the value goes out of scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
