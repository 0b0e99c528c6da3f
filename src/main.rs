//! The `switchyard` command line: `run`, `validate`, `demo`.

mod demo;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use switchyard::admin::Admin;
use switchyard::config::duration::parse_go_duration;
use switchyard::config::istio::Labels;
use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{Diagnostic, LoadOptions, ProxyIdentity, Severity, load};
use switchyard::proxy::Proxy;
use switchyard::proxy::server::{Limits, ProxyListener};
use switchyard::route::OutboundPolicy;
use switchyard::upstream::PoolRegistry;
use switchyard::{ReloadContext, ReloadOutcome, Reloader};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Istio canary routing (VirtualService / DestinationRule) in a standalone sidecar proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: route requests as the config's VirtualServices say.
    Run(RunArgs),
    /// Check a config like `istioctl analyze`; exit 1 on any error.
    Validate(ValidateArgs),
    /// Quick start: built-in upstreams, the proxy, and a measured 95/5 split.
    Demo(DemoArgs),
}

#[derive(Args, Clone)]
pub struct IdentityArgs {
    /// Namespace this proxy runs in (resources without one, short names, exportTo ".").
    #[arg(long, env = "SWITCHYARD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Workload name of this proxy (metrics).
    #[arg(long, env = "SWITCHYARD_WORKLOAD", default_value = "switchyard")]
    workload: String,
    /// This proxy's own labels, `k=v,...` (VirtualService `sourceLabels` match them).
    #[arg(long, env = "SWITCHYARD_LABELS", default_value = "")]
    labels: String,
}

impl IdentityArgs {
    fn identity(&self) -> Result<ProxyIdentity> {
        Ok(ProxyIdentity {
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            labels: parse_labels(&self.labels)?,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OutboundArg {
    #[value(name = "REGISTRY_ONLY", alias = "registry-only")]
    RegistryOnly,
    #[value(name = "ALLOW_ANY", alias = "allow-any")]
    AllowAny,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Proxy listener (HTTP/1.1 and h2c on one port).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:15001")]
    listen: SocketAddr,
    /// Admin listener (`off` disables it). Keep it on loopback: it can reload and stop us.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:15000")]
    admin: String,
    /// Hosts no resource names: REGISTRY_ONLY answers 502; ALLOW_ANY forwards to them.
    #[arg(
        long,
        env = "SWITCHYARD_OUTBOUND_TRAFFIC_POLICY",
        value_enum,
        default_value = "REGISTRY_ONLY"
    )]
    outbound_traffic_policy: OutboundArg,
    /// After SIGTERM, keep accepting new connections this long (Go duration; Istio uses 5s).
    #[arg(long, env = "SWITCHYARD_DRAIN_DELAY", default_value = "0s", value_parser = duration_arg)]
    drain_delay: Duration,
    /// Then wait at most this long for in-flight requests.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "5s", value_parser = duration_arg)]
    drain_timeout: Duration,
    /// Serve DestinationRules with `tls.mode: ISTIO_MUTUAL` in plaintext (local development).
    #[arg(long, env = "SWITCHYARD_ISTIO_MUTUAL_AS_PLAINTEXT")]
    istio_mutual_as_plaintext: bool,
    /// Largest request head (request line + headers) in bytes, HTTP/1 and HTTP/2 (431 beyond).
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_BYTES", default_value_t = 60 * 1024)]
    max_header_bytes: usize,
    /// Most request headers (431 beyond).
    #[arg(long, env = "SWITCHYARD_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// Log format on stderr.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Read-only metrics listener (`/stats/prometheus`, `/stats/subsets`, `/healthz/ready`),
    /// or `off`.
    #[arg(long, env = "SWITCHYARD_METRICS", default_value = "0.0.0.0:15090")]
    metrics: String,
    /// Istio `reporter` label: `source` (client-side sidecar) or `destination` (server-side,
    /// what Flagger queries).
    #[arg(
        long,
        env = "SWITCHYARD_REPORTER",
        value_enum,
        default_value = "source"
    )]
    reporter: ReporterArg,
    /// Access log: `off`, `stdout`, `stderr` or a file path (appended).
    #[arg(long, env = "SWITCHYARD_ACCESS_LOG", default_value = "off")]
    access_log: String,
    /// Access-log line format: Istio's default text (`envoy`) or the same fields as JSON.
    #[arg(
        long,
        env = "SWITCHYARD_ACCESS_LOG_FORMAT",
        value_enum,
        default_value = "envoy"
    )]
    access_log_format: AccessLogFormatArg,
    #[command(flatten)]
    identity: IdentityArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReporterArg {
    Source,
    Destination,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccessLogFormatArg {
    Envoy,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct RunArgs {
    /// A YAML file or a directory (read recursively; dot-entries skipped).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ValidateArgs {
    /// A YAML file or a directory.
    path: PathBuf,
    /// Hide Info lines (skipped kinds, resources that do not apply here).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    identity: IdentityArgs,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Config to serve; its loopback endpoints get built-in upstreams.
    #[arg(long, default_value = "config")]
    config: PathBuf,
    /// Requests without the header (the weighted split).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Requests with `X-User-Group: beta`.
    #[arg(long, default_value_t = 1_000)]
    beta_requests: usize,
    /// Print the report and exit instead of serving on.
    #[arg(long)]
    exit: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

impl DemoArgs {
    fn serve_identity(&self) -> Result<ProxyIdentity> {
        self.serve.identity.identity()
    }

    fn serve_access_log_is_default(&self) -> bool {
        self.serve.access_log == "off"
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

fn parse_labels(s: &str) -> Result<Labels> {
    let mut labels = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--labels: expected k=v, found {pair:?}");
        };
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => {
            init_logging(LogFormat::Text);
            run_validate(args)
        }
        Command::Run(args) => {
            init_logging(args.serve.log_format);
            runtime().and_then(|rt| rt.block_on(run(args.config, args.serve, None)))
        }
        Command::Demo(args) => {
            init_logging(args.serve.log_format);
            runtime().and_then(|rt| rt.block_on(demo::run(args)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    fn control<H>(reload: H) -> switchyard::admin::LogControl
    where
        H: Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync + 'static,
    {
        Arc::new(move |level: &str| {
            let filter =
                tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            reload(filter)
        })
    }
    match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = LOG_CONTROL.set(control(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.init();
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = LOG_CONTROL.set(control(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.init();
        }
    }
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    let identity = args.identity.identity()?;
    let res = load(
        &args.path,
        &LoadOptions {
            default_namespace: identity.namespace.clone(),
        },
    );
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: Mode::Analyze,
            istio_mutual_as_plaintext: false,
        },
    ));
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let mut counts = [0usize; 3];
    for d in &diags {
        counts[d.severity as usize] += 1;
        if args.quiet && d.severity == Severity::Info {
            continue;
        }
        println!("{d}");
    }
    let resources = res.virtual_services.len()
        + res.destination_rules.len()
        + res.service_entries.len()
        + res.workload_entries.len();
    eprintln!(
        "{} file(s), {resources} resource(s): {} error(s), {} warning(s), {} info",
        res.files.len(),
        counts[Severity::Error as usize],
        counts[Severity::Warning as usize],
        counts[Severity::Info as usize],
    );
    Ok(if counts[Severity::Error as usize] > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `POST /logging?level=` on the admin listener changes the filter through this.
static LOG_CONTROL: std::sync::OnceLock<switchyard::admin::LogControl> = std::sync::OnceLock::new();

fn access_log(
    args: &ServeArgs,
    metrics: &Arc<switchyard::metrics::Registry>,
) -> Result<Option<switchyard::access_log::AccessLog>> {
    use switchyard::access_log::{AccessLog, Format, Sink};
    let sink = match args.access_log.as_str() {
        "off" | "" => return Ok(None),
        "stdout" => Sink::Stdout,
        "stderr" => Sink::Stderr,
        path => Sink::File(PathBuf::from(path)),
    };
    let format = match args.access_log_format {
        AccessLogFormatArg::Envoy => Format::Envoy,
        AccessLogFormatArg::Json => Format::Json,
    };
    AccessLog::start(sink, format, metrics.clone())
        .map(Some)
        .with_context(|| format!("--access-log {}: cannot open", args.access_log))
}

fn log_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        match d.severity {
            Severity::Error => tracing::error!("{d}"),
            Severity::Warning => tracing::warn!("{d}"),
            Severity::Info => tracing::info!("{d}"),
        }
    }
}

/// What `run` tells an embedding caller (the demo) once it listens.
pub struct Ready {
    pub proxy: SocketAddr,
    pub server: Arc<Proxy>,
    pub reloader: Arc<Reloader>,
    pub quit: Arc<Notify>,
}

/// Serves `config` until SIGTERM/SIGINT (or POST /quitquitquit). `ready` is told the bound
/// addresses (the demo uses it).
pub async fn run(
    config: PathBuf,
    args: ServeArgs,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<ExitCode> {
    let started = Instant::now();
    let identity = args.identity.identity()?;
    let pools = Arc::new(PoolRegistry::default());
    let metrics = Arc::new(switchyard::metrics::Registry::new(
        switchyard::metrics::SourceLabels::new(
            &identity.workload,
            &identity.namespace,
            &identity.labels,
        ),
        match args.reporter {
            ReporterArg::Source => switchyard::metrics::Reporter::Source,
            ReporterArg::Destination => switchyard::metrics::Reporter::Destination,
        },
    ));
    let ctx = ReloadContext {
        path: config.clone(),
        identity,
        outbound_policy: match args.outbound_traffic_policy {
            OutboundArg::RegistryOnly => OutboundPolicy::RegistryOnly,
            OutboundArg::AllowAny => OutboundPolicy::AllowAny,
        },
        istio_mutual_as_plaintext: args.istio_mutual_as_plaintext,
        pools: pools.clone(),
        metrics: metrics.clone(),
    };
    let (reloader, warnings) = match Reloader::start(ctx).await {
        Ok(r) => r,
        Err(diags) => {
            log_diagnostics(&diags);
            let errors = diags.iter().filter(|d| d.is_error()).count();
            bail!(
                "{}: refused: {errors} error(s) in the config (listed above)",
                config.display()
            );
        }
    };
    log_diagnostics(&warnings);
    let reloader = Arc::new(reloader);
    {
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

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let proxy_addr = listener.local_addr()?;
    let admin_listener = match args.admin.as_str() {
        "off" | "" => None,
        a => {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("--admin: {a:?} is not an address (or `off`)"))?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--admin)"))?,
            )
        }
    };
    let mut proxy = Proxy::new(reloader.table.clone(), pools, metrics.clone());
    if let Some(log) = access_log(&args, &metrics)? {
        proxy.access_log.store(Some(Arc::new(log)));
    }
    let metrics_listener = match args.metrics.as_str() {
        "off" | "" => None,
        a => {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("--metrics: {a:?} is not an address (or `off`)"))?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--metrics)"))?,
            )
        }
    };
    if let Some(l) = &metrics_listener {
        proxy.own_addrs.push(l.local_addr()?);
    }
    proxy.own_addrs.push(proxy_addr);
    if let Some(l) = &admin_listener {
        proxy.own_addrs.push(l.local_addr()?);
    }
    let proxy = Arc::new(proxy);
    let quit = Arc::new(Notify::new());
    let admin_addr = match admin_listener {
        Some(l) => Some(
            Arc::new(Admin {
                reloader: reloader.clone(),
                state: proxy.state.clone(),
                quit: quit.clone(),
                started,
                metrics: metrics.clone(),
                set_log_level: LOG_CONTROL.get().cloned(),
            })
            .spawn(l)?,
        ),
        None => None,
    };
    let limits = Limits {
        max_header_bytes: args.max_header_bytes,
        max_headers: args.max_headers,
        ..Limits::default()
    };
    let metrics_addr = match metrics_listener {
        Some(l) => Some(switchyard::metrics::server::spawn(
            l,
            metrics.clone(),
            proxy.state.clone(),
        )?),
        None => None,
    };
    let server = ProxyListener::spawn(listener, proxy.clone(), limits)?;
    let shown = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(
        "switchyard listening proxy={proxy_addr} admin={} metrics={}",
        shown(admin_addr),
        shown(metrics_addr)
    );
    if let Some(tx) = ready {
        let _ = tx.send(Ready {
            proxy: proxy_addr,
            server: proxy.clone(),
            reloader: reloader.clone(),
            quit: quit.clone(),
        });
    }

    let mut signals = StopSignals::new();
    wait_for_stop(&mut signals, &quit, &reloader).await;
    tracing::info!(
        drain_delay = ?args.drain_delay,
        drain_timeout = ?args.drain_timeout,
        "draining: readiness now fails"
    );
    // A second signal during the drain exits at once.
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("switchyard: second signal, exiting now");
        std::process::exit(1);
    });
    let clean = server.drain(args.drain_delay, args.drain_timeout).await;
    if clean {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            in_flight = proxy
                .state
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
            "drain timeout reached; exiting with requests still in flight"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM, SIGINT or /quitquitquit; SIGHUP reloads the config meanwhile.
async fn wait_for_stop(signals: &mut StopSignals, quit: &Notify, reloader: &Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = signals.recv() => return,
                _ = quit.notified() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    match reloader.reload().await {
                        Ok(ReloadOutcome::Applied { version, warnings }) => {
                            log_diagnostics(&warnings);
                            tracing::info!(version, "SIGHUP: config reloaded");
                        }
                        Ok(ReloadOutcome::Unchanged) => tracing::info!("SIGHUP: config unchanged"),
                        Err(diags) => {
                            log_diagnostics(&diags);
                            tracing::error!("SIGHUP: config refused; the last good config keeps serving");
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = signals.recv() => {},
            _ = quit.notified() => {},
        }
    }
}

/// SIGTERM and SIGINT, registered once so no signal between two waits is lost.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn new() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.term.is_none() && self.int.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                _ = next(&mut self.term) => {},
                _ = next(&mut self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
