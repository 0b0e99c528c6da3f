//! A fake Kubernetes API server, in-process on 127.0.0.1, speaking the wire protocol a client
//! sees from kube-apiserver for the collections switchyard watches: `GET` a collection
//! (cluster-wide or `namespaces/NS/`) lists it with a resourceVersion, paged by `limit` and
//! `continue`; `?watch=true&resourceVersion=RV` streams JSON lines (ADDED, MODIFIED, DELETED,
//! BOOKMARK) of every change after RV, or one ERROR line with a 410 `Expired` Status when RV
//! is older than the last compaction. Tests change objects, cut open watches mid-line, compact
//! history, or stop the server, and read back what the client asked for.

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
}

const KINDS: &[Kind] = &[
    Kind {
        name: "Service",
        prefix: "/api/v1",
        api_version: "v1",
        plural: "services",
        built_in: true,
    },
    Kind {
        name: "Pod",
        prefix: "/api/v1",
        api_version: "v1",
        plural: "pods",
        built_in: true,
    },
    Kind {
        name: "EndpointSlice",
        prefix: "/apis/discovery.k8s.io/v1",
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        built_in: true,
    },
    Kind {
        name: "VirtualService",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "virtualservices",
        built_in: false,
    },
    Kind {
        name: "DestinationRule",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "destinationrules",
        built_in: false,
    },
    Kind {
        name: "ServiceEntry",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "serviceentries",
        built_in: false,
    },
    Kind {
        name: "WorkloadEntry",
        prefix: "/apis/networking.istio.io/v1",
        api_version: "networking.istio.io/v1",
        plural: "workloadentries",
        built_in: false,
    },
];

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

    /// Requests answered 401 (no or a wrong bearer token).
    pub fn unauthorized(&self) -> u64 {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }
}

fn apply_locked(st: &mut State, mut object: Value) -> u64 {
    let kind = object["kind"].as_str().expect("kind").to_string();
    let plural = lookup_kind(&kind).plural;
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
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
    meta["namespace"] = json!(ns);
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
                async move { Ok::<_, Infallible>(handle(req, shared)) }
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

/// `/api/v1[/namespaces/NS]/PLURAL` or `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL`.
fn parse_path(path: &str) -> Option<(&'static Kind, Option<String>)> {
    KINDS.iter().find_map(|k| {
        let rest = path.strip_prefix(k.prefix)?.strip_prefix('/')?;
        let (ns, plural) = match rest.strip_prefix("namespaces/") {
            Some(r) => {
                let (ns, plural) = r.split_once('/')?;
                (Some(ns.to_string()), plural)
            }
            None => (None, rest),
        };
        (plural == k.plural).then_some((k, ns))
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

fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<TestBody> {
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
    let found = parse_path(req.uri().path()).filter(|(k, _)| {
        !shared
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(k.plural)
    });
    let Some((kind, ns)) = found else {
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
    let shape = Shape {
        kind,
        metadata_only,
    };
    let q = query(&req);
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if is_watch {
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
}

impl Shape {
    fn kind_name(&self) -> &'static str {
        if self.metadata_only {
            "PartialObjectMetadata"
        } else {
            self.kind.name
        }
    }

    fn api_version(&self) -> &'static str {
        if self.metadata_only {
            "meta.k8s.io/v1"
        } else {
            self.kind.api_version
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
