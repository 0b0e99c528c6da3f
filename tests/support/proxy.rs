//! The real proxy, in-process: the same `Reloader`, `Proxy`, listener and admin the binary
//! runs, bound to 127.0.0.1:0, over a config written to a temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use switchyard::admin::Admin;
use switchyard::config::ProxyIdentity;
use switchyard::proxy::Proxy;
use switchyard::proxy::server::{Limits, ProxyListener};
use switchyard::route::OutboundPolicy;
use switchyard::upstream::PoolRegistry;
use switchyard::{Diagnostic, ReloadContext, Reloader};

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
    pub listener: Option<ProxyListener>,
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
        let pools = Arc::new(PoolRegistry::default());
        let metrics = Arc::new(switchyard::metrics::Registry::new(
            switchyard::metrics::SourceLabels::new(
                &opts.identity.workload,
                &opts.identity.namespace,
                &opts.identity.labels,
            ),
            opts.reporter,
        ));
        let ctx = ReloadContext {
            path: dir.path().to_path_buf(),
            identity: opts.identity,
            outbound_policy: opts.outbound_policy,
            istio_mutual_as_plaintext: false,
            pools: pools.clone(),
            metrics: metrics.clone(),
        };
        let (reloader, _warnings) = Reloader::start(ctx).await?;
        let reloader = Arc::new(reloader);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mut proxy = Proxy::new(reloader.table.clone(), pools, metrics.clone());
        if let Some((path, format)) = &opts.access_log {
            proxy.access_log.store(Some(std::sync::Arc::new(
                switchyard::access_log::AccessLog::start(
                    switchyard::access_log::Sink::File(path.clone()),
                    *format,
                    metrics.clone(),
                )
                .expect("access log"),
            )));
        }
        proxy.own_addrs.push(addr);
        let admin_listener = if opts.admin {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind admin"),
            )
        } else {
            None
        };
        if let Some(l) = &admin_listener {
            proxy.own_addrs.push(l.local_addr().expect("admin addr"));
        }
        let proxy = Arc::new(proxy);
        let admin = admin_listener.map(|l| {
            Arc::new(Admin {
                reloader: reloader.clone(),
                state: proxy.state.clone(),
                quit: Arc::new(tokio::sync::Notify::new()),
                started: Instant::now(),
                metrics: metrics.clone(),
                set_log_level: None,
            })
            .spawn(l)
            .expect("admin spawn")
        });
        let listener =
            ProxyListener::spawn(listener, proxy.clone(), opts.limits).expect("listener");
        Ok(TestProxy {
            metrics,
            addr,
            admin,
            reloader,
            proxy,
            listener: Some(listener),
            dir,
        })
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
