//! The watched objects, as they stand in the reflectors' stores, read into the `Resources` the
//! file loader produces, so the API server's objects are validated and compiled exactly as
//! files are.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::Store;
use sha2::{Digest, Sha256};

use super::services::{pod_labels, pod_workload, service_entry, slices_by_service};
use crate::config::istio::ObjectMeta;
use crate::config::scope::labels_subset;
use crate::config::{LoadOptions, Resource, Resources, Source, load_object};

/// The reflectors' read handles, one per watched (kind, namespace scope).
#[derive(Clone, Default)]
pub struct Stores {
    pub istio: Vec<(ApiResource, Store<DynamicObject>)>,
    pub services: Vec<Store<Service>>,
    pub slices: Vec<Store<EndpointSlice>>,
    /// Pods, trimmed (`services::trim_pod`): their labels are what subsets select, and a
    /// ServiceEntry's workloadSelector makes endpoints of the ready ones.
    pub pods: Vec<Store<Pod>>,
}

impl Stores {
    /// The uid of a watched object (an Istio kind or a Service), for an Event naming it.
    pub fn uid(&self, kind: &str, namespace: &str, name: &str) -> Option<String> {
        let matches = |m: &kube::api::ObjectMeta| {
            m.namespace.as_deref() == Some(namespace) && m.name.as_deref() == Some(name)
        };
        if kind == "Service" {
            return self
                .services
                .iter()
                .flat_map(Store::state)
                .find(|s| matches(&s.metadata))
                .and_then(|s| s.metadata.uid.clone());
        }
        self.istio
            .iter()
            .filter(|(ar, _)| ar.kind == kind)
            .flat_map(|(_, store)| store.state())
            .find(|o| matches(&o.metadata))
            .and_then(|o| o.metadata.uid.clone())
    }

    /// Every object now in the stores, as resources. `content_hash` covers each Istio
    /// object's resourceVersion and each Service's derived entry (ports, ready endpoints and
    /// their labels), so a Pod status update that changes nothing routed hashes the same.
    pub fn resources(&self, opts: &LoadOptions) -> Resources {
        let mut res = Resources::default();
        let mut hasher = Sha256::new();
        let mut istio: Vec<(&ApiResource, Arc<DynamicObject>)> = self
            .istio
            .iter()
            .flat_map(|(ar, store)| store.state().into_iter().map(move |o| (ar, o)))
            .collect();
        // Istio settles conflicts (two VirtualServices for one host, a subset defined twice)
        // in favour of the oldest object, as "first loaded wins" does for files.
        istio.sort_by(|(_, a), (_, b)| {
            let key = |o: &DynamicObject| {
                (
                    o.metadata.creation_timestamp.clone().map(|t| t.0),
                    o.metadata.namespace.clone(),
                    o.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        for (ar, obj) in istio {
            let id = object_id(&ar.kind, &obj.metadata);
            hasher.update(id.as_bytes());
            hasher.update([0]);
            istio_object(ar, &obj, id, opts, &mut res);
        }

        let mut pod_states: Vec<Arc<Pod>> = self.pods.iter().flat_map(Store::state).collect();
        pod_states.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        selected_pods(&pod_states, &mut res, &mut hasher);
        let pods = pod_labels(pod_states.iter().map(|p| &p.metadata));
        let slice_states: Vec<Arc<EndpointSlice>> =
            self.slices.iter().flat_map(Store::state).collect();
        let slices = slices_by_service(slice_states.iter().map(Arc::as_ref));
        let mut services: Vec<Arc<Service>> = self.services.iter().flat_map(Store::state).collect();
        services.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let own = slices
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let Some(spec) = service_entry(&svc, own, &pods) else {
                continue;
            };
            let id = object_id("Service", &svc.metadata);
            hasher.update(format!("{id}\0{spec:?}\0").as_bytes());
            let order = res.order_of_next();
            res.files.push(id.clone().into());
            res.service_entries.push(Resource {
                kind: "Service",
                api_version: "v1".to_string(),
                meta: ObjectMeta {
                    name: name.clone(),
                    namespace: Some(ns.clone()),
                    labels: svc.metadata.labels.clone().unwrap_or_default(),
                    annotations: svc.metadata.annotations.clone().unwrap_or_default(),
                    ..ObjectMeta::default()
                },
                namespace: ns.clone(),
                spec,
                source: api_source(&id),
                order,
            });
        }
        res.content_hash = format!("kubernetes:{:x}", hasher.finalize());
        res
    }
}

/// The ready Pods a ServiceEntry's `workloadSelector` selects (labels ⊇ selector, same
/// namespace), as WorkloadEntries of kind `Pod`: the registry resolves a selector over
/// WorkloadEntries and these alike, as istiod does. Only selected Pods are added, so a
/// cluster-wide watch does not make a resource of every Pod. The hash covers what routing
/// reads (address, ports, labels), not the resourceVersion, so status churn rebuilds nothing.
fn selected_pods(pods: &[Arc<Pod>], res: &mut Resources, hasher: &mut Sha256) {
    let selectors: Vec<(String, crate::config::istio::Labels)> = res
        .service_entries
        .iter()
        .filter_map(|se| {
            let sel = se.spec.workload_selector.as_ref()?;
            Some((se.namespace.clone(), sel.labels.clone()))
        })
        .collect();
    if selectors.is_empty() {
        return;
    }
    for pod in pods {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if !selectors
            .iter()
            .any(|(sns, sel)| sns == ns && labels_subset(sel, &labels))
        {
            continue;
        }
        let Some(spec) = pod_workload(pod) else {
            continue;
        };
        hasher.update(format!("Pod/{ns}/{name}\0{spec:?}\0").as_bytes());
        let id = object_id("Pod", &pod.metadata);
        let order = res.order_of_next();
        res.files.push(id.clone().into());
        res.workload_entries.push(Resource {
            kind: "Pod",
            api_version: "v1".to_string(),
            meta: ObjectMeta {
                name: name.clone(),
                namespace: Some(ns.clone()),
                labels,
                ..ObjectMeta::default()
            },
            namespace: ns.clone(),
            spec,
            source: api_source(&id),
            order,
        });
    }
}

/// `Kind/namespace/name@resourceVersion`: where a diagnostic says an object came from.
pub(crate) fn object_id(kind: &str, meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{kind}/{}/{}@{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
        meta.resource_version.as_deref().unwrap_or("")
    )
}

/// An object from the API server has no file line: diagnostics name it by
/// `Kind/namespace/name@resourceVersion` and a field path.
fn api_source(id: &str) -> Source {
    Source {
        file: Arc::from(Path::new(id)),
        doc: 0,
        line: 0,
        text: Arc::from(""),
    }
}

pub(crate) fn istio_object(
    ar: &ApiResource,
    obj: &DynamicObject,
    id: String,
    opts: &LoadOptions,
    res: &mut Resources,
) {
    let Ok(mut json) = serde_json::to_value(obj) else {
        return;
    };
    if let Some(map) = json.as_object_mut() {
        // A watch event carries apiVersion and kind; a list item of some servers does not.
        map.entry("apiVersion")
            .or_insert_with(|| ar.api_version.clone().into());
        map.entry("kind").or_insert_with(|| ar.kind.clone().into());
        // Server bookkeeping, kilobytes of it, and not configuration.
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    let Ok(value) = yaml_serde::to_value(&json) else {
        return;
    };
    res.files.push(id.clone().into());
    load_object(value, api_source(&id), opts, res);
}
