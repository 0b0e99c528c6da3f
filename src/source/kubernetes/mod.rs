//! The Kubernetes API as a config source (`run --source kubernetes`): the Istio resources
//! (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry) and the Services whose
//! EndpointSlices and Pods give the endpoints, watched through reflectors and published
//! through the same validate → compile → swap as the file source. A change is debounced; a
//! config with an error is refused and logged (kind/namespace/name, field path) while the last
//! good table keeps serving (and a Warning Event names it on the object, see `events`);
//! losing the API server only stops updates.

mod admit;
pub(crate) mod discover;
pub mod events;
pub(crate) mod reflect;
pub mod services;
pub(crate) mod snapshot;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{Notify, watch};

use crate::config::Resources;
use crate::config::scope::ROOT_NAMESPACE;
use crate::reload::{Reloader, Snapshot, Trigger};
pub use admit::Screen;
use reflect::Signals;
pub use snapshot::Stores;

/// The Istio kinds read, each at the best version the server serves (see `discover`).
const ISTIO_KINDS: [(&str, &str); 4] = [
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("ServiceEntry", "serviceentries"),
    ("WorkloadEntry", "workloadentries"),
];
pub(crate) const ISTIO_GROUP: &str = "networking.istio.io";
/// What Istio 1.22 on serves; the rollout controller patches VirtualServices at it.
pub(crate) const ISTIO_VERSION: &str = "v1";

#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// `None`: the in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch; empty: all (a ClusterRole). Istio resources are also read from
    /// `istio-system`, the root namespace.
    pub namespaces: Vec<String>,
    /// A burst of changes is applied once, this long after the first of them.
    pub debounce: Duration,
    /// How long the first list of every kind may take before `run` gives up.
    pub sync_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            kubeconfig: None,
            namespaces: Vec::new(),
            debounce: Duration::from_millis(50),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes credentials: neither an in-cluster service account nor a kubeconfig")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes API client")]
    Client(#[source] kube::Error),
    #[error(
        "the first list did not complete within {0:?} for: {list} (are the Istio CRDs installed, and does the RBAC allow list/watch?)",
        list = .1.join(", ")
    )]
    SyncTimeout(Duration, Vec<String>),
    #[error(
        "the API server did not serve the API group {group} within {timeout:?} (are the Istio CRDs installed?)"
    )]
    GroupNotServed {
        group: &'static str,
        timeout: Duration,
    },
}

/// A running source: reflectors filling stores. Dropping it stops them.
pub struct KubeSource {
    stores: Stores,
    admitted: Arc<Mutex<admit::Admitted>>,
    changed: Arc<Notify>,
    synced: watch::Receiver<BTreeSet<String>>,
    /// Every reflector, by what it watches.
    reflectors: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    opts: KubeOptions,
    /// `sync_timeout` counts from here: discovery and the first lists share it.
    started: tokio::time::Instant,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeSource {
    /// Connects, discovers which version of each Istio kind the server serves (retrying
    /// within `sync_timeout`), and starts every reflector.
    pub async fn start(opts: KubeOptions) -> Result<KubeSource, KubeError> {
        let started = tokio::time::Instant::now();
        let client = client(opts.kubeconfig.as_deref()).await?;
        let plurals: Vec<&str> = ISTIO_KINDS.iter().map(|(_, p)| *p).collect();
        let versions = discover::istio_versions(
            &client,
            &plurals,
            started + opts.sync_timeout,
            opts.sync_timeout,
        )
        .await?;
        for ((kind, _), v) in ISTIO_KINDS.iter().zip(&versions) {
            tracing::info!(kind, api_version = %format!("{ISTIO_GROUP}/{v}"), "reading Istio kind");
        }
        Ok(Self::with_client(client, opts, started, &versions))
    }

    fn with_client(
        client: Client,
        opts: KubeOptions,
        started: tokio::time::Instant,
        versions: &[String],
    ) -> KubeSource {
        let changed = Arc::new(Notify::new());
        let (synced_tx, synced) = watch::channel(BTreeSet::new());
        let mut reflectors = Vec::new();
        let signals = Signals {
            changed: changed.clone(),
            synced: synced_tx,
        };
        let mut stores = Stores::default();
        let mut tasks = Vec::new();
        let scopes: Vec<Option<&str>> = if opts.namespaces.is_empty() {
            vec![None]
        } else {
            opts.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut istio_scopes = scopes.clone();
        if !opts.namespaces.is_empty() && !opts.namespaces.iter().any(|n| n == ROOT_NAMESPACE) {
            istio_scopes.push(Some(ROOT_NAMESPACE));
        }
        let mut shown = |kind: &str, ns: Option<&str>| {
            let what = match ns {
                Some(ns) => format!("{kind} in {ns}"),
                None => format!("{kind} in all namespaces"),
            };
            reflectors.push(what.clone());
            what
        };
        for ((kind, plural), version) in ISTIO_KINDS.into_iter().zip(versions) {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(ISTIO_GROUP, version, kind),
                plural,
            );
            for ns in &istio_scopes {
                let api: Api<DynamicObject> = match ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let (store, task) =
                    reflect::spawn(api, ar.clone(), shown(kind, *ns), signals.clone(), keep);
                stores.istio.push((ar.clone(), store));
                tasks.push(task);
            }
        }
        for ns in &scopes {
            let mut watch = |what: &str| shown(what, *ns);
            let (store, task) =
                watch_builtin::<Service>(&client, *ns, watch("Service"), &signals, keep);
            stores.services.push(store);
            tasks.push(task);
            let (store, task) = watch_builtin::<EndpointSlice>(
                &client,
                *ns,
                watch("EndpointSlice"),
                &signals,
                keep,
            );
            stores.slices.push(store);
            tasks.push(task);
            // Whole Pods, as no narrower read has a Pod's IP and readiness (a ServiceEntry's
            // workloadSelector makes endpoints of them); trimmed to labels, IP, Ready and
            // named container ports before they are stored, as Pods of a cluster-wide watch
            // would otherwise cost the most memory.
            let (store, task) =
                watch_builtin::<Pod>(&client, *ns, watch("Pod"), &signals, services::trim_pod);
            stores.pods.push(store);
            tasks.push(task);
        }
        // Refused objects become Events (events.rs); the task ends with the source.
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        tasks.push(events::spawn(client.clone(), stores.clone(), events_rx));
        let mut admitted = admit::Admitted::default();
        admitted.events = Some(events_tx);
        KubeSource {
            stores,
            admitted: Arc::new(Mutex::new(admitted)),
            changed,
            synced,
            reflectors,
            tasks,
            opts,
            started,
        }
    }

    /// Waits until every reflector has completed its first list.
    pub async fn synced(&self) -> Result<(), KubeError> {
        let mut rx = self.synced.clone();
        let want = self.reflectors.len();
        let wait = rx.wait_for(|done| done.len() >= want);
        let left = self
            .opts
            .sync_timeout
            .saturating_sub(self.started.elapsed());
        match tokio::time::timeout(left, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let done = self.synced.borrow().clone();
                let pending = self
                    .reflectors
                    .iter()
                    .filter(|r| !done.contains(*r))
                    .cloned()
                    .collect();
                Err(KubeError::SyncTimeout(self.opts.sync_timeout, pending))
            }
        }
    }

    /// What the stores hold now, as resources for a proxy judged by `screen`, each object
    /// with an error swapped for its last served version (see `admit`). The first load,
    /// `POST /reload` and SIGHUP read through it.
    pub fn snapshot(&self, screen: Screen) -> Snapshot {
        let stores = self.stores.clone();
        let admitted = self.admitted.clone();
        Arc::new(move || screened(&stores, &admitted, &screen))
    }

    /// Records `res` as served (the first load, once it is).
    pub fn served(&self, res: &Resources) {
        lock(&self.admitted).served(res);
    }

    /// Applies every change from now on: a burst is debounced, read from the stores, and
    /// handed to the reloader, which refuses (and logs) a config with an error.
    pub fn publish(&self, reloader: Arc<Reloader>, screen: Screen) -> tokio::task::JoinHandle<()> {
        let changed = self.changed.clone();
        let debounce = self.opts.debounce;
        let snapshot = self.snapshot(screen);
        let admitted = self.admitted.clone();
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                tokio::time::sleep(debounce).await;
                let s = snapshot.clone();
                let Ok(res) = tokio::task::spawn_blocking(move || s()).await else {
                    continue;
                };
                // A watch restart relists objects that did not change: nothing to build.
                if reloader.last_attempted_hash().as_deref() == Some(res.content_hash.as_str()) {
                    continue;
                }
                let kept = res.clone();
                if reloader.apply(res, Trigger::Kubernetes).await.is_ok() {
                    lock(&admitted).served(&kept);
                }
            }
        })
    }
}

/// A client from `kubeconfig`, else the in-cluster service account (or `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::infer().await.map_err(KubeError::Infer)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

fn lock(m: &Mutex<admit::Admitted>) -> std::sync::MutexGuard<'_, admit::Admitted> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn screened(stores: &Stores, admitted: &Mutex<admit::Admitted>, screen: &Screen) -> Resources {
    let mut res = stores.resources(&crate::config::LoadOptions {
        default_namespace: screen.identity.namespace.clone(),
    });
    lock(admitted).screen(screen, &mut res);
    res
}

/// Stores an object whole.
fn keep<K>(_: &mut K) {}

/// Starts a reflector over a built-in namespaced kind, in `ns` or in all namespaces.
fn watch_builtin<K>(
    client: &Client,
    ns: Option<&str>,
    what: String,
    signals: &Signals,
    trim: fn(&mut K),
) -> (
    kube::runtime::reflector::Store<K>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect::spawn(api(client, ns), (), what, signals.clone(), trim)
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
