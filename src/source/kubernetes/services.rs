//! A Kubernetes Service and its EndpointSlices as the ServiceEntry istiod derives from them:
//! host `name.namespace.svc.cluster.local`, the Service's TCP ports, and one endpoint per
//! ready address with its pod's labels, so a DestinationRule subset selects pods exactly as
//! it does under Istio.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service, ServicePort as KubePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::istio::WorkloadEntrySpec;
use crate::config::istio::{Int, Labels, Location, Resolution, ServiceEntrySpec, ServicePort};
use crate::config::validate::PROTOCOLS;
use crate::route::host::resolve_short_name;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Pod labels by (namespace, name), for the endpoints' `targetRef`s.
pub type PodLabels = HashMap<(String, String), Labels>;

pub fn pod_labels<'p>(pods: impl Iterator<Item = &'p ObjectMeta>) -> PodLabels {
    pods.filter_map(|m| {
        Some((
            (m.namespace.clone()?, m.name.clone()?),
            m.labels.clone().unwrap_or_default(),
        ))
    })
    .collect()
}

/// Cuts a Pod down to what the source reads: labels, IP, the Ready condition, named
/// container ports, and whether it is being deleted.
pub fn trim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    let ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| {
            let named: Vec<_> = c
                .ports
                .iter()
                .flatten()
                .filter(|p| p.name.is_some())
                .cloned()
                .collect();
            (!named.is_empty()).then(|| k8s_openapi::api::core::v1::Container {
                name: c.name.clone(),
                ports: Some(named),
                ..Default::default()
            })
        })
        .collect();
    pod.spec = Some(PodSpec {
        containers: ports,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        pod_ip: s.pod_ip,
        phase: s.phase,
        conditions: s
            .conditions
            .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
        ..PodStatus::default()
    });
}

/// A Pod as the endpoint istiod makes of it for a ServiceEntry whose `workloadSelector`
/// matches its labels: its IP, its labels (what subsets select), and its named container
/// TCP ports (a ServiceEntry port of the same name goes there; otherwise the port's
/// `targetPort`, else its number, as for a WorkloadEntry: istiod's `getPortMap` and
/// `convertWorkloadInstanceToServiceInstance`). `None` unless it can take new requests: an IP,
/// the Ready condition True, and not being deleted (a terminating Pod's sidecar drains, it
/// does not take new work).
pub fn pod_workload(pod: &Pod) -> Option<WorkloadEntrySpec> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || status.phase.as_deref().is_some_and(|p| p != "Running") {
        return None;
    }
    let address = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    // Named TCP ports, the first of a name winning, as istiod's port map of a Pod has them.
    let mut ports = BTreeMap::new();
    for p in pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
    {
        if let Some(name) = p.name.clone().filter(|n| !n.is_empty()) {
            ports
                .entry(name)
                .or_insert(Int(i64::from(p.container_port)));
        }
    }
    Some(WorkloadEntrySpec {
        address: Some(address),
        ports,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ..WorkloadEntrySpec::default()
    })
}

/// EndpointSlices grouped by the (namespace, Service name) they belong to.
pub fn slices_by_service<'s>(
    slices: impl Iterator<Item = &'s EndpointSlice>,
) -> HashMap<(String, String), Vec<&'s EndpointSlice>> {
    let mut by: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let m = &s.metadata;
        let svc = m.labels.as_ref().and_then(|l| l.get(SERVICE_NAME));
        if let (Some(ns), Some(svc)) = (&m.namespace, svc) {
            by.entry((ns.clone(), svc.clone())).or_default().push(s);
        }
    }
    by
}

/// The ServiceEntry spec for `svc`, or `None` for a Service with nothing to route to here
/// (`ExternalName`, or no TCP port).
pub fn service_entry(
    svc: &Service,
    slices: &[&EndpointSlice],
    pods: &PodLabels,
) -> Option<ServiceEntrySpec> {
    let namespace = svc.metadata.namespace.as_deref()?;
    let name = svc.metadata.name.as_deref()?;
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let tcp: Vec<&KubePort> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .collect();
    if tcp.is_empty() {
        return None;
    }
    let ports: Vec<ServicePort> = tcp
        .iter()
        .map(|p| ServicePort {
            number: Some(Int(i64::from(p.port))),
            protocol: protocol(p),
            name: Some(port_name(p)),
            target_port: match &p.target_port {
                Some(IntOrString::Int(t)) => Some(Int(i64::from(*t))),
                _ => None,
            },
        })
        .collect();
    let mut endpoints: Vec<WorkloadEntrySpec> = slices
        .iter()
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
        .flat_map(|s| {
            s.endpoints
                .iter()
                .flatten()
                .filter(|e| ready(e))
                .filter_map(|e| endpoint(e, s, &tcp, namespace, pods))
        })
        .collect();
    // Slices list endpoints in no particular order: sorted, an unchanged set hashes the same.
    endpoints.sort_by(|a, b| (&a.address, &a.ports).cmp(&(&b.address, &b.ports)));
    endpoints.dedup_by(|a, b| (&a.address, &a.ports) == (&b.address, &b.ports));
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .map(crate::config::kube::export_to)
        .unwrap_or_default();
    Some(ServiceEntrySpec {
        hosts: vec![resolve_short_name(name, namespace)],
        ports,
        location: Some(Location::MeshInternal),
        resolution: Some(Resolution::Static),
        endpoints,
        export_to,
        ..ServiceEntrySpec::default()
    })
}

/// Ready endpoints only: a terminating one is not ready (unless the Service publishes
/// not-ready addresses), so it leaves the table as Envoy drains it. `ready` unset means
/// ready (the EndpointSlice API says so). This is istiod's `endpointHealthStatus`: ready
/// (or unset) is HEALTHY whatever `serving`/`terminating` say; anything else is UNHEALTHY,
/// TERMINATING or (with persistent sessions only) DRAINING, none of which Envoy sends new
/// requests to, so `serving` changes nothing here.
fn ready(e: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

fn endpoint(
    e: &k8s_openapi::api::discovery::v1::Endpoint,
    slice: &EndpointSlice,
    service_ports: &[&KubePort],
    namespace: &str,
    pods: &PodLabels,
) -> Option<WorkloadEntrySpec> {
    let address = e.addresses.first()?.clone();
    let slice_ports = slice.ports.as_deref().unwrap_or_default();
    // A slice port carries the Service port's name ("" for an unnamed one) and the
    // resolved target port.
    let ports: BTreeMap<String, Int> = service_ports
        .iter()
        .filter_map(|sp| {
            let wanted = sp.name.as_deref().unwrap_or("");
            let found = slice_ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == wanted)?;
            Some((port_name(sp), Int(i64::from(found.port?))))
        })
        .collect();
    let labels = e
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            pods.get(&(ns.to_string(), r.name.clone()?))
        })
        .cloned()
        .unwrap_or_default();
    Some(WorkloadEntrySpec {
        address: Some(address),
        ports,
        labels,
        locality: e.zone.clone(),
        ..WorkloadEntrySpec::default()
    })
}

/// The name the port is known by in the entry: a single-port Service may leave it unnamed,
/// and a ServiceEntry port needs one.
fn port_name(p: &KubePort) -> String {
    match p.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("port-{}", p.port),
    }
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix (`http-web`,
/// `grpc-api`), when either names a protocol Istio knows. Otherwise Istio sniffs the
/// protocol; for an HTTP proxy that is HTTP, which an unset protocol means here.
fn protocol(p: &KubePort) -> Option<String> {
    let known = |s: &str| {
        PROTOCOLS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(s))
            .map(|k| k.to_string())
    };
    if let Some(a) = p.app_protocol.as_deref() {
        match a {
            "kubernetes.io/h2c" => return Some("HTTP2".to_string()),
            "kubernetes.io/ws" => return Some("HTTP".to_string()),
            "kubernetes.io/wss" => return Some("TLS".to_string()),
            _ => {
                if let Some(k) = known(a) {
                    return Some(k);
                }
            }
        }
    }
    let name = p.name.as_deref()?;
    known(name.split('-').next().unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>) -> KubePort {
        KubePort {
            name: name.map(str::to_string),
            app_protocol: app.map(str::to_string),
            port: 80,
            ..KubePort::default()
        }
    }

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("object")
    }

    fn endpoint(ip: &str, pod: Option<&str>, ready: Option<bool>) -> serde_json::Value {
        let mut e = serde_json::json!({"addresses": [ip]});
        if let Some(ready) = ready {
            e["conditions"] = serde_json::json!({"ready": ready, "terminating": !ready});
        }
        if let Some(pod) = pod {
            e["targetRef"] = serde_json::json!({"kind": "Pod", "namespace": "shop", "name": pod});
        }
        e
    }

    #[test]
    fn a_service_becomes_its_ready_endpoints_with_pod_labels() {
        let svc: Service = from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop",
                "annotations": {"networking.istio.io/exportTo": ".,istio-system"}},
            "spec": {"ports": [
                {"name": "http-web", "port": 80, "targetPort": "http"},
                {"name": "api", "port": 9090, "appProtocol": "grpc", "targetPort": 9091},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let slices: Vec<EndpointSlice> = vec![
            from_json(serde_json::json!({
                "metadata": {"name": "web-abc", "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [
                    endpoint("10.0.0.2", Some("web-v2"), Some(true)),
                    endpoint("10.0.0.1", Some("web-v1"), None),
                    endpoint("10.0.0.3", Some("web-old"), Some(false)),
                    endpoint("10.0.0.4", None, Some(true))],
                "ports": [{"name": "http-web", "port": 8080}, {"name": "api", "port": 9091}]})),
            from_json(serde_json::json!({
                "metadata": {"name": "web-fqdn", "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "FQDN",
                "endpoints": [endpoint("web.example.com", None, Some(true))]})),
        ];
        let pods: PodLabels = [
            (
                ("shop".to_string(), "web-v1".to_string()),
                Labels::from([("version".into(), "v1".into())]),
            ),
            (
                ("shop".to_string(), "web-v2".to_string()),
                Labels::from([("version".into(), "v2".into())]),
            ),
        ]
        .into();
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        let se = service_entry(&svc, &refs, &pods).expect("an entry");
        assert_eq!(se.hosts, ["web.shop.svc.cluster.local"]);
        assert_eq!(se.export_to, [".", "istio-system"]);
        let ports: Vec<_> = se
            .ports
            .iter()
            .map(|p| {
                (
                    p.number.map(|n| n.0),
                    p.name.as_deref(),
                    p.protocol.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (Some(80), Some("http-web"), Some("HTTP")),
                (Some(9090), Some("api"), Some("GRPC"))
            ]
        );
        // Ready (or unset) only, sorted; the terminating one and the FQDN slice are out.
        let eps: Vec<_> = se
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.address.as_deref(),
                    e.labels.get("version").map(String::as_str),
                )
            })
            .collect();
        assert_eq!(
            eps,
            [
                (Some("10.0.0.1"), Some("v1")),
                (Some("10.0.0.2"), Some("v2")),
                (Some("10.0.0.4"), None)
            ]
        );
        assert_eq!(se.endpoints[0].ports.get("http-web"), Some(&Int(8080)));
        assert_eq!(se.endpoints[0].ports.get("api"), Some(&Int(9091)));
    }

    #[test]
    fn readiness_alone_decides_whatever_serving_and_terminating_say() {
        let e = |c: serde_json::Value| -> k8s_openapi::api::discovery::v1::Endpoint {
            from_json(serde_json::json!({"addresses": ["10.0.0.1"], "conditions": c}))
        };
        // Terminating but still serving: istiod marks it TERMINATING, Envoy sends it nothing new.
        assert!(!ready(&e(
            serde_json::json!({"ready": false, "serving": true, "terminating": true})
        )));
        // Not ready, not terminating (failing its readiness probe).
        assert!(!ready(&e(
            serde_json::json!({"ready": false, "serving": false, "terminating": false})
        )));
        // publishNotReadyAddresses: ready stays true while terminating; istiod keeps it HEALTHY.
        assert!(ready(&e(
            serde_json::json!({"ready": true, "serving": true, "terminating": true})
        )));
        assert!(ready(&e(serde_json::json!({}))));
    }

    #[test]
    fn external_name_and_udp_only_services_have_no_entry_and_unnamed_ports_get_one() {
        let external: Service = from_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}}));
        assert!(service_entry(&external, &[], &PodLabels::new()).is_none());
        let udp: Service = from_json(serde_json::json!({
            "metadata": {"name": "dns", "namespace": "shop"},
            "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}}));
        assert!(service_entry(&udp, &[], &PodLabels::new()).is_none());

        let unnamed: Service = from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}));
        let slice: EndpointSlice = from_json(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [endpoint("10.0.0.9", None, Some(true))],
            "ports": [{"name": "", "port": 8080}]}));
        let se = service_entry(&unnamed, &[&slice], &PodLabels::new()).expect("an entry");
        assert_eq!(se.ports[0].name.as_deref(), Some("port-80"));
        assert_eq!(se.ports[0].target_port, Some(Int(8080)));
        assert_eq!(se.endpoints[0].ports.get("port-80"), Some(&Int(8080)));
    }

    #[test]
    fn a_ready_pod_trimmed_keeps_ip_labels_and_named_tcp_ports() {
        let mut pod: Pod = from_json(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "shop", "labels": {"version": "v2"},
                "annotations": {"big": "x"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [
                {"name": "app", "image": "a", "env": [{"name": "A", "value": "1"}], "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9000}]},
                {"name": "other", "image": "b", "ports": [{"name": "http", "containerPort": 8081}]}]},
            "status": {"phase": "Running", "podIP": "10.1.0.7", "hostIP": "10.0.0.1",
                "conditions": [{"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"}]}}));
        trim_pod(&mut pod);
        assert!(pod.metadata.managed_fields.is_none() && pod.metadata.annotations.is_none());
        let status = pod.status.as_ref().expect("status");
        assert!(status.host_ip.is_none());
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        let we = pod_workload(&pod).expect("ready");
        assert_eq!(we.address.as_deref(), Some("10.1.0.7"));
        assert_eq!(we.labels.get("version").map(String::as_str), Some("v2"));
        // The first `http` wins; UDP and unnamed ports are not in the map.
        assert_eq!(we.ports, BTreeMap::from([("http".to_string(), Int(8080))]));

        let mut unready = pod.clone();
        if let Some(c) = unready.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "False".to_string();
        }
        assert!(pod_workload(&unready).is_none());
        let mut deleting = pod.clone();
        deleting.metadata.deletion_timestamp = from_json(serde_json::json!("2026-12-07T17:00:00Z"));
        assert!(pod_workload(&deleting).is_none());
        let mut no_ip = pod;
        if let Some(s) = no_ip.status.as_mut() {
            s.pod_ip = None;
        }
        assert!(pod_workload(&no_ip).is_none());
    }

    #[test]
    fn protocol_follows_app_protocol_then_the_name_prefix() {
        assert_eq!(
            protocol(&port(Some("grpc-api"), None)).as_deref(),
            Some("GRPC")
        );
        assert_eq!(protocol(&port(Some("http"), None)).as_deref(), Some("HTTP"));
        assert_eq!(protocol(&port(Some("web"), None)), None);
        assert_eq!(
            protocol(&port(Some("web"), Some("kubernetes.io/h2c"))).as_deref(),
            Some("HTTP2")
        );
        assert_eq!(
            protocol(&port(Some("tcp-db"), Some("http"))).as_deref(),
            Some("HTTP")
        );
        assert_eq!(port_name(&port(None, None)), "port-80");
    }
}
