//! A fake Kubernetes API server, in-process on 127.0.0.1, speaking the wire protocol a client
//! sees from kube-apiserver for the collections switchyard watches: `GET` a collection
//! (cluster-wide or `namespaces/NS/`) lists it with a resourceVersion, paged by `limit` and
//! `continue`; `?watch=true&resourceVersion=RV` streams JSON lines (ADDED, MODIFIED, DELETED,
//! BOOKMARK) of every change after RV, or one ERROR line with a 410 `Expired` Status when RV
//! is older than the last compaction. `GET` an object reads it; `PATCH` an object (or its
//! `/status` subresource) applies a JSON patch (`application/json-patch+json`: add, replace,
//! remove, test) or a JSON merge patch, answering 409 Conflict when the patched object names a
//! resourceVersion other than the current one and 422 when a `test` op fails, as
//! kube-apiserver does; a patch bumps the resourceVersion (and the generation, when the spec
//! changed) and is seen by every watch as MODIFIED. Tests change objects, cut open watches
//! mid-line, compact history, make a change land between a client's read and its patch, or
//! stop the server, and read back what the client asked for.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::body::{TestBody, body_channel, full_body};

/// Where a kind lives.
struct Kind {
    name: &'static str,
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    prefix: &'static str,
    api_version: &'static str,
    plural: &'static str,
    /// Built-in kinds' list items carry no apiVersion/kind; custom resources' do.
    built_in: bool,
    /// Cluster-scoped kinds have no namespace.
    namespaced: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "Service",
        prefix: "/api/v1",
        api_version: "v1",
        plural: "services",
        built_in: true,
        namespaced: true,
    },
    Kind {
        name: "Pod",
        prefix: "/api/v1",
        api_version: "v1",
        plural: "pods",
        built_in: true,
        namespaced: true,
    },
    Kind {
        name: "Event",
        prefix: "/api/v1",
        api_version: "v1",
        plural: "events",
        built_in: true,
        namespaced: true,
    },
    Kind {
        name: "EndpointSlice",
        prefix: "/apis/discovery.k8s.io/v1",
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        built_in: true,
        namespaced: true,
    },
    Kind {
        name: "VirtualService",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "virtualservices",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "DestinationRule",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "destinationrules",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "ServiceEntry",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "serviceentries",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "WorkloadEntry",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "workloadentries",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "Rollout",
        prefix: "/apis/argoproj.io/v1alpha1",
        api_version: "argoproj.io/v1alpha1",
        plural: "rollouts",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "AnalysisTemplate",
        prefix: "/apis/argoproj.io/v1alpha1",
        api_version: "argoproj.io/v1alpha1",
        plural: "analysistemplates",
        built_in: false,
        namespaced: true,
    },
    Kind {
        name: "ClusterAnalysisTemplate",
        prefix: "/apis/argoproj.io/v1alpha1",
        api_version: "argoproj.io/v1alpha1",
        plural: "clusteranalysistemplates",
        built_in: false,
        namespaced: false,
    },
];

const ISTIO_GROUP: &str = "networking.istio.io";
/// What Istio 1.22 on serves, preferred first.
const ISTIO_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// `/apis/networking.istio.io/VERSION/...` at a served version: the path at the stored
/// version (`v1`, which `KINDS` names) and the version; `Err` at an unserved one; `None` for
/// any other path.
fn istio_path(path: &str, served: &[&'static str]) -> Option<Result<(String, &'static str), ()>> {
    let rest = path.strip_prefix("/apis/networking.istio.io/")?;
    let (v, rest) = rest.split_once('/')?;
    Some(
        served
            .iter()
            .find(|s| **s == v)
            .map(|s| (format!("/apis/networking.istio.io/v1/{rest}"), *s))
            .ok_or(()),
    )
}

/// API discovery for networking.istio.io, as kube-apiserver writes it: `GET /apis/GROUP` is
/// an APIGroup (`versions[]` of `{groupVersion, version}`, `preferredVersion`), `GET
/// /apis/GROUP/VERSION` an APIResourceList of that version's resources (an uninstalled
/// kind's absent). 404 for the group when no version is served. `None`: not discovery.
fn discovery(path: &str, served: &[&'static str], shared: &Shared) -> Option<Response<TestBody>> {
    let rest = path.strip_prefix("/apis/networking.istio.io")?;
    let rest = rest.trim_end_matches('/');
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", format!("the server could not find {path}")),
        )
    };
    let gv = |v: &str| json!({"groupVersion": format!("{ISTIO_GROUP}/{v}"), "version": v});
    if rest.is_empty() {
        let Some(preferred) = served.first() else {
            return Some(not_found());
        };
        return Some(json_response(
            StatusCode::OK,
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": ISTIO_GROUP,
                "versions": served.iter().map(|v| gv(v)).collect::<Vec<_>>(),
                "preferredVersion": gv(preferred)}),
        ));
    }
    let v = rest.strip_prefix('/')?;
    if v.contains('/') {
        return None;
    }
    if !served.contains(&v) {
        return Some(not_found());
    }
    let missing = shared.missing.lock().unwrap_or_else(|e| e.into_inner());
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.prefix == "/apis/networking.istio.io/v1" && !missing.contains(k.plural))
        .map(|k| {
            json!({"name": k.plural, "singularName": k.name.to_ascii_lowercase(),
                "namespaced": k.namespaced, "kind": k.name,
                "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
                "categories": ["istio-io", "networking-istio-io"], "storageVersionHash": "0000000000="})
        })
        .collect();
    Some(json_response(
        StatusCode::OK,
        json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": format!("{ISTIO_GROUP}/{v}"), "resources": resources}),
    ))
}

/// A change made to a stored object just before the next PATCH of its kind is processed.
type Interference = Box<dyn FnOnce(&mut Value) + Send>;

#[derive(Clone)]
struct Event {
    rv: u64,
    plural: &'static str,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// plural → (namespace, name) → object.
    objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    history: Vec<Event>,
    /// A watch from a resourceVersion below this gets 410 Gone.
    compacted: u64,
    /// Bumped to cut every open watch.
    cut: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Carries the latest resourceVersion; watches wake on it.
    changed: watch::Sender<u64>,
    page_size: usize,
    bookmark_every: Duration,
    lists: AtomicU64,
    watches: AtomicU64,
    gone: AtomicU64,
    /// `namespace group/plural` of every collection asked for (`*` for all namespaces, `""`
    /// for the core group).
    requested: Mutex<std::collections::BTreeSet<String>>,
    /// Those asked for as PartialObjectMetadata (metadata only).
    metadata_only: Mutex<std::collections::BTreeSet<String>>,
    /// Plurals answered 404, as for a CRD that is not installed.
    missing: Mutex<std::collections::BTreeSet<&'static str>>,
    /// With TLS: the bearer token every request must carry (401 otherwise).
    token: Option<String>,
    unauthorized: AtomicU64,
    /// `verb namespace group/plural[/subresource]` of every request (`*`: all namespaces,
    /// `-`: cluster-scoped); verbs as RBAC names them (list, watch, get, patch).
    verbs: Mutex<std::collections::BTreeSet<String>>,
    /// Plural → the change to land before the next PATCH of that kind.
    interfere: Mutex<BTreeMap<&'static str, Interference>>,
    conflicts: AtomicU64,
    patches: AtomicU64,
    /// Creates answered 409 AlreadyExists.
    already_exists: AtomicU64,
    /// The versions of networking.istio.io served, preferred first (Istio 1.22 on: all three;
    /// before 1.22: no v1).
    istio_versions: Mutex<Vec<&'static str>>,
    /// `version/plural` of every networking.istio.io collection listed or watched.
    istio_asked: Mutex<std::collections::BTreeSet<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    dir: tempfile::TempDir,
    tls: Option<(tokio_rustls::TlsAcceptor, PathBuf)>,
}

impl FakeApiServer {
    /// Lists come back in pages of at most `page_size` items whatever `limit` asks, so every
    /// list of more than that many objects exercises `continue`.
    pub async fn start(page_size: usize) -> FakeApiServer {
        Self::start_with(page_size, None).await
    }

    /// As [`FakeApiServer::start`], over TLS with `pki`'s server certificate (for
    /// `localhost`), answering 401 to any request without `Authorization: Bearer TOKEN`.
    pub async fn start_tls(page_size: usize, pki: &super::tls::Pki, token: &str) -> FakeApiServer {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(false)));
        Self::start_with(
            page_size,
            Some((acceptor, pki.ca.clone(), token.to_string())),
        )
        .await
    }

    async fn start_with(
        page_size: usize,
        tls: Option<(tokio_rustls::TlsAcceptor, PathBuf, String)>,
    ) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API");
        let addr = listener.local_addr().expect("fake API address");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed,
            page_size: page_size.max(1),
            bookmark_every: Duration::from_millis(500),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            gone: AtomicU64::new(0),
            requested: Mutex::default(),
            metadata_only: Mutex::default(),
            missing: Mutex::default(),
            token: tls.as_ref().map(|t| t.2.clone()),
            unauthorized: AtomicU64::new(0),
            verbs: Mutex::default(),
            interfere: Mutex::default(),
            conflicts: AtomicU64::new(0),
            patches: AtomicU64::new(0),
            already_exists: AtomicU64::new(0),
            istio_versions: Mutex::new(ISTIO_VERSIONS.to_vec()),
            istio_asked: Mutex::default(),
        });
        let tls = tls.map(|(acceptor, ca, _)| (acceptor, ca));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            listener,
            shared.clone(),
            tls.as_ref().map(|t| t.0.clone()),
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let server = FakeApiServer {
            addr,
            shared,
            tasks,
            dir,
            tls,
        };
        let token = server.shared.token.clone().unwrap_or_default();
        std::fs::write(server.kubeconfig(), server.kubeconfig_yaml(&token))
            .expect("write kubeconfig");
        server
    }

    /// A kubeconfig pointing at this server: plain HTTP, or HTTPS to `localhost` trusting
    /// the test CA, with the bearer token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A kubeconfig for this server presenting `token` (to see a wrong one refused).
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join("kubeconfig-other-token");
        std::fs::write(&path, self.kubeconfig_yaml(token)).expect("write kubeconfig");
        path
    }

    fn kubeconfig_yaml(&self, token: &str) -> String {
        let cluster = match &self.tls {
            Some((_, ca)) => format!(
                "server: https://localhost:{}\n    certificate-authority: {}",
                self.addr.port(),
                ca.display()
            ),
            None => format!("server: http://{}", self.addr),
        };
        let user = if token.is_empty() {
            "{}".to_string()
        } else {
            format!("\n    token: {token}")
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    {cluster}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {user}\n"
        )
    }

    /// Creates or replaces an object (its `apiVersion`/`kind` pick the collection), as a
    /// server-side apply does: a new resourceVersion, ADDED or MODIFIED to every watch.
    pub fn apply(&self, object: Value) -> u64 {
        let rv = apply_locked(&mut self.shared.lock(), object);
        self.shared.changed.send_replace(rv);
        rv
    }

    pub fn delete(&self, kind: &str, ns: &str, name: &str) {
        let plural = lookup_kind(kind).plural;
        let rv = {
            let mut st = self.shared.lock();
            let Some(mut object) = st
                .objects
                .get_mut(plural)
                .and_then(|c| c.remove(&(ns.to_string(), name.to_string())))
            else {
                return;
            };
            st.rv += 1;
            let rv = st.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.history.push(Event {
                rv,
                plural,
                namespace: ns.to_string(),
                kind: "DELETED",
                object,
            });
            rv
        };
        self.shared.changed.send_replace(rv);
    }

    /// Cuts every open watch in the middle of a line, as a dropped connection or a restarted
    /// apiserver does; history is kept, so a client that rewatches from its last
    /// resourceVersion misses nothing.
    pub fn cut_watches(&self) {
        self.shared.lock().cut += 1;
        self.shared.changed.send_modify(|_| {});
    }

    /// Cuts every open watch, then applies `objects` and compacts history past them, all
    /// before any watch can see them: a client can only learn of them by relisting after the
    /// 410 Gone its rewatch gets.
    pub fn cut_and_compact_after(&self, objects: Vec<Value>) {
        let mut st = self.shared.lock();
        st.cut += 1;
        for o in objects {
            apply_locked(&mut st, o);
        }
        st.compacted = st.rv;
        drop(st);
        self.shared.changed.send_modify(|_| {});
    }

    /// (lists, watches, 410s answered) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.shared.lists.load(Ordering::SeqCst),
            self.shared.watches.load(Ordering::SeqCst),
            self.shared.gone.load(Ordering::SeqCst),
        )
    }

    /// `namespace group/plural` of every collection a client listed or watched (`*`: in all
    /// namespaces).
    pub fn requested(&self) -> std::collections::BTreeSet<String> {
        self.shared
            .requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers 404 for `kind`'s collection from now on, as when its CRD is not installed.
    pub fn uninstall(&self, kind: &str) {
        self.shared
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lookup_kind(kind).plural);
    }

    /// Serves networking.istio.io at `versions` only (preferred first), as a control plane
    /// older than Istio 1.22 does with `["v1beta1", "v1alpha3"]`; `[]`: the group not at all.
    pub fn serve_istio_versions(&self, versions: &[&'static str]) {
        *self
            .shared
            .istio_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = versions.to_vec();
    }

    /// `version/plural` of every networking.istio.io collection a client listed or watched.
    pub fn istio_asked(&self) -> std::collections::BTreeSet<String> {
        self.shared
            .istio_asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `group/plural` of the collections a client asked for as metadata only.
    pub fn metadata_only(&self) -> std::collections::BTreeSet<String> {
        self.shared
            .metadata_only
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops answering: the listener closes and every connection drops.
    pub async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Serves again on the same port (history and objects kept, as after an apiserver
    /// restart backed by the same etcd).
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind fake API");
        self.tasks.spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.tls.as_ref().map(|t| t.0.clone()),
        ));
    }

    /// The object as stored now.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let k = lookup_kind(kind);
        let ns = if k.namespaced { ns } else { "" };
        self.shared
            .lock()
            .objects
            .get(k.plural)
            .and_then(|c| c.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Every object of `kind` stored now.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .get(lookup_kind(kind).plural)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every version the object has had, oldest first (ADDED and MODIFIED events).
    pub fn versions(&self, kind: &str, ns: &str, name: &str) -> Vec<Value> {
        let plural = lookup_kind(kind).plural;
        self.shared
            .lock()
            .history
            .iter()
            .filter(|e| {
                e.plural == plural
                    && e.kind != "DELETED"
                    && e.object["metadata"]["name"] == name
                    && e.namespace == ns
            })
            .map(|e| e.object.clone())
            .collect()
    }

    /// Lands `change` on the stored object a PATCH names, just before the next PATCH of
    /// `kind` is processed (as another client's edit between this client's read and its
    /// patch): a new resourceVersion, MODIFIED to every watch.
    pub fn interfere_before_next_patch(
        &self,
        kind: &str,
        change: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.shared
            .interfere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lookup_kind(kind).plural, Box::new(change));
    }

    /// (PATCH requests, of them answered 409 Conflict).
    pub fn patch_counts(&self) -> (u64, u64) {
        (
            self.shared.patches.load(Ordering::SeqCst),
            self.shared.conflicts.load(Ordering::SeqCst),
        )
    }

    /// Creates answered 409 AlreadyExists (the name was taken).
    pub fn already_exists(&self) -> u64 {
        self.shared.already_exists.load(Ordering::SeqCst)
    }

    /// `verb namespace group/plural[/subresource]` of every request a client made.
    pub fn verbs(&self) -> std::collections::BTreeSet<String> {
        self.shared
            .verbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests answered 401 (no or a wrong bearer token).
    pub fn unauthorized(&self) -> u64 {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }
}

fn apply_locked(st: &mut State, mut object: Value) -> u64 {
    let kind = object["kind"].as_str().expect("kind").to_string();
    let k = lookup_kind(&kind);
    let plural = k.plural;
    let ns = if k.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    st.rv += 1;
    let rv = st.rv;
    let existing = st
        .objects
        .get(plural)
        .and_then(|c| c.get(&(ns.clone(), name.clone())))
        .cloned();
    let meta = &mut object["metadata"];
    if k.namespaced {
        meta["namespace"] = json!(ns);
    }
    meta["resourceVersion"] = json!(rv.to_string());
    match &existing {
        Some(old) => {
            meta["uid"] = old["metadata"]["uid"].clone();
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            meta["generation"] = json!(old["metadata"]["generation"].as_u64().unwrap_or(1) + 1);
        }
        None => {
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
            meta["creationTimestamp"] = json!(format!(
                "2026-12-07T{:02}:{:02}:{:02}Z",
                rv / 3600 % 24,
                rv / 60 % 60,
                rv % 60
            ));
            meta["generation"] = json!(1);
        }
    }
    st.objects
        .entry(plural)
        .or_default()
        .insert((ns.clone(), name), object.clone());
    st.history.push(Event {
        rv,
        plural,
        namespace: ns,
        kind: if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        },
        object,
    });
    rv
}

fn lookup_kind(kind: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.name == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind}"))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = server.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = server.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

/// What a request path names.
struct Target {
    kind: &'static Kind,
    ns: Option<String>,
    /// An object's name, else the collection.
    name: Option<String>,
    /// `status`, for the status subresource.
    subresource: Option<String>,
}

/// `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or
/// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
fn parse_path(path: &str) -> Option<Target> {
    KINDS.iter().find_map(|k| {
        let rest = path.strip_prefix(k.prefix)?.strip_prefix('/')?;
        let (ns, rest) = match rest.strip_prefix("namespaces/") {
            Some(r) => {
                let (ns, rest) = r.split_once('/')?;
                (Some(ns.to_string()), rest)
            }
            None => (None, rest),
        };
        let mut parts = rest.split('/');
        let plural = parts.next()?;
        let name = parts.next().map(str::to_string);
        let subresource = parts.next().map(str::to_string);
        (plural == k.plural && parts.next().is_none()).then_some(Target {
            kind: k,
            ns,
            name,
            subresource,
        })
    })
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn json_response(status: StatusCode, body: Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(body.to_string()))
        .expect("response")
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<TestBody> {
    if let Some(token) = &shared.token {
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented != Some(format!("Bearer {token}").as_str()) {
            shared.unauthorized.fetch_add(1, Ordering::SeqCst);
            return json_response(
                StatusCode::UNAUTHORIZED,
                status(401, "Unauthorized", "Unauthorized".to_string()),
            );
        }
    }
    let served: Vec<&'static str> = shared
        .istio_versions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(doc) = discovery(req.uri().path(), &served, &shared) {
        return doc;
    }
    // An Istio kind at a served version is the one stored object converted (apiVersion only:
    // the spec is the same at every version); at an unserved one, 404.
    let (path, istio_version) = match istio_path(req.uri().path(), &served) {
        Some(Ok((path, v))) => (path, Some(v)),
        Some(Err(())) => (String::new(), None),
        None => (req.uri().path().to_string(), None),
    };
    let found = parse_path(&path).filter(|t| {
        !shared
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(t.kind.plural)
    });
    let Some(Target {
        kind,
        ns,
        name,
        subresource,
    }) = found
    else {
        return json_response(
            StatusCode::NOT_FOUND,
            status(
                404,
                "NotFound",
                format!("the server could not find {}", req.uri().path()),
            ),
        );
    };
    let group = kind.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let collection = format!("{group}/{}", kind.plural);
    let q = query(&req);
    let verb = match (req.method().as_str(), &name) {
        ("GET", None) if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) => {
            "watch"
        }
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("PATCH", Some(_)) => "patch",
        ("POST", None) => "create",
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                status(
                    405,
                    "MethodNotAllowed",
                    format!("{} is not served by the fake", req.method()),
                ),
            );
        }
    };
    let scope = match (&ns, kind.namespaced) {
        (Some(ns), _) => ns.clone(),
        (None, true) => "*".to_string(),
        (None, false) => "-".to_string(),
    };
    let sub = subresource
        .as_ref()
        .map_or(String::new(), |s| format!("/{s}"));
    shared
        .verbs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(format!("{verb} {scope} {collection}{sub}"));
    if let Some(name) = name {
        let ns = ns.unwrap_or_default();
        return match verb {
            "get" => get_object(kind, &ns, &name, &shared),
            _ => patch_object(req, kind, ns, name, subresource, shared).await,
        };
    }
    // `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.
    let metadata_only = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    if metadata_only {
        shared
            .metadata_only
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(collection.clone());
    }
    shared
        .requested
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(format!("{} {collection}", ns.as_deref().unwrap_or("*")));
    if let Some(v) = istio_version {
        shared
            .istio_asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{v}/{}", kind.plural));
    }
    let shape = Shape {
        kind,
        metadata_only,
        istio_version,
    };
    if verb == "create" {
        return create_object(req, kind, ns.unwrap_or_default(), shared).await;
    }
    if verb == "watch" {
        shared.watches.fetch_add(1, Ordering::SeqCst);
        return watch_response(shape, ns, &q, shared);
    }
    shared.lists.fetch_add(1, Ordering::SeqCst);
    let st = shared.lock();
    let (list_rv, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match token
            .split_once('.')
            .and_then(|(rv, off)| Some((rv.parse::<u64>().ok()?, off.parse::<usize>().ok()?)))
        {
            Some(t) => t,
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    status(
                        400,
                        "BadRequest",
                        format!("invalid continue token {token:?}"),
                    ),
                );
            }
        },
        None => (st.rv, 0),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX)
        .min(shared.page_size);
    let all: Vec<Value> = st
        .objects
        .get(kind.plural)
        .into_iter()
        .flat_map(|c| c.iter())
        .filter(|((n, _), _)| ns.as_ref().is_none_or(|want| want == n))
        .map(|(_, o)| shape.list_item(o))
        .collect();
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if offset + page.len() < all.len() {
        metadata["continue"] = json!(format!("{list_rv}.{}", offset + page.len()));
        metadata["remainingItemCount"] = json!(all.len() - offset - page.len());
    }
    json_response(
        StatusCode::OK,
        json!({"kind": format!("{}List", shape.kind_name()), "apiVersion": shape.api_version(),
               "metadata": metadata, "items": page}),
    )
}

/// How objects of one collection are written for one request.
#[derive(Clone, Copy)]
struct Shape {
    kind: &'static Kind,
    /// Only `metadata`, as kind PartialObjectMetadata (meta.k8s.io/v1).
    metadata_only: bool,
    /// The networking.istio.io version asked for, when not the stored one.
    istio_version: Option<&'static str>,
}

impl Shape {
    fn kind_name(&self) -> &'static str {
        if self.metadata_only {
            "PartialObjectMetadata"
        } else {
            self.kind.name
        }
    }

    fn api_version(&self) -> String {
        match (self.metadata_only, self.istio_version) {
            (true, _) => "meta.k8s.io/v1".to_string(),
            (false, Some(v)) => format!("{ISTIO_GROUP}/{v}"),
            (false, None) => self.kind.api_version.to_string(),
        }
    }

    /// An object as a watch event carries it: with its apiVersion and kind.
    fn object(&self, o: &Value) -> Value {
        let mut o = if self.metadata_only {
            json!({"metadata": o["metadata"].clone()})
        } else {
            o.clone()
        };
        o["apiVersion"] = json!(self.api_version());
        o["kind"] = json!(self.kind_name());
        o
    }

    /// Built-in kinds' list items carry no apiVersion/kind (the list does); custom
    /// resources' and partial metadata items do.
    fn list_item(&self, o: &Value) -> Value {
        let mut o = self.object(o);
        if self.kind.built_in
            && !self.metadata_only
            && let Some(m) = o.as_object_mut()
        {
            m.remove("apiVersion");
            m.remove("kind");
        }
        o
    }
}

fn watch_response(
    shape: Shape,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
    shared: Arc<Shared>,
) -> Response<TestBody> {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let (tx, body) = body_channel(64);
    tokio::spawn(async move {
        let mut rx = shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let (compacted, cut_at) = {
            let st = shared.lock();
            (st.compacted, st.cut)
        };
        if from != 0 && from < compacted {
            shared.gone.fetch_add(1, Ordering::SeqCst);
            let line = json!({"type": "ERROR", "object": status(410, "Expired",
                format!("too old resource version: {from} ({compacted})"))});
            let _ = tx.send_data(format!("{line}\n")).await;
            return;
        }
        let mut last = from;
        loop {
            let taken = {
                let st = shared.lock();
                (st.cut == cut_at).then(|| {
                    let events: Vec<Event> = st
                        .history
                        .iter()
                        .filter(|e| {
                            e.rv > last
                                && e.plural == shape.kind.plural
                                && ns.as_ref().is_none_or(|n| *n == e.namespace)
                        })
                        .cloned()
                        .collect();
                    (events, st.rv)
                })
            };
            let Some((events, now_rv)) = taken else {
                // Half a line, then the connection drops.
                let _ = tx
                    .send_data(r#"{"type":"MODIFIED","object":{"kind":"#)
                    .await;
                tx.abort().await;
                return;
            };
            for e in events {
                let line = json!({"type": e.kind, "object": shape.object(&e.object)});
                if !tx.send_data(format!("{line}\n")).await {
                    return;
                }
                last = e.rv;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(shared.bookmark_every), if bookmarks => {
                    if now_rv > last {
                        last = now_rv;
                    }
                    let line = json!({"type": "BOOKMARK", "object": {"kind": shape.kind_name(), "apiVersion": shape.api_version(),
                        "metadata": {"resourceVersion": last.to_string()}}});
                    if !tx.send_data(format!("{line}\n")).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body)
        .expect("response")
}

fn not_found(kind: &Kind, name: &str) -> Response<TestBody> {
    let group = kind.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    json_response(
        StatusCode::NOT_FOUND,
        status(
            404,
            "NotFound",
            format!("{}.{group} \"{name}\" not found", kind.plural),
        ),
    )
}

fn get_object(kind: &'static Kind, ns: &str, name: &str, shared: &Shared) -> Response<TestBody> {
    let st = shared.lock();
    match st
        .objects
        .get(kind.plural)
        .and_then(|c| c.get(&(ns.to_string(), name.to_string())))
    {
        Some(o) => json_response(
            StatusCode::OK,
            Shape {
                kind,
                metadata_only: false,
                istio_version: None,
            }
            .object(o),
        ),
        None => not_found(kind, name),
    }
}

async fn patch_object(
    req: Request<Incoming>,
    kind: &'static Kind,
    ns: String,
    name: String,
    subresource: Option<String>,
    shared: Arc<Shared>,
) -> Response<TestBody> {
    use http_body_util::BodyExt;
    shared.patches.fetch_add(1, Ordering::SeqCst);
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(body) = req.into_body().collect().await else {
        return json_response(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "unreadable body".into()),
        );
    };
    let Ok(patch) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "the patch is not JSON".into()),
        );
    };
    let key = (ns.clone(), name.clone());
    if let Some(change) = shared
        .interfere
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(kind.plural)
    {
        let mut st = shared.lock();
        if let Some(mut o) = st
            .objects
            .get(kind.plural)
            .and_then(|c| c.get(&key))
            .cloned()
        {
            change(&mut o);
            let rv = apply_locked(&mut st, o);
            drop(st);
            shared.changed.send_replace(rv);
        }
    }
    let mut st = shared.lock();
    let Some(current) = st
        .objects
        .get(kind.plural)
        .and_then(|c| c.get(&key))
        .cloned()
    else {
        drop(st);
        return not_found(kind, &name);
    };
    let patched = match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => json_patch(current.clone(), &patch),
        "application/merge-patch+json" => {
            let mut o = current.clone();
            merge_patch(&mut o, &patch);
            Ok(o)
        }
        other => {
            return json_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                status(
                    415,
                    "UnsupportedMediaType",
                    format!("the fake takes json-patch and merge-patch, not {other:?}"),
                ),
            );
        }
    };
    let mut patched = match patched {
        Ok(p) => p,
        Err(e) => {
            return json_response(StatusCode::UNPROCESSABLE_ENTITY, status(422, "Invalid", e));
        }
    };
    // A resourceVersion in the patched object is a precondition (kube-apiserver's
    // optimistic concurrency): another one than the stored one is a conflict.
    let current_rv = current["metadata"]["resourceVersion"].clone();
    let asked_rv = patched["metadata"]["resourceVersion"].clone();
    if !asked_rv.is_null() && asked_rv != current_rv {
        shared.conflicts.fetch_add(1, Ordering::SeqCst);
        let group = kind.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        return json_response(
            StatusCode::CONFLICT,
            status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}.{group} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural
                ),
            ),
        );
    }
    // With a status subresource, the main resource ignores status and /status ignores
    // everything else.
    if subresource.as_deref() == Some("status") {
        let mut o = current.clone();
        o["status"] = patched["status"].take();
        patched = o;
    } else {
        patched["status"] = current["status"].clone();
    }
    if let Some(m) = patched.as_object_mut()
        && m.get("status").is_some_and(Value::is_null)
    {
        m.remove("status");
    }
    patched["metadata"]["generation"] = current["metadata"]["generation"].clone();
    let spec_changed = patched["spec"] != current["spec"];
    let rv = apply_locked(&mut st, patched);
    let stored = st
        .objects
        .get(kind.plural)
        .and_then(|c| c.get(&key))
        .cloned();
    if !spec_changed
        && let Some(o) = st
            .objects
            .get_mut(kind.plural)
            .and_then(|c| c.get_mut(&key))
    {
        // apply_locked bumps the generation for any write; only a spec change does.
        o["metadata"]["generation"] = current["metadata"]["generation"].clone();
        if let Some(e) = st.history.last_mut() {
            e.object["metadata"]["generation"] = current["metadata"]["generation"].clone();
        }
    }
    let stored = st
        .objects
        .get(kind.plural)
        .and_then(|c| c.get(&key))
        .cloned()
        .or(stored)
        .unwrap_or(Value::Null);
    drop(st);
    shared.changed.send_replace(rv);
    json_response(
        StatusCode::OK,
        Shape {
            kind,
            metadata_only: false,
            istio_version: None,
        }
        .object(&stored),
    )
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902 add, replace, remove and test over RFC 6901 pointers.
fn json_patch(mut doc: Value, ops: &Value) -> Result<Value, String> {
    let ops = ops.as_array().ok_or("a JSON patch is an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an op without a path")?;
        let value = op["value"].clone();
        match op["op"].as_str() {
            Some("test") => {
                if doc.pointer(path) != Some(&value) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            Some("replace") => {
                let at = doc.pointer_mut(path).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing path: {path}")
                })?;
                *at = value;
            }
            Some(o @ ("add" | "remove")) => {
                let (parent, last) = path.rsplit_once('/').ok_or("a bad path")?;
                let last = last.replace("~1", "/").replace("~0", "~");
                let container = doc.pointer_mut(parent).ok_or_else(|| {
                    format!("{o} operation does not apply: doc is missing path: {parent}")
                })?;
                match (container, o) {
                    (Value::Object(m), "add") => {
                        m.insert(last, value);
                    }
                    (Value::Object(m), _) => {
                        m.remove(&last)
                            .ok_or_else(|| format!("no {path} to remove"))?;
                    }
                    (Value::Array(a), "add") => {
                        let i = if last == "-" {
                            a.len()
                        } else {
                            last.parse().map_err(|_| "a bad index")?
                        };
                        if i > a.len() {
                            return Err(format!(
                                "add operation does not apply: {path} is out of range"
                            ));
                        }
                        a.insert(i, value);
                    }
                    (Value::Array(a), _) => {
                        let i: usize = last.parse().map_err(|_| "a bad index")?;
                        if i >= a.len() {
                            return Err(format!("no {path} to remove"));
                        }
                        a.remove(i);
                    }
                    _ => return Err(format!("{o}: {parent} is not a container")),
                }
            }
            other => return Err(format!("the fake does not do op {other:?}")),
        }
    }
    Ok(doc)
}

/// `POST` to a collection: creates the object (201), or 409 AlreadyExists for a taken name.
async fn create_object(
    req: Request<Incoming>,
    kind: &'static Kind,
    ns: String,
    shared: Arc<Shared>,
) -> Response<TestBody> {
    use http_body_util::BodyExt;
    let Ok(body) = req.into_body().collect().await else {
        return json_response(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "unreadable body".into()),
        );
    };
    let Ok(mut object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "the object is not JSON".into()),
        );
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            status(422, "Invalid", "metadata.name: Required value".into()),
        );
    };
    object["apiVersion"] = json!(kind.api_version);
    object["kind"] = json!(kind.name);
    object["metadata"]["namespace"] = json!(ns);
    let mut st = shared.lock();
    if st
        .objects
        .get(kind.plural)
        .is_some_and(|c| c.contains_key(&(ns.clone(), name.clone())))
    {
        shared.already_exists.fetch_add(1, Ordering::SeqCst);
        return json_response(
            StatusCode::CONFLICT,
            status(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
            ),
        );
    }
    let rv = apply_locked(&mut st, object);
    let stored = st
        .objects
        .get(kind.plural)
        .and_then(|c| c.get(&(ns, name)))
        .cloned()
        .unwrap_or(Value::Null);
    drop(st);
    shared.changed.send_replace(rv);
    json_response(
        StatusCode::CREATED,
        Shape {
            kind,
            metadata_only: false,
            istio_version: None,
        }
        .object(&stored),
    )
}

/// The `web` Service in `default` (selector `app: web`, port 80 → 8080) as kube-apiserver
/// returns it: the Service both the source's and the rollout controller's tests route to.
pub fn web_service() -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"],
            "selector": {"app": "web"}, "sessionAffinity": "None",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
        "status": {"loadBalancer": {}}})
}
