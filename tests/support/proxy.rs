//! The real proxy, in-process: the server `switchyard run` assembles ([`Server::start`]),
//! bound to 127.0.0.1:0, over a config written to a temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchyard::config::ProxyIdentity;
use switchyard::downstream::server::Limits;
use switchyard::proxy::Proxy;
use switchyard::route::OutboundPolicy;
use switchyard::serve::{ServeOptions, Server, StartError};
use switchyard::{Diagnostic, Reloader};

pub struct ProxyOptions {
    pub identity: ProxyIdentity,
    pub reporter: switchyard::metrics::Reporter,
    /// Access-log lines go to this file when set.
    pub access_log: Option<(PathBuf, switchyard::access_log::Format)>,
    pub outbound_policy: OutboundPolicy,
    pub limits: Limits,
    pub admin: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            identity: ProxyIdentity::default(),
            reporter: switchyard::metrics::Reporter::Source,
            access_log: None,
            outbound_policy: OutboundPolicy::RegistryOnly,
            limits: Limits::default(),
            admin: true,
        }
    }
}

pub struct TestProxy {
    pub metrics: Arc<switchyard::metrics::Registry>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub reloader: Arc<Reloader>,
    pub proxy: Arc<Proxy>,
    /// The library's server, as `switchyard run` assembles it; dropped with the test.
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestProxy {
    /// Writes `yaml` as `config.yaml` in a fresh directory and serves it. Panics with the
    /// diagnostics if the config is refused.
    pub async fn start(yaml: &str) -> TestProxy {
        Self::start_with(yaml, ProxyOptions::default()).await
    }

    pub async fn start_with(yaml: &str, opts: ProxyOptions) -> TestProxy {
        match Self::try_start_with(yaml, opts).await {
            Ok(p) => p,
            Err(diags) => panic!(
                "config refused:\n{}",
                diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    pub async fn try_start_with(
        yaml: &str,
        opts: ProxyOptions,
    ) -> Result<TestProxy, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yaml"), yaml).expect("write config");
        let mut serve = ServeOptions::new(dir.path());
        serve.identity = opts.identity;
        serve.reporter = opts.reporter;
        serve.outbound_policy = opts.outbound_policy;
        serve.limits = opts.limits;
        serve.access_log = opts
            .access_log
            .map(|(path, format)| (switchyard::access_log::Sink::File(path), format));
        if !opts.admin {
            serve.admin = None;
        }
        match Server::start(serve).await {
            Ok(server) => Ok(TestProxy::serving(server, dir)),
            Err(StartError::Refused { diagnostics, .. }) => Err(diagnostics),
            Err(e) => panic!("proxy did not start: {e:#}"),
        }
    }

    /// Serves what the Kubernetes API behind `kube` holds (`run --source kubernetes`).
    pub async fn start_kubernetes(kube: switchyard::source::kubernetes::KubeOptions) -> TestProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut serve = ServeOptions::new(dir.path());
        serve.kubernetes = Some(kube);
        match Server::start(serve).await {
            Ok(server) => TestProxy::serving(server, dir),
            Err(e) => panic!("proxy did not start: {e:#}"),
        }
    }

    fn serving(server: Server, dir: tempfile::TempDir) -> TestProxy {
        TestProxy {
            metrics: server.metrics.clone(),
            addr: server.proxy_addr,
            admin: server.admin_addr,
            reloader: server.reloader.clone(),
            proxy: server.proxy.clone(),
            server,
            dir,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Rewrites the config and reloads it through the real reload path.
    pub async fn rewrite(&self, yaml: &str) -> Result<switchyard::ReloadOutcome, Vec<Diagnostic>> {
        std::fs::write(self.config_path(), yaml).expect("write config");
        self.reloader.reload().await
    }
}

/// A ServiceEntry + DestinationRule for `host` (short name, namespace `default`) whose
/// endpoints are the given upstreams, labelled `version: <label>`.
pub fn service_yaml(host: &str, endpoints: &[(&str, SocketAddr)]) -> String {
    let mut eps = String::new();
    for (label, addr) in endpoints {
        eps.push_str(&format!(
            "  - address: {}\n    ports:\n      http: {}\n    labels:\n      version: {label}\n",
            addr.ip(),
            addr.port()
        ));
    }
    let mut subsets = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for (label, _) in endpoints {
        if seen.insert(*label) {
            subsets.push_str(&format!(
                "  - name: {label}\n    labels:\n      version: {label}\n"
            ));
        }
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {host}\nspec:\n  hosts:\n  - {host}.default.svc.cluster.local\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n  endpoints:\n{eps}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {host}\nspec:\n  host: {host}\n  subsets:\n{subsets}---\n"
    )
}
