//! Kubernetes objects in a manifests folder, read as `istioctl analyze --use-kube=false DIR`
//! reads them: a `Service` is a registry host with ports (kept as the ServiceEntry istiod
//! would derive from it), and the pod labels of Pods and of the pod templates of Deployments,
//! StatefulSets, DaemonSets and ReplicaSets are the workloads a subset may select.
//!
//! Only `validate` looks them up. `run` still needs ServiceEntries (or WorkloadEntries) for
//! endpoints: a manifest says which pods exist, not where they are.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::istio::{Int, Labels, Resolution, ServiceEntrySpec, ServicePort, WorkloadSelector};
use super::{Diagnostic, Resource, Resources, Severity, Source, codes};
use crate::route::host::resolve_short_name;

/// The pod labels of one workload object.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub labels: Labels,
    /// `replicas: 0`: the labels are declared but no pod runs.
    pub scaled_to_zero: bool,
}

pub type KubeWorkload = Resource<Workload>;

/// The annotation Istio reads as a Service's `exportTo`.
const EXPORT_TO: &str = "networking.istio.io/exportTo";

const WORKLOAD_KINDS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"];

/// The kind name if `api_version`/`kind` is one this module reads.
pub fn kind_of(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Service") if api_version == "v1" => Some("Service"),
        ("", "Pod") if api_version == "v1" => Some("Pod"),
        ("apps" | "extensions", k) => WORKLOAD_KINDS.iter().copied().find(|w| *w == k),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Object {
    metadata: super::istio::ObjectMeta,
    spec: Spec,
}

/// The union of the few spec fields read from the kinds above; the rest is ignored, since a
/// Kubernetes object has far more than the analysis needs and its API server checks it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    ports: Vec<KubePort>,
    selector: Option<yaml_serde::Value>,
    replicas: Option<Int>,
    template: Template,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Template {
    metadata: Meta,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    labels: Labels,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct KubePort {
    port: Option<Int>,
    name: Option<String>,
    app_protocol: Option<String>,
    target_port: Option<yaml_serde::Value>,
}

/// Istio's protocol selection for a Service port: `appProtocol`, else the port name's prefix
/// (`http`, `http-web`, `grpc-api`, ...).
fn protocol(p: &KubePort) -> Option<String> {
    if let Some(a) = p.app_protocol.as_deref().filter(|a| !a.is_empty()) {
        return Some(a.to_string());
    }
    let name = p.name.as_deref()?;
    Some(name.split('-').next().unwrap_or(name).to_string())
}

/// Reads one document of a kind [`kind_of`] accepted into `res`.
pub fn read(
    kind: &'static str,
    api_version: String,
    value: yaml_serde::Value,
    source: Source,
    default_namespace: &str,
    res: &mut Resources,
) {
    let order = res.order_of_next();
    let obj: Object = match yaml_serde::from_value(value) {
        Ok(o) => o,
        Err(e) => {
            res.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                code: codes::PARSE_ERROR,
                file: source.file.to_path_buf(),
                line: source.line,
                resource: kind.to_string(),
                field_path: String::new(),
                message: format!("cannot decode {kind}: {e}"),
            });
            return;
        }
    };
    let namespace = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    if kind == "Service" {
        let spec = service_entry(&obj, &namespace);
        res.kube_services.push(Resource {
            kind,
            api_version,
            meta: obj.metadata,
            namespace,
            spec,
            source,
            order,
        });
        return;
    }
    let (labels, scaled_to_zero) = if kind == "Pod" {
        (obj.metadata.labels.clone(), false)
    } else {
        (
            obj.spec.template.metadata.labels.clone(),
            obj.spec.replicas.is_some_and(|r| r.0 == 0),
        )
    };
    res.workloads.push(Resource {
        kind,
        api_version,
        meta: obj.metadata,
        namespace,
        spec: Workload {
            labels,
            scaled_to_zero,
        },
        source,
        order,
    });
}

/// The ServiceEntry istiod derives from a Service: `name.namespace.svc.cluster.local`, its
/// ports, its selector as the workload selector, `exportTo` from the annotation.
fn service_entry(obj: &Object, namespace: &str) -> ServiceEntrySpec {
    let selector: Option<Labels> = obj.spec.selector.as_ref().and_then(|v| {
        let m: BTreeMap<String, String> = yaml_serde::from_value(v.clone()).ok()?;
        Some(m)
    });
    let export_to = export_to(&obj.metadata.annotations);
    ServiceEntrySpec {
        hosts: vec![resolve_short_name(&obj.metadata.name, namespace)],
        ports: obj
            .spec
            .ports
            .iter()
            .map(|p| ServicePort {
                number: p.port,
                protocol: protocol(p),
                name: p.name.clone(),
                target_port: p
                    .target_port
                    .as_ref()
                    .and_then(yaml_serde::Value::as_i64)
                    .map(Int),
            })
            .collect(),
        resolution: Some(Resolution::Static),
        workload_selector: selector.map(|labels| WorkloadSelector { labels }),
        export_to,
        ..ServiceEntrySpec::default()
    }
}

/// A Service's `exportTo`, from Istio's annotation (a comma-separated list).
pub fn export_to(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(EXPORT_TO)
        .map(|a| {
            a.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `svc` (a Service read by [`read`]) has pods the manifests declare, and so whether a
/// subset that selects none of them selects nothing. A Service without a selector has its
/// endpoints managed elsewhere: nothing can be said.
pub fn endpoints_known(svc: &super::ServiceEntry) -> bool {
    svc.kind == "Service" && svc.spec.workload_selector.is_some()
}

/// The pods of `workloads` a Service in `namespace` with `selector` routes to, as label sets.
pub fn pods<'r>(
    workloads: &'r [KubeWorkload],
    namespace: &'r str,
    selector: &'r Labels,
) -> impl Iterator<Item = &'r Labels> + 'r {
    workloads
        .iter()
        .filter(move |w| {
            w.namespace == namespace
                && !w.spec.scaled_to_zero
                && super::scope::labels_subset(selector, &w.spec.labels)
        })
        .map(|w| &w.spec.labels)
}
