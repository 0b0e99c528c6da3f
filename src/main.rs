//! The `switchyard` command line: `run`, `validate`, `explain`, `simulate`, `probe`, `demo`,
//! `completions`, `man`.

mod demo;
mod demo_rollout;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use switchyard::Reloader;
use switchyard::config::duration::parse_go_duration;
use switchyard::config::istio::Labels;
use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{Diagnostic, LoadOptions, ProxyIdentity, Severity, load};
use switchyard::downstream::server::Limits;
use switchyard::explain::{LoadSettings, Loaded, RequestSpec};
use switchyard::proxy::Proxy;
use switchyard::route::OutboundPolicy;
use switchyard::serve::{ServeOptions, Server, StartError};
use switchyard::source::kubernetes::KubeOptions;

/// `--version`: the crate version, the commit it was built from and the cargo profile.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SWITCHYARD_COMMIT"),
    ", ",
    env!("SWITCHYARD_PROFILE"),
    " build)"
);

#[derive(Parser)]
#[command(
    name = "switchyard",
    version = VERSION,
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
    /// Show which route one request takes and why: matches, destinations, endpoints, policies.
    Explain(ExplainArgs),
    /// Route one request N times through the real routing code and print the split.
    Simulate(SimulateArgs),
    /// GET a URL; exit 0 on a 2xx answer, 1 otherwise (container health checks).
    Probe(ProbeArgs),
    /// Quick start: built-in upstreams, the proxy, and a measured 95/5 split.
    Demo(DemoArgs),
    /// Watch a running proxy: per route and subset, weight, share, rate, success and p99,
    /// refreshed every second (the admin page's data, `/live.json`).
    Top(TopArgs),
    /// Automated canary rollouts from Argo Rollouts' `Rollout` and `AnalysisTemplate`
    /// documents in the config folder: run the controller, watch and steer a rollout.
    Rollout(RolloutArgs),
    /// Print a shell completion script, e.g. `switchyard completions bash >
    /// ~/.local/share/bash-completion/completions/switchyard`.
    Completions(CompletionsArgs),
    /// Print a man page (roff) generated from these `--help` texts, e.g. `switchyard man |
    /// man -l -`.
    Man(ManArgs),
    /// Print the README's CLI reference (Markdown) from this binary's `--help` texts.
    #[command(name = "help-markdown", hide = true)]
    HelpMarkdown,
}

#[derive(Args)]
struct TopArgs {
    /// The proxy's admin listener.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:15000")]
    admin: String,
    /// Print one frame and exit (for scripts).
    #[arg(long)]
    once: bool,
}

#[derive(Args)]
struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Args)]
struct RolloutFolder {
    /// The config folder holding the Rollout, its VirtualService and the state files
    /// (required with `--source files`).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Namespace of documents that name none (and of the Rollout a verb names).
    #[arg(long, env = "SWITCHYARD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Where Rollouts live: the `--config` folder, or the Kubernetes API (Rollout objects;
    /// weights are patched into the VirtualService object, progress into the Rollout's
    /// status, and the verbs patch the Rollout as `kubectl argo rollouts` does).
    #[arg(long, env = "SWITCHYARD_SOURCE", value_enum, default_value = "files")]
    source: SourceArg,
    /// With `--source kubernetes`: this kubeconfig instead of the in-cluster service account
    /// (or `$KUBECONFIG`).
    #[arg(long, env = "SWITCHYARD_KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With `--source kubernetes`: watch only this namespace (repeatable). Default: all
    /// namespaces, which needs a ClusterRole.
    #[arg(long, env = "SWITCHYARD_WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
}

/// Where `rollout` finds its Rollouts.
enum RolloutPlace {
    Folder(PathBuf),
    Kubernetes(KubeOptions),
}

impl RolloutFolder {
    fn place(&self) -> Result<RolloutPlace> {
        match (self.source, &self.config) {
            (SourceArg::Files, _)
                if self.kubeconfig.is_some() || !self.watch_namespace.is_empty() =>
            {
                bail!("--kubeconfig and --watch-namespace need --source kubernetes")
            }
            (SourceArg::Files, Some(c)) => Ok(RolloutPlace::Folder(c.clone())),
            (SourceArg::Files, None) => bail!("--config is required (or --source kubernetes)"),
            (SourceArg::Kubernetes, Some(_)) => {
                bail!("--config and --source kubernetes exclude each other")
            }
            (SourceArg::Kubernetes, None) => Ok(RolloutPlace::Kubernetes(KubeOptions {
                kubeconfig: self.kubeconfig.clone(),
                namespaces: self.watch_namespace.clone(),
                ..KubeOptions::default()
            })),
        }
    }

    /// The folder, for the verbs that read only a folder's state files.
    fn dir(&self, verb: &str) -> Result<PathBuf> {
        match self.place()? {
            RolloutPlace::Folder(dir) => Ok(dir),
            // Every verb reads the API itself with --source kubernetes before getting here.
            RolloutPlace::Kubernetes(_) => {
                bail!("`rollout {verb}` reads a folder's state files: it needs --config")
            }
        }
    }
}

#[derive(Args)]
struct RolloutTarget {
    /// The Rollout's `metadata.name`.
    name: String,
    #[command(flatten)]
    folder: RolloutFolder,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Run the controller alone (web and prometheus providers; the built-in provider needs
    /// `run --rollouts`, which runs it inside the proxy).
    Run(RolloutFolder),
    /// Print a rollout as `kubectl argo rollouts get rollout` does.
    Get {
        #[command(flatten)]
        target: RolloutTarget,
        /// Print again whenever it changes.
        #[arg(long, short)]
        watch: bool,
    },
    /// One line per rollout in the folder (with `--source kubernetes`: in `--namespace`).
    List(RolloutFolder),
    /// Leave a pause (or step past an Inconclusive analysis); `--full` skips to 100%.
    Promote {
        #[command(flatten)]
        target: RolloutTarget,
        /// Skip the remaining steps and analysis.
        #[arg(long)]
        full: bool,
    },
    /// Send all traffic back to stable and remove the rollout's progress (Degraded).
    Abort(RolloutTarget),
    /// Restart an aborted rollout at step 0.
    Retry(RolloutTarget),
    /// Pause the rollout until `promote`.
    Pause(RolloutTarget),
    /// Exit 0 once the rollout is Healthy, 1 if it is Degraded or the timeout passes.
    Status {
        #[command(flatten)]
        target: RolloutTarget,
        /// Give up after this long (Go duration; `0s` checks once).
        #[arg(long, short, default_value = "0s", value_parser = duration_arg)]
        timeout: Duration,
    },
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
    /// Proxy listener (HTTP/1.1 and h2c on one port): `IP:PORT`, `HOST:PORT` or `:PORT` (all
    /// interfaces).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:15001", value_parser = listen_arg)]
    listen: SocketAddr,
    /// Worker threads, each with its own single-threaded runtime and `SO_REUSEPORT` accept
    /// queue on the proxy listener (default: every core this process may run on).
    #[arg(long, env = "SWITCHYARD_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Run the rollout controller in this proxy: it drives the config folder's Argo `Rollout`s,
    /// writing the managed VirtualService weights (with `--source kubernetes`: the API
    /// server's Rollouts, patching the VirtualService object and the Rollout's status), and
    /// the built-in analysis provider reads this proxy's counters. Without it the weights are
    /// served and never written.
    #[arg(long, env = "SWITCHYARD_ROLLOUTS")]
    rollouts: bool,
    /// Admin listener, as --listen, or `off`. Keep it on loopback: it can reload and stop us.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:15000", value_parser = optional_listen_arg)]
    admin: OptionalAddr,
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
    /// Largest request head (method, target, header names and values) in bytes, HTTP/1 and
    /// HTTP/2 alike (431 beyond).
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_BYTES", default_value_t = 60 * 1024)]
    max_header_bytes: usize,
    /// Most request headers (431 beyond).
    #[arg(long, env = "SWITCHYARD_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// Time an HTTP/1 client has to send its whole request head (Go duration).
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration_arg)]
    header_read_timeout: Duration,
    /// Close a downstream connection that moves no byte either way this long (`0s` disables).
    #[arg(long, env = "SWITCHYARD_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = duration_arg)]
    stream_idle_timeout: Duration,
    /// Answer 408 if the response head is not ready this long after the request head
    /// (`0s`, the default as in Envoy, disables it).
    #[arg(long, env = "SWITCHYARD_REQUEST_TIMEOUT", default_value = "0s", value_parser = duration_arg)]
    request_timeout: Duration,
    /// Concurrent HTTP/2 streams per downstream connection.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_CONCURRENT_STREAMS",
        default_value_t = 1024
    )]
    max_concurrent_streams: u32,
    /// Open downstream connections on the proxy listener, all workers together; beyond it
    /// new ones are closed at accept, logged and counted (`0` means no limit).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 0)]
    max_connections: usize,
    /// Config watcher settle window: a change is applied once its content hash has held
    /// this long with no new file event (Go duration).
    #[arg(long, env = "SWITCHYARD_WATCH_DEBOUNCE", default_value = "50ms", value_parser = duration_arg)]
    watch_debounce: Duration,
    /// Re-hash the config this often in case file events were missed (`0s` disables).
    #[arg(long, env = "SWITCHYARD_CONFIG_POLL_INTERVAL", default_value = "5s", value_parser = duration_arg)]
    config_poll_interval: Duration,
    /// Do not watch the config; reload only on SIGHUP or POST /reload.
    #[arg(long, env = "SWITCHYARD_NO_WATCH")]
    no_watch: bool,
    /// Log format on stderr.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Read-only metrics listener (`/stats/prometheus`, `/stats/subsets`, `/healthz/ready`),
    /// as --listen, or `off`.
    #[arg(long, env = "SWITCHYARD_METRICS", default_value = "0.0.0.0:15090", value_parser = optional_listen_arg)]
    metrics: OptionalAddr,
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
    /// A YAML file or a directory (read recursively; dot-entries skipped). Required with
    /// `--source files`.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Where the config comes from: the `--config` folder, or the Kubernetes API (Istio
    /// resources, Services with their EndpointSlices and Pods).
    #[arg(long, env = "SWITCHYARD_SOURCE", value_enum, default_value = "files")]
    source: SourceArg,
    /// With `--source kubernetes`: this kubeconfig instead of the in-cluster service account
    /// (or `$KUBECONFIG`).
    #[arg(long, env = "SWITCHYARD_KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With `--source kubernetes`: watch only this namespace (repeatable; `istio-system` is
    /// added for Istio resources). Default: all namespaces, which needs a ClusterRole.
    #[arg(long, env = "SWITCHYARD_WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    Files,
    Kubernetes,
}

impl RunArgs {
    /// The config path (or the name logs give the API server) and the Kubernetes options.
    fn source(&self) -> Result<(PathBuf, Option<KubeOptions>)> {
        match (self.source, &self.config) {
            (SourceArg::Files, _)
                if self.kubeconfig.is_some() || !self.watch_namespace.is_empty() =>
            {
                bail!("--kubeconfig and --watch-namespace need --source kubernetes")
            }
            (SourceArg::Files, Some(c)) => Ok((c.clone(), None)),
            (SourceArg::Files, None) => {
                bail!("--config is required (or --source kubernetes)")
            }
            (SourceArg::Kubernetes, Some(_)) => {
                bail!("--config and --source kubernetes exclude each other")
            }
            (SourceArg::Kubernetes, None) => Ok((
                PathBuf::from("kubernetes"),
                Some(KubeOptions {
                    kubeconfig: self.kubeconfig.clone(),
                    namespaces: self.watch_namespace.clone(),
                    debounce: self.serve.watch_debounce,
                    ..KubeOptions::default()
                }),
            )),
        }
    }
}

#[derive(Args)]
struct ValidateArgs {
    /// A YAML file or a directory (or give it as --config, like the other commands).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    path: Option<PathBuf>,
    /// A YAML file or a directory (the same as the positional PATH).
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Hide Info lines (skipped kinds, resources that do not apply here).
    #[arg(long, short)]
    quiet: bool,
    /// `text`: one line per finding. `json`/`yaml`: one document on stdout (the summary still
    /// goes to stderr).
    #[arg(long, short, value_enum, default_value = "text")]
    output: OutputFormat,
    /// Judge every resource from its own namespace (or its exportTo namespaces), as `istioctl
    /// analyze` does. The default unless --namespace is given, which judges references as one
    /// proxy in that namespace sees them.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    #[command(flatten)]
    identity: IdentityArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
    Yaml,
}

/// The request and the config it is routed against (`explain`, `simulate`).
#[derive(Args)]
struct RequestArgs {
    /// A YAML file or a directory, read and validated as `run` reads it.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    /// Request method.
    #[arg(short = 'X', long = "method", default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable). `Host:` replaces the URL's host, as with
    /// curl.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Hosts no resource names: REGISTRY_ONLY answers 502; ALLOW_ANY forwards to them.
    #[arg(
        long,
        env = "SWITCHYARD_OUTBOUND_TRAFFIC_POLICY",
        value_enum,
        default_value = "REGISTRY_ONLY"
    )]
    outbound_traffic_policy: OutboundArg,
    /// As `run --istio-mutual-as-plaintext`.
    #[arg(long, env = "SWITCHYARD_ISTIO_MUTUAL_AS_PLAINTEXT")]
    istio_mutual_as_plaintext: bool,
    #[command(flatten)]
    identity: IdentityArgs,
    /// The request: `http://host[:port][/path][?query]`.
    url: String,
}

impl RequestArgs {
    fn outbound_policy(&self) -> OutboundPolicy {
        match self.outbound_traffic_policy {
            OutboundArg::RegistryOnly => OutboundPolicy::RegistryOnly,
            OutboundArg::AllowAny => OutboundPolicy::AllowAny,
        }
    }

    /// The parsed request and the config as `run` would serve it; a config `run` would refuse
    /// is an error, with its diagnostics on stderr.
    fn load(&self) -> Result<(RequestSpec, Loaded)> {
        let req = RequestSpec::parse(&self.url, &self.method, &self.headers)?;
        let settings = LoadSettings {
            identity: self.identity.identity()?,
            outbound_policy: self.outbound_policy(),
            istio_mutual_as_plaintext: self.istio_mutual_as_plaintext,
        };
        match switchyard::explain::load_config(&self.config, &settings) {
            Ok(loaded) => {
                let warnings = loaded
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Warning)
                    .count();
                if warnings > 0 {
                    eprintln!(
                        "{}: {warnings} warning(s); `switchyard validate` lists them",
                        self.config.display()
                    );
                }
                Ok((req, loaded))
            }
            Err(diags) => {
                for d in diags.iter().filter(|d| d.severity != Severity::Info) {
                    eprintln!("{d}");
                }
                let errors = diags.iter().filter(|d| d.is_error()).count();
                bail!(
                    "{}: `run` would refuse this config: {errors} error(s) (listed above)",
                    self.config.display()
                );
            }
        }
    }
}

#[derive(Args)]
struct ExplainArgs {
    /// `text`: the explanation to read. `json`: the same as one document (request, routes
    /// with their outcome, result with destinations and endpoints, and the text lines).
    #[arg(long, short, value_enum, default_value = "text")]
    output: ExplainOutput,
    #[command(flatten)]
    request: RequestArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExplainOutput {
    Text,
    Json,
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct ManArgs {
    /// A command's own page (`switchyard-run(1)` ...) instead of the top one.
    command: Option<String>,
}

#[derive(Args)]
struct SimulateArgs {
    /// How many requests to route.
    #[arg(short = 'n', long = "requests", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// RNG seed: the same seed prints the same report, byte for byte. Default: a random seed
    /// (printed, so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Also print the first draws and how long the routing took.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    request: RequestArgs,
}

#[derive(Args)]
struct ProbeArgs {
    /// `http://host:port/path`, e.g. http://127.0.0.1:15000/healthz/ready.
    url: String,
    /// Give up after this long (Go duration).
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    timeout: Duration,
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
    /// Start the built-in upstreams on free ports rather than the config's (when those are
    /// taken), and serve a copy of the config whose loopback endpoints name them.
    #[arg(long)]
    free_upstream_ports: bool,
    /// Instead: two automated canary rollouts with real traffic, a healthy one through
    /// 5/25/50/100 and a faulty one (30% 5xx) into an automatic abort, as a timeline.
    #[arg(long)]
    rollout: bool,
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

/// An address flag that may be `off`.
#[derive(Clone, Copy, Debug)]
pub struct OptionalAddr(Option<SocketAddr>);

const LISTEN_FORMS: &str =
    "expected IP:PORT, HOST:PORT or :PORT (all interfaces), e.g. 127.0.0.1:15001 or :15001";

/// `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved once, IPv4 first) or `:PORT` (0.0.0.0).
fn listen_arg(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port: {LISTEN_FORMS}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number: {LISTEN_FORMS}"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?} ({e}): {LISTEN_FORMS}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address: {LISTEN_FORMS}"))
}

/// As [`listen_arg`], or `off` (an empty value means `off` too).
fn optional_listen_arg(s: &str) -> Result<OptionalAddr, String> {
    match s {
        "off" | "" => Ok(OptionalAddr(None)),
        s => listen_arg(s).map(|a| OptionalAddr(Some(a))),
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

/// The CLI definition. Environment values are never printed in `--help` (they may hold
/// secrets, and the generated README reference must not depend on the caller's environment).
fn cli_command() -> clap::Command {
    fn hide_env_values(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(hide_env_values)
    }
    hide_env_values(Cli::command())
}

fn main() -> ExitCode {
    let matches = cli_command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Validate(mut args) => {
            init_logging(LogFormat::Text);
            // A namespace from the flag or the environment asks for one proxy's view.
            let namespace_given = matches
                .subcommand_matches("validate")
                .and_then(|m| m.value_source("namespace"))
                .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
            args.all_namespaces |= !namespace_given;
            run_validate(args)
        }
        Command::Explain(args) => run_explain(args),
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut cli_command(),
                "switchyard",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => run_man(args),
        Command::Simulate(args) => run_simulate(args),
        Command::Probe(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(run_probe(args))),
        Command::HelpMarkdown => {
            print!("{}", help_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollout(args) => run_rollout(args.command),
        Command::Top(args) => runtime().and_then(|rt| rt.block_on(run_top(args))),
        Command::Run(args) => {
            init_logging(args.serve.log_format);
            match args.source() {
                Ok((config, kube)) => serve_then_exit(run_from(config, kube, args.serve, None)),
                Err(e) => Err(e),
            }
        }
        Command::Demo(args) if args.rollout => {
            // The timeline is the output; the proxy's INFO lines would bury it (`RUST_LOG`
            // still wins).
            init_logging_filter(args.serve.log_format, "error");
            serve_then_exit(demo_rollout::run(args))
        }
        Command::Demo(args) => {
            init_logging(args.serve.log_format);
            serve_then_exit(demo::run(args))
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

/// Runs a serving command, then exits as soon as it returns: dropping the runtime would wait
/// for its blocking threads, and one of them may sit in `getaddrinfo` for a DNS cluster's
/// refresh (seconds when a resolver does not answer) or in a config read, holding the exit
/// well past `drained; exiting`. Nothing those threads do is needed once the drain is over.
fn serve_then_exit(serve: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    let rt = runtime()?;
    let code = rt.block_on(serve);
    rt.shutdown_background();
    code
}

async fn run_top(args: TopArgs) -> Result<ExitCode> {
    let url = format!("http://{}/live.json", args.admin);
    let tty = std::io::stdout().is_terminal();
    loop {
        let (status, body) =
            switchyard::rollout::provider::http(&url, "GET", &[], None, Duration::from_secs(2))
                .await
                .map_err(|e| anyhow::anyhow!("cannot read {url}: {e}"))?;
        if status != 200 {
            bail!("{url}: status {status} (is --admin a switchyard admin listener?)");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))?;
        let frame = switchyard::live::top_frame(&json);
        if args.once {
            print!("{frame}");
            return Ok(ExitCode::SUCCESS);
        }
        if tty {
            // Home and clear: redraw in place, as top does.
            print!("\x1b[H\x1b[2J");
        }
        print!("{frame}");
        if !tty {
            println!();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn run_rollout(cmd: RolloutCommand) -> Result<ExitCode> {
    use switchyard::rollout::{cli, state};
    let ask = |t: &RolloutTarget, a: state::Action, said: &str| -> Result<ExitCode> {
        let dir = match t.folder.place()? {
            RolloutPlace::Folder(dir) => dir,
            RolloutPlace::Kubernetes(k) => {
                runtime()?
                    .block_on(switchyard::rollout::kubernetes::request(
                        &k,
                        &t.folder.namespace,
                        &t.name,
                        a,
                    ))
                    .context("cannot patch the Rollout")?;
                println!("rollout '{}' {said}", t.name);
                return Ok(ExitCode::SUCCESS);
            }
        };
        let dir = &dir;
        if state::read(dir, &t.folder.namespace, &t.name).is_none() {
            bail!(
                "no rollout {}/{} has run in {} (no state file): is a controller running (`run --rollouts` or `rollout run`)?",
                t.folder.namespace,
                t.name,
                dir.display()
            );
        }
        state::request(dir, &t.folder.namespace, &t.name, a)
            .with_context(|| format!("cannot leave the request in {}", dir.display()))?;
        println!("rollout '{}' {said}", t.name);
        Ok(ExitCode::SUCCESS)
    };
    let read = |t: &RolloutTarget, verb: &str| {
        let dir = t.folder.dir(verb)?;
        state::read(&dir, &t.folder.namespace, &t.name).with_context(|| {
            format!(
                "no rollout {}/{} in {} (no state file yet)",
                t.folder.namespace,
                t.name,
                dir.display()
            )
        })
    };
    match cmd {
        RolloutCommand::Run(f) => {
            init_logging(LogFormat::Text);
            let dir = match f.place()? {
                RolloutPlace::Folder(dir) => dir,
                RolloutPlace::Kubernetes(k) => return run_rollout_kubernetes(k, f.namespace),
            };
            let lock = state::lock(&dir)?;
            let controller =
                switchyard::rollout::Controller::new(dir.clone(), f.namespace, None, None);
            tracing::info!(config = %dir.display(), "rollout controller running");
            let rt = runtime()?;
            rt.block_on(async {
                tokio::select! {
                    _ = controller.run() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            });
            rt.shutdown_background();
            drop(lock);
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Get { target, watch } => {
            // Against the API server: the Rollout object, read again on every poll.
            let kube = match target.folder.place()? {
                RolloutPlace::Kubernetes(k) => Some((k, runtime()?)),
                RolloutPlace::Folder(_) => None,
            };
            let mut last = String::new();
            loop {
                let st = match &kube {
                    Some((k, rt)) => rt
                        .block_on(switchyard::rollout::kubernetes::get(
                            k,
                            &target.folder.namespace,
                            &target.name,
                        ))
                        .context("cannot read the Rollout")?,
                    None => read(&target, "get")?,
                };
                let text = cli::describe(&st);
                if text != last {
                    if watch && !last.is_empty() {
                        println!();
                    }
                    print!("{text}");
                    last = text;
                }
                if !watch {
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(if kube.is_some() {
                    switchyard::rollout::kubernetes::STATUS_POLL
                } else {
                    Duration::from_millis(200)
                });
            }
        }
        RolloutCommand::List(f) => {
            let all = match f.place()? {
                RolloutPlace::Kubernetes(k) => runtime()?
                    .block_on(switchyard::rollout::kubernetes::list(&k, &f.namespace))
                    .context("cannot list the Rollouts")?,
                RolloutPlace::Folder(dir) => state::list(&dir),
            };
            println!("{}", cli::LIST_HEADER);
            for st in all {
                println!("{}", cli::list_line(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Promote { target, full } => {
            if full {
                ask(&target, state::Action::PromoteFull, "fully promoted")
            } else {
                ask(&target, state::Action::Promote, "promoted")
            }
        }
        RolloutCommand::Abort(t) => ask(&t, state::Action::Abort, "aborted"),
        RolloutCommand::Retry(t) => ask(&t, state::Action::Retry, "retried"),
        RolloutCommand::Pause(t) => ask(&t, state::Action::Pause, "paused"),
        RolloutCommand::Status { target, timeout } => {
            if let RolloutPlace::Kubernetes(k) = target.folder.place()? {
                return rollout_status_kubernetes(k, &target, timeout);
            }
            let deadline = Instant::now() + timeout;
            loop {
                let st = read(&target, "status")?;
                match st.phase.as_str() {
                    "Healthy" => {
                        println!("Healthy");
                        return Ok(ExitCode::SUCCESS);
                    }
                    "Degraded" => {
                        println!("Degraded - {}", st.message);
                        return Ok(ExitCode::from(1));
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    println!("{} - {}", st.phase, st.message);
                    return Ok(ExitCode::from(1));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `rollout run --source kubernetes`: the controller over the API server until Ctrl-C.
fn run_rollout_kubernetes(k: KubeOptions, namespace: String) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let backend = switchyard::rollout::kubernetes::Kube::start(&k, namespace)
            .await
            .context("cannot read Rollouts from the Kubernetes API")?;
        let controller = switchyard::rollout::Controller::with_backend(backend, None, None);
        tracing::info!("rollout controller running against the Kubernetes API");
        tokio::select! {
            _ = controller.run() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    rt.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// `rollout status --source kubernetes`: Argo's exit codes, from the Rollout's status.
fn rollout_status_kubernetes(
    k: KubeOptions,
    target: &RolloutTarget,
    timeout: Duration,
) -> Result<ExitCode> {
    let rt = runtime()?;
    let deadline = Instant::now() + timeout;
    loop {
        let (phase, message) = rt
            .block_on(switchyard::rollout::kubernetes::phase(
                &k,
                &target.folder.namespace,
                &target.name,
            ))
            .context("cannot read the Rollout")?;
        match phase.as_str() {
            "Healthy" => {
                println!("Healthy");
                return Ok(ExitCode::SUCCESS);
            }
            "Degraded" => {
                println!("Degraded - {message}");
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            println!("{phase} - {message}");
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(switchyard::rollout::kubernetes::STATUS_POLL);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // The main thread is worker 0; the others get their own threads (see downstream::workers).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    init_logging_filter(format, "info");
}

/// Logging with `default` as the filter when `RUST_LOG` sets none.
fn init_logging_filter(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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

fn run_man(args: ManArgs) -> Result<ExitCode> {
    let cmd = cli_command();
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd
                .get_subcommands()
                .find(|c| c.get_name() == name && !c.is_hide_set())
            else {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| c.get_name())
                    .collect();
                bail!("no command {name:?}; one of: {}", names.join(", "));
            };
            sub.clone()
                .display_name(format!("switchyard-{name}"))
                .bin_name(format!("switchyard {name}"))
                .version(VERSION)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    let identity = args.identity.identity()?;
    let Some(path) = args.config.as_ref().or(args.path.as_ref()) else {
        bail!("validate: give the config as PATH or --config PATH");
    };
    let res = load(
        path,
        &LoadOptions {
            default_namespace: identity.namespace.clone(),
        },
    );
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &identity,
            mode: if args.all_namespaces {
                Mode::AnalyzeAll
            } else {
                Mode::Analyze
            },
            istio_mutual_as_plaintext: false,
        },
    ));
    diags.extend(switchyard::rollout::controller::check(&res));
    diags.extend(switchyard::ratelimit::read(&res, &identity).1);
    diags.extend(switchyard::route::sticky::check(&res));
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let mut counts = [0usize; 3];
    for d in &diags {
        counts[d.severity as usize] += 1;
    }
    if args.quiet {
        diags.retain(|d| d.severity != Severity::Info);
    }
    let resources = res.virtual_services.len()
        + res.destination_rules.len()
        + res.service_entries.len()
        + res.workload_entries.len()
        + res.kube_services.len()
        + res.workloads.len()
        + res.argo.len()
        + res.envoy_filters.len();
    let summary = ValidateSummary {
        files: res.files.len(),
        resources,
        errors: counts[Severity::Error as usize],
        warnings: counts[Severity::Warning as usize],
        info: counts[Severity::Info as usize],
    };
    match args.output {
        OutputFormat::Text => {
            for d in &diags {
                println!("{d}");
            }
        }
        OutputFormat::Json | OutputFormat::Yaml => {
            let doc = ValidateReport {
                summary: &summary,
                diagnostics: &diags,
            };
            let text = if args.output == OutputFormat::Json {
                serde_json::to_string_pretty(&doc)? + "\n"
            } else {
                yaml_serde::to_string(&doc)?
            };
            print!("{text}");
        }
    }
    eprintln!(
        "{} file(s), {resources} resource(s): {} error(s), {} warning(s), {} info",
        summary.files, summary.errors, summary.warnings, summary.info,
    );
    Ok(if counts[Severity::Error as usize] > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `POST /logging?level=` on the admin listener changes the filter through this.
static LOG_CONTROL: std::sync::OnceLock<switchyard::admin::LogControl> = std::sync::OnceLock::new();

/// `validate --output json|yaml`: the whole document.
#[derive(serde::Serialize)]
struct ValidateReport<'a> {
    summary: &'a ValidateSummary,
    diagnostics: &'a [Diagnostic],
}

#[derive(serde::Serialize)]
struct ValidateSummary {
    files: usize,
    resources: usize,
    errors: usize,
    warnings: usize,
    info: usize,
}

fn run_explain(args: ExplainArgs) -> Result<ExitCode> {
    let (req, loaded) = args.request.load()?;
    match args.output {
        ExplainOutput::Text => print!("{}", switchyard::explain::explain(&loaded, &req)),
        ExplainOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&switchyard::explain::explain_json(&loaded, &req))?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_simulate(args: SimulateArgs) -> Result<ExitCode> {
    use rand::RngExt;
    let (req, loaded) = args.request.load()?;
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let report = switchyard::simulate::simulate(
        &loaded.table,
        &req,
        switchyard::simulate::SimOptions {
            requests: args.requests,
            seed,
        },
    );
    print!("{}", report.render(args.verbose));
    Ok(ExitCode::SUCCESS)
}

/// One HTTP/1.1 GET. Exit 0 on 2xx, 1 on anything else (including no answer in time).
async fn run_probe(args: ProbeArgs) -> Result<ExitCode> {
    use http_body_util::BodyExt;

    let uri: http::Uri = args
        .url
        .parse()
        .with_context(|| format!("{:?} is not a URL", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("{:?}: only http:// URLs", args.url);
    }
    let Some(authority) = uri.authority().cloned() else {
        bail!("{:?}: no host", args.url);
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let exchange = async {
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "switchyard-probe")
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        // A short body (`LIVE`, `DRAINING`) says why; a long one is cut.
        let body = http_body_util::Limited::new(resp.into_body(), 256)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        conn.abort();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(args.timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer within {:?}", args.url, args.timeout))??;
    let text = String::from_utf8_lossy(&body);
    let line = format!("{}: {status} {}", args.url, text.trim());
    if status.is_success() {
        println!("{}", line.trim_end());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", line.trim_end());
        Ok(ExitCode::from(1))
    }
}

/// The README's CLI reference: `switchyard --help` and every visible command's `--help`,
/// rendered by the same clap path that prints them.
fn help_markdown() -> String {
    let help_of = |args: &[&str]| -> String {
        let mut argv = vec!["switchyard"];
        argv.extend_from_slice(args);
        argv.push("--help");
        match cli_command().try_get_matches_from(argv) {
            Ok(_) => String::new(),
            Err(e) => {
                let mut text = e.render().to_string();
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            }
        }
    };
    let mut out = String::new();
    out.push_str("```text\n$ switchyard --help\n");
    out.push_str(&help_of(&[]));
    out.push_str("```\n");
    let cmd = cli_command();
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        let name = sub.get_name();
        out.push_str(&format!(
            "\n<details><summary><code>switchyard {name} --help</code></summary>\n\n```text\n"
        ));
        out.push_str(&help_of(&[name]));
        out.push_str("```\n\n</details>\n");
    }
    out
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
    run_from(config, None, args, ready).await
}

/// [`run`], reading the config from the Kubernetes API when `kube` is given.
async fn run_from(
    config: PathBuf,
    kube: Option<KubeOptions>,
    args: ServeArgs,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<ExitCode> {
    let mut opts = serve_options(config, &args)?;
    if kube.is_some() {
        opts.watch = None;
        opts.kubernetes = kube;
    }
    let server = match Server::start(opts).await {
        Ok(s) => s,
        Err(StartError::Refused {
            path,
            errors,
            diagnostics,
        }) => {
            log_diagnostics(&diagnostics);
            bail!(
                "{}: refused: {errors} error(s) in the config (listed above)",
                path.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    log_diagnostics(&server.warnings);
    let shown = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(
        "switchyard listening proxy={} admin={} metrics={} workers={}",
        server.proxy_addr,
        shown(server.admin_addr),
        shown(server.metrics_addr),
        server.workers()
    );
    if let Some(tx) = ready {
        let _ = tx.send(Ready {
            proxy: server.proxy_addr,
            server: server.proxy.clone(),
            reloader: server.reloader.clone(),
            quit: server.quit.clone(),
        });
    }

    let mut signals = StopSignals::new();
    wait_for_stop(&mut signals, &server.quit, &server.reloader).await;
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
    let state = server.proxy.state.clone();
    if server.drain(args.drain_delay, args.drain_timeout).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            in_flight = state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            "drain timeout reached; exiting with requests still in flight"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`'s arguments as the library's server options.
fn serve_options(config: PathBuf, args: &ServeArgs) -> Result<ServeOptions> {
    use switchyard::access_log::{Format, Sink};
    let access_log = match args.access_log.as_str() {
        "off" | "" => None,
        "stdout" => Some(Sink::Stdout),
        "stderr" => Some(Sink::Stderr),
        path => Some(Sink::File(PathBuf::from(path))),
    }
    .map(|sink| {
        let format = match args.access_log_format {
            AccessLogFormatArg::Envoy => Format::Envoy,
            AccessLogFormatArg::Json => Format::Json,
        };
        (sink, format)
    });
    Ok(ServeOptions {
        config,
        identity: args.identity.identity()?,
        outbound_policy: match args.outbound_traffic_policy {
            OutboundArg::RegistryOnly => OutboundPolicy::RegistryOnly,
            OutboundArg::AllowAny => OutboundPolicy::AllowAny,
        },
        istio_mutual_as_plaintext: args.istio_mutual_as_plaintext,
        reporter: match args.reporter {
            ReporterArg::Source => switchyard::metrics::Reporter::Source,
            ReporterArg::Destination => switchyard::metrics::Reporter::Destination,
        },
        listen: args.listen,
        workers: args.workers.map(usize::from),
        admin: args.admin.0,
        metrics: args.metrics.0,
        access_log,
        limits: Limits {
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            header_read_timeout: args.header_read_timeout,
            stream_idle_timeout: args.stream_idle_timeout,
            request_timeout: args.request_timeout,
            h2_max_concurrent_streams: args.max_concurrent_streams,
            max_connections: args.max_connections,
        },
        // Armed before "listening" is logged; dropping the server stops the watcher.
        watch: (!args.no_watch).then(|| switchyard::watch::WatchOptions {
            debounce: args.watch_debounce,
            poll_interval: (!args.config_poll_interval.is_zero())
                .then_some(args.config_poll_interval),
            ..switchyard::watch::WatchOptions::default()
        }),
        rollouts: args.rollouts,
        log_control: LOG_CONTROL.get().cloned(),
        kubernetes: None,
    })
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
                    // The reloader logs the outcome and every diagnostic itself.
                    let _ = reloader.reload_with(switchyard::reload::Trigger::Signal).await;
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
