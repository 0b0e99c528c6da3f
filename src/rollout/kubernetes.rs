//! The rollout controller against the Kubernetes API (`rollout run --source kubernetes`,
//! `run --source kubernetes --rollouts`), as Argo Rollouts' controller works in a cluster:
//!
//! - **Reads** `Rollout`, `AnalysisTemplate`, `ClusterAnalysisTemplate` (argoproj.io/v1alpha1)
//!   and `VirtualService` (networking.istio.io, at the best version the server serves: v1 from
//!   Istio 1.22, else v1beta1 or v1alpha3, found by the same API discovery `run --source
//!   kubernetes` makes) through list+watch reflectors, as Argo's
//!   informers do: the controller ticks ten times a second, and a cache makes a tick cost no
//!   request; a periodic list would cost four lists a tick, or lag by its period. The objects
//!   are parsed again only when the watch changed one.
//! - **Writes weights** with a JSON patch that touches only
//!   `spec.http[i].route[j].weight` of the managed routes and carries the resourceVersion it
//!   was computed from, so the API server refuses it (409 Conflict) if anyone changed the
//!   object meanwhile (a `kubectl edit`): the controller then reads the object again,
//!   recomputes the edits from it and retries. Nothing it has not seen is overwritten.
//! - **Records progress in the Rollout's status** (the status subresource, where
//!   `kubectl argo rollouts get` and `kubectl get rollout -o yaml` look): phase, message,
//!   currentStepIndex, pauseConditions, abort and canary weights, with the same
//!   resourceVersion precondition. Analysis measurements stay in memory (Argo keeps them in
//!   AnalysisRun objects, which switchyard does not create): a restarted controller resumes
//!   at the recorded step, but a running analysis starts over.
//! - **Takes requests as Argo's kubectl plugin leaves them**: `spec.paused` (pause/promote),
//!   `status.abort` (abort/retry), cleared `status.pauseConditions` (promote),
//!   `status.promoteFull`. [`request`] makes those patches for `switchyard rollout promote`
//!   etc.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::backend::Backend;
use super::controller::{managed_routes, weight_edits};
use super::spec::Rollout;
use super::state::{Action, State};
use super::vsedit::WeightEdit;
use crate::config::{ArgoDoc, LoadOptions, Resources, VirtualService};
use crate::source::kubernetes::discover;
use crate::source::kubernetes::reflect::{self, Signals};
use crate::source::kubernetes::{self as source, KubeError, KubeOptions, Stores};

const ARGO_GROUP: &str = "argoproj.io";
const ARGO_VERSION: &str = "v1alpha1";
/// Conflicting writes in a row before a weight change is given up until the next tick.
const MAX_ATTEMPTS: usize = 5;
/// Argo's pause reasons that `promote` clears.
const PAUSE_REASONS: [&str; 2] = ["CanaryPauseStep", "InconclusiveAnalysisRun"];

#[derive(Debug, thiserror::Error)]
pub enum RolloutApiError {
    #[error(transparent)]
    Source(#[from] KubeError),
    #[error("no Rollout {namespace}/{name} in the API server")]
    NotFound { namespace: String, name: String },
    #[error("Rollouts in namespace {namespace}")]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("Rollout {namespace}/{name}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(ARGO_GROUP, ARGO_VERSION, "Rollout"),
        "rollouts",
    )
}

/// VirtualService at `version` of networking.istio.io: the watch and the PATCH both use the
/// version discovery found, since an Istio older than 1.22 answers 404 at `v1`.
fn virtual_service_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(source::ISTIO_GROUP, version, "VirtualService"),
        "virtualservices",
    )
}

/// A rollout's progress as this controller holds it, and what it knows of the Rollout's
/// status. The status has two writers (this controller, and people through Argo's plugin),
/// so a request is read only from a version the watch delivered after this controller's own
/// last write, and a write is only made on top of a version whose requests were read.
#[derive(Default)]
struct Tracked {
    state: State,
    /// Not yet in the Rollout's status (the last write failed or is still to be made).
    pending: bool,
    /// resourceVersions older than this controller's last write: the watch still showing one
    /// has not delivered that write, and its status is not news.
    stale: std::collections::HashSet<String>,
    /// The resourceVersion the last write produced.
    written_as: Option<String>,
    /// The version whose requests were last read.
    read: Option<String>,
    /// What the last write (or the status found at first sight) said, so that a person
    /// clearing it is told apart from a status this controller never wrote.
    wrote_abort: bool,
    wrote_pause: bool,
}

/// (kind, uid, resourceVersion) of a watched object.
type ObjectVersion = (String, String, String);

/// The Kubernetes API as the controller's backend. Dropping it stops the reflectors.
pub struct Kube {
    client: Client,
    stores: Stores,
    namespace: String,
    /// VirtualService at the version the server serves (see [`virtual_service_resource`]).
    virtual_service: ApiResource,
    tracked: HashMap<(String, String), Tracked>,
    /// The last write error logged per rollout, so an outage is logged once.
    failing: HashMap<(String, String), String>,
    /// The last parse of the stores and the (kind, uid, resourceVersion) of every object it
    /// read: the controller loads ten times a second, the watch changes objects far less
    /// often, and parsing every object (JSON to YAML to documents) was each tick's cost.
    parsed: Option<(Vec<ObjectVersion>, Resources)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Kube {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Kube {
    /// Connects, starts the reflectors and waits for their first lists. `opts.namespaces`
    /// scopes Rollouts, AnalysisTemplates and VirtualServices (empty: all namespaces);
    /// ClusterAnalysisTemplates are cluster-scoped. `namespace`: of documents that name none.
    /// `opts.sync_timeout` counts from the call: discovery of the served VirtualService
    /// version and the first lists share it.
    pub async fn start(opts: &KubeOptions, namespace: String) -> Result<Kube, KubeError> {
        let deadline = Instant::now() + opts.sync_timeout;
        let client = source::client(opts.kubeconfig.as_deref()).await?;
        let version =
            discover::istio_versions(&client, &["virtualservices"], deadline, opts.sync_timeout)
                .await?
                .pop()
                .unwrap_or_else(|| source::ISTIO_VERSION.to_string());
        tracing::info!(
            api_version = %format!("{}/{version}", source::ISTIO_GROUP),
            "rollout controller reads and patches VirtualServices"
        );
        Self::with_client(client, opts, namespace, &version, deadline).await
    }

    async fn with_client(
        client: Client,
        opts: &KubeOptions,
        namespace: String,
        vs_version: &str,
        deadline: Instant,
    ) -> Result<Kube, KubeError> {
        let (synced_tx, mut synced) = watch::channel(BTreeSet::new());
        let signals = Signals {
            changed: Arc::new(Notify::new()),
            synced: synced_tx,
        };
        let scopes: Vec<Option<&str>> = if opts.namespaces.is_empty() {
            vec![None]
        } else {
            opts.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let kinds = [
            (rollout_resource(), true),
            (
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(ARGO_GROUP, ARGO_VERSION, "AnalysisTemplate"),
                    "analysistemplates",
                ),
                true,
            ),
            (
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(ARGO_GROUP, ARGO_VERSION, "ClusterAnalysisTemplate"),
                    "clusteranalysistemplates",
                ),
                false,
            ),
            (virtual_service_resource(vs_version), true),
        ];
        let mut stores = Stores::default();
        let mut tasks = Vec::new();
        let mut names = Vec::new();
        for (ar, namespaced) in kinds {
            let here: Vec<Option<&str>> = if namespaced {
                scopes.clone()
            } else {
                vec![None]
            };
            for ns in here {
                let api: Api<DynamicObject> = match ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let what = match ns {
                    Some(ns) => format!("{} in {ns}", ar.kind),
                    None => format!("{} in all namespaces", ar.kind),
                };
                names.push(what.clone());
                let (store, task) = reflect::spawn(api, ar.clone(), what, signals.clone(), |_| {});
                stores.istio.push((ar.clone(), store));
                tasks.push(task);
            }
        }
        let backend = Kube {
            client,
            stores,
            namespace,
            virtual_service: virtual_service_resource(vs_version),
            tracked: HashMap::new(),
            failing: HashMap::new(),
            parsed: None,
            tasks,
        };
        let want = names.len();
        let wait = synced.wait_for(|done| done.len() >= want);
        if !matches!(tokio::time::timeout_at(deadline, wait).await, Ok(Ok(_))) {
            let done = synced.borrow().clone();
            let pending = names.into_iter().filter(|n| !done.contains(n)).collect();
            return Err(KubeError::SyncTimeout(opts.sync_timeout, pending));
        }
        Ok(backend)
    }

    /// The watched object of `kind` named `namespace/name`.
    fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.stores
            .istio
            .iter()
            .filter(|(ar, _)| ar.kind == kind)
            .flat_map(|(_, store): &(ApiResource, Store<DynamicObject>)| store.state())
            .find(|o| {
                o.metadata.name.as_deref() == Some(name)
                    && o.namespace().as_deref() == Some(namespace)
            })
    }

    /// Writes a rollout's status if it is pending: a merge patch on the status subresource
    /// with the resourceVersion it was computed against, so a request a person made since
    /// (an abort, a promote) is never overwritten; the next tick sees it and writes again.
    async fn push(&mut self, key: &(String, String)) {
        let Some(t) = self.tracked.get(key).filter(|t| t.pending) else {
            return;
        };
        let Some(obj) = self.object("Rollout", &key.0, &key.1) else {
            return;
        };
        let seen = obj.resource_version().unwrap_or_default();
        // The watch may not have delivered our own last write yet; that write's version is
        // then the one to build on. A version whose requests were not read yet waits for the
        // next tick to read them, so that nothing a person asked for is overwritten.
        let base = if t.stale.contains(&seen) {
            match &t.written_as {
                Some(after) => after.clone(),
                None => return,
            }
        } else if t.read.as_deref() == Some(seen.as_str()) || !asks(obj.data.get("status"), t) {
            seen
        } else {
            return;
        };
        let status = status_of(&t.state, obj.metadata.generation);
        let body = json!({
            "metadata": {"resourceVersion": base},
            "status": status,
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.0, &rollout_resource());
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(written) => {
                if let Some(t) = self.tracked.get_mut(key) {
                    t.pending = false;
                    // Both predate this write: the version built on and the one last read.
                    t.stale.insert(base);
                    if let Some(read) = t.read.clone() {
                        t.stale.insert(read);
                    }
                    t.written_as = written.resource_version();
                    t.wrote_abort = body["status"]["abort"] == true;
                    t.wrote_pause = body["status"]["controllerPause"] == true;
                }
                if self.failing.remove(key).is_some() {
                    tracing::info!(rollout = %key.1, "Rollout status written again");
                }
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(rollout = %key.1, "Rollout changed since it was read; its status is written on the next tick");
            }
            Err(e) => {
                let text = e.to_string();
                if self.failing.get(key) != Some(&text) {
                    tracing::warn!(rollout = %key.1, error = %text, "cannot write the Rollout's status; retrying every tick");
                    self.failing.insert(key.clone(), text);
                }
            }
        }
    }
}

impl Backend for Kube {
    fn load(&mut self) -> Resources {
        // Every change the watch delivers gives the object a new resourceVersion (a new
        // object, a new uid), so an unchanged key means unchanged objects.
        let mut key: Vec<ObjectVersion> = self
            .stores
            .istio
            .iter()
            .flat_map(|(ar, store)| {
                store.state().into_iter().map(move |o| {
                    (
                        ar.kind.clone(),
                        o.metadata.uid.clone().unwrap_or_default(),
                        o.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
            })
            .collect();
        key.sort_unstable();
        if let Some((seen, res)) = &self.parsed
            && *seen == key
        {
            return res.clone();
        }
        let res = self.stores.resources(&LoadOptions {
            default_namespace: self.namespace.clone(),
        });
        self.parsed = Some((key, res.clone()));
        res
    }

    fn state(&mut self, namespace: &str, name: &str) -> Option<State> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(t) = self.tracked.get(&key) {
            return Some(t.state.clone());
        }
        // First sight: resume from what a previous controller wrote into the status.
        let obj = self.object("Rollout", namespace, name)?;
        let state = from_status(&obj, namespace, name)?;
        self.tracked.insert(
            key,
            Tracked {
                state: state.clone(),
                wrote_abort: state.aborted,
                wrote_pause: paused_by_controller(&state),
                ..Tracked::default()
            },
        );
        Some(state)
    }

    async fn write_state(&mut self, st: &State) -> Result<(), String> {
        let key = (st.namespace.clone(), st.name.clone());
        let t = self.tracked.entry(key.clone()).or_default();
        t.state = st.clone();
        t.pending = true;
        self.push(&key).await;
        Ok(())
    }

    fn take_request(&mut self, doc: &ArgoDoc, st: &State) -> Option<Action> {
        let spec_paused = doc
            .value
            .get("spec")
            .and_then(|s| s.get("paused"))
            .and_then(|p| p.as_bool())
            .unwrap_or(false);
        // `spec.paused` is only ever written by people.
        if spec_paused && !st.paused {
            return Some(Action::Pause);
        }
        if !spec_paused && st.paused {
            return Some(Action::Promote);
        }
        // The status is also written by this controller: only a version after its own last
        // write says what a person asked for.
        let key = (doc.namespace.clone(), doc.name.clone());
        let rv = doc
            .value
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let t = self.tracked.entry(key).or_insert_with(|| Tracked {
            state: st.clone(),
            ..Tracked::default()
        });
        if t.stale.contains(&rv) {
            return None;
        }
        // Caught up: no older version can come back on an ordered watch.
        t.stale.clear();
        t.read = Some(rv);
        let (wrote_abort, wrote_pause) = (t.wrote_abort, t.wrote_pause);
        let status = doc.value.get("status");
        let flag = |k: &str| {
            status
                .and_then(|s| s.get(k))
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        };
        if flag("abort") && !st.aborted {
            return Some(Action::Abort);
        }
        if !flag("abort") && st.aborted && wrote_abort {
            return Some(Action::Retry);
        }
        if flag("promoteFull") && st.step < st.steps && !st.aborted {
            return Some(Action::PromoteFull);
        }
        let conditions = status
            .and_then(|s| s.get("pauseConditions"))
            .and_then(|p| p.as_sequence())
            .is_some_and(|p| !p.is_empty());
        if paused_by_controller(st) && !conditions && wrote_pause {
            return Some(Action::Promote);
        }
        None
    }

    async fn write_weights(
        &mut self,
        vs: &VirtualService,
        r: &Rollout,
        edits: Vec<WeightEdit>,
        canary: u32,
    ) -> Result<bool, String> {
        let shown = format!("VirtualService {}/{}", vs.namespace, vs.meta.name);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &vs.namespace, &self.virtual_service);
        let mut current = self
            .object("VirtualService", &vs.namespace, &vs.meta.name)
            .map(|o| o.as_ref().clone())
            .ok_or_else(|| format!("{shown} is no longer watched"))?;
        let mut edits = edits;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                // Computed again from the version that won, so only the weights change.
                let fresh = parse_virtual_service(&self.virtual_service, &current, &self.namespace)
                    .ok_or_else(|| format!("{shown} no longer reads as a VirtualService"))?;
                let routes = managed_routes(&fresh, r)?;
                edits = weight_edits(&fresh, &routes, canary);
                if edits.is_empty() {
                    return Ok(false);
                }
            }
            let rv = current.resource_version().unwrap_or_default();
            let mut ops =
                vec![json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})];
            ops.extend(edits.iter().map(|e| {
                json!({"op": "add",
                       "path": format!("/spec/http/{}/route/{}/weight", e.route, e.dest),
                       "value": e.weight})
            }));
            let body = serde_json::to_vec(&ops).map_err(|e| e.to_string())?;
            let request = http::Request::patch(format!("{}/{}", api.resource_url(), vs.meta.name))
                .header(http::header::CONTENT_TYPE, "application/json-patch+json")
                .header(http::header::ACCEPT, "application/json")
                .body(body)
                .map_err(|e| e.to_string())?;
            match self.client.request::<DynamicObject>(request).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::info!(
                        rollout = %r.name,
                        attempt,
                        "{shown} changed since resourceVersion {rv} (409 Conflict); reading it again"
                    );
                    current = api
                        .get(&vs.meta.name)
                        .await
                        .map_err(|e| format!("cannot read {shown} again: {e}"))?;
                }
                Err(e) => return Err(format!("cannot patch {shown}: {e}")),
            }
        }
        Err(format!(
            "{shown} changed under every one of {MAX_ATTEMPTS} writes; trying again next tick"
        ))
    }

    async fn flush(&mut self) {
        let pending: Vec<(String, String)> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.pending)
            .map(|(k, _)| k.clone())
            .collect();
        for key in pending {
            self.push(&key).await;
        }
    }

    fn place(&self) -> String {
        "the watched namespaces of the API server".to_string()
    }

    fn reload_after_write(&self) -> bool {
        false
    }
}

/// Whether a status holds a request this controller may not have taken yet: an abort flag
/// other than the one it wrote, a full promotion, or its pause conditions cleared.
fn asks(status: Option<&Value>, t: &Tracked) -> bool {
    let flag = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let paused = status
        .and_then(|s| s.get("pauseConditions"))
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    flag("abort") != t.wrote_abort || flag("promoteFull") || (t.wrote_pause && !paused)
}

fn paused_by_controller(st: &State) -> bool {
    st.phase == "Paused" && PAUSE_REASONS.contains(&st.message.as_str())
}

fn parse_virtual_service(
    ar: &ApiResource,
    obj: &DynamicObject,
    namespace: &str,
) -> Option<VirtualService> {
    let mut res = Resources::default();
    let id = source::snapshot::object_id("VirtualService", &obj.metadata);
    source::snapshot::istio_object(
        ar,
        obj,
        id,
        &LoadOptions {
            default_namespace: namespace.to_string(),
        },
        &mut res,
    );
    res.virtual_services.into_iter().next()
}

fn rfc3339(ms: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn from_rfc3339(text: &str) -> Option<u64> {
    let t: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

/// The Rollout status fields Argo's controller writes (`RolloutStatus` in Argo's
/// `types.go`), from this controller's state. `currentStepHash` holds switchyard's hash of
/// the spec, so a restarted controller knows whether the recorded step is for this spec.
fn status_of(st: &State, generation: Option<i64>) -> Value {
    let canary = if st.aborted { 0 } else { st.set_weight };
    let pause = paused_by_controller(st).then(|| {
        json!([{"reason": st.message,
                "startTime": rfc3339(st.pause_started_ms.unwrap_or(st.updated_ms))}])
    });
    json!({
        "phase": st.phase,
        "message": st.message,
        "currentStepIndex": st.step,
        "currentStepHash": st.spec_hash,
        "abort": st.aborted,
        "controllerPause": pause.is_some(),
        "pauseConditions": pause,
        "promoteFull": null,
        "observedGeneration": generation.map(|g| g.to_string()),
        "canary": {"weights": {
            "canary": {"weight": canary},
            "stable": {"weight": 100 - canary},
        }},
    })
}

/// A state from a status this controller wrote (none if it wrote none).
fn from_status(obj: &DynamicObject, namespace: &str, name: &str) -> Option<State> {
    let hash = obj.data.pointer("/status/currentStepHash")?.as_str()?;
    Some(State {
        spec_hash: hash.to_string(),
        ..status_fields(obj, namespace, name)
    })
}

/// What a Rollout's status says, read leniently: a status nobody wrote yet (no controller
/// has seen the Rollout) reads as step 0, weight 0, no phase.
fn status_fields(obj: &DynamicObject, namespace: &str, name: &str) -> State {
    let none = Value::Null;
    let status = obj.data.get("status").unwrap_or(&none);
    let text = |k: &str| {
        status
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let pause_started_ms = status
        .get("pauseConditions")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .and_then(|c| c.get("startTime"))
        .and_then(Value::as_str)
        .and_then(from_rfc3339);
    State {
        name: name.to_string(),
        namespace: namespace.to_string(),
        revision: 1,
        step: status
            .get("currentStepIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
        phase: text("phase"),
        message: text("message"),
        set_weight: status
            .pointer("/canary/weights/canary/weight")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        paused: obj
            .data
            .pointer("/spec/paused")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        pause_started_ms,
        aborted: status
            .get("abort")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..State::default()
    }
}

/// A Rollout as `rollout get|list --source kubernetes` print it: its status (which this
/// controller writes) and its spec's step count. Analysis measurements and the observed
/// traffic share live only in the controller's memory, so they are not shown.
fn shown(obj: &DynamicObject) -> State {
    let namespace = obj.namespace().unwrap_or_default();
    let mut st = status_fields(obj, &namespace, &obj.name_any());
    st.steps = obj
        .data
        .pointer("/spec/strategy/canary/steps")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    // Argo's controller numbers revisions in this annotation; switchyard's does not set it.
    if let Some(r) = obj
        .annotations()
        .get("rollout.argoproj.io/revision")
        .and_then(|r| r.parse().ok())
    {
        st.revision = r;
    }
    st
}

/// The Rollout `namespace/name` for `rollout get --source kubernetes`.
pub async fn get(
    opts: &KubeOptions,
    namespace: &str,
    name: &str,
) -> Result<State, RolloutApiError> {
    let client = source::client(opts.kubeconfig.as_deref()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &rollout_resource());
    match api.get(name).await {
        Ok(obj) => Ok(shown(&obj)),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(RolloutApiError::NotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }),
        Err(source) => Err(RolloutApiError::Api {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// Every Rollout in `namespace`, by name, for `rollout list --source kubernetes`. Pages
/// through the list (a namespace may hold more Rollouts than one page).
pub async fn list(opts: &KubeOptions, namespace: &str) -> Result<Vec<State>, RolloutApiError> {
    let client = source::client(opts.kubeconfig.as_deref()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &rollout_resource());
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(|source| RolloutApiError::List {
                namespace: namespace.to_string(),
                source,
            })?;
        out.extend(page.items.iter().map(shown));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `switchyard rollout promote|abort|retry|pause --source kubernetes` asks: the patches
/// Argo's kubectl plugin makes (`spec.paused`, `status.abort`, `status.pauseConditions`,
/// `status.promoteFull`). They carry no resourceVersion: each sets one field a person owns.
pub async fn request(
    opts: &KubeOptions,
    namespace: &str,
    name: &str,
    action: Action,
) -> Result<(), RolloutApiError> {
    let client = source::client(opts.kubeconfig.as_deref()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &rollout_resource());
    let fail = |source| RolloutApiError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    let pp = PatchParams::default();
    let spec = |paused: bool| json!({"spec": {"paused": paused}});
    match action {
        Action::Pause => api.patch(name, &pp, &Patch::Merge(spec(true))).await,
        Action::Promote => {
            api.patch(name, &pp, &Patch::Merge(spec(false)))
                .await
                .map_err(fail)?;
            api.patch_status(
                name,
                &pp,
                &Patch::Merge(json!({"status": {"pauseConditions": null}})),
            )
            .await
        }
        Action::PromoteFull => {
            api.patch_status(
                name,
                &pp,
                &Patch::Merge(json!({"status": {"promoteFull": true}})),
            )
            .await
        }
        Action::Abort | Action::Retry => {
            let abort = action == Action::Abort;
            api.patch_status(
                name,
                &pp,
                &Patch::Merge(json!({"status": {"abort": abort}})),
            )
            .await
        }
    }
    .map(|_| ())
    .map_err(fail)
}

/// The Rollout's `status.phase` and `status.message` (for `rollout status`).
pub async fn phase(
    opts: &KubeOptions,
    namespace: &str,
    name: &str,
) -> Result<(String, String), RolloutApiError> {
    let client = source::client(opts.kubeconfig.as_deref()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &rollout_resource());
    let obj = api.get(name).await.map_err(|source| RolloutApiError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })?;
    let text = |k: &str| {
        obj.data
            .pointer(&format!("/status/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok((text("phase"), text("message")))
}

/// How long `rollout status --source kubernetes` waits between reads.
pub const STATUS_POLL: Duration = Duration::from_millis(500);
