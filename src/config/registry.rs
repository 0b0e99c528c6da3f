//! The service registry a Kubernetes sidecar would get from istiod, built from ServiceEntries
//! and WorkloadEntries: which hosts exist, their ports, and their labelled endpoints. The
//! validator and the table compiler both read it, so they agree on what exists.

use std::collections::HashMap;

use super::istio::{Labels, Resolution, ServicePort};
use super::scope::{ProxyIdentity, ROOT_NAMESPACE, labels_subset, visible_to};
use super::{DestinationRule, Resources, ServiceEntry};
use crate::route::host::resolve_short_name;

/// Application protocol of a service port (ServiceEntry `ports[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    Other,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Protocol {
        match s.map(str::to_ascii_uppercase).as_deref() {
            None | Some("HTTP") => Protocol::Http,
            Some("HTTP2") => Protocol::Http2,
            Some("GRPC") | Some("GRPC-WEB") => Protocol::Grpc,
            Some("HTTPS") => Protocol::Https,
            Some("TLS") => Protocol::Tls,
            Some("TCP") | Some("MONGO") | Some("MYSQL") | Some("REDIS") => Protocol::Tcp,
            Some(_) => Protocol::Other,
        }
    }

    /// Upstream speaks HTTP/2 (prior knowledge) on this port.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Debug, Clone)]
pub struct Port {
    pub number: u16,
    pub name: Option<String>,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

impl Port {
    fn from_spec(p: &ServicePort) -> Option<Port> {
        let number = u16::try_from(p.number?.0).ok().filter(|n| *n > 0)?;
        Some(Port {
            number,
            name: p.name.clone(),
            protocol: Protocol::parse(p.protocol.as_deref()),
            target_port: p
                .target_port
                .and_then(|t| u16::try_from(t.0).ok())
                .filter(|t| *t > 0),
        })
    }
}

/// One workload instance behind a service.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    /// An IP, or a DNS name with `resolution: DNS`.
    pub address: String,
    /// `ports` of the WorkloadEntry: service port name → endpoint port.
    pub port_map: HashMap<String, u16>,
    pub labels: Labels,
    /// Envoy `load_balancing_weight`: 0 or unset counts as 1.
    pub weight: u32,
    /// The WorkloadEntry's name when it came from one (metrics name the workload by it).
    pub workload_name: Option<String>,
    pub namespace: String,
    pub service_account: Option<String>,
}

impl EndpointInfo {
    /// The port this endpoint listens on for service port `port`: the endpoint's own map by
    /// port name, else the service's `targetPort`, else the service port itself.
    pub fn port_for(&self, port: &Port) -> u16 {
        port.name
            .as_ref()
            .and_then(|n| self.port_map.get(n).copied())
            .or(port.target_port)
            .unwrap_or(port.number)
    }
}

#[derive(Debug, Clone)]
pub struct Service<'a> {
    /// Fully qualified host (`frontend.default.svc.cluster.local`, `api.example.com`, `*.x.com`).
    pub host: String,
    pub namespace: String,
    pub entry: &'a ServiceEntry,
    pub ports: Vec<Port>,
    pub resolution: Resolution,
    pub endpoints: Vec<EndpointInfo>,
}

impl Service<'_> {
    /// Endpoints whose labels contain every subset label (Istio `SubsetOf`); empty labels
    /// select all.
    pub fn subset_endpoints<'s>(
        &'s self,
        subset_labels: &'s Labels,
    ) -> impl Iterator<Item = &'s EndpointInfo> + 's {
        self.endpoints
            .iter()
            .filter(move |e| labels_subset(subset_labels, &e.labels))
    }

    pub fn port(&self, number: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// Hosts known to this proxy, first ServiceEntry wins per host.
#[derive(Debug, Default)]
pub struct Registry<'a> {
    pub services: Vec<Service<'a>>,
    by_host: HashMap<String, usize>,
    wildcard: Vec<usize>,
    /// ServiceEntry hosts that an earlier ServiceEntry already defined (for reporting).
    pub shadowed: Vec<(&'a ServiceEntry, String)>,
}

impl<'a> Registry<'a> {
    /// What a proxy serves from: ServiceEntries only.
    pub fn build(res: &'a Resources, me: &ProxyIdentity) -> Registry<'a> {
        Self::build_from(res, me, &res.service_entries)
    }

    /// What `validate` judges against: also the Kubernetes Services of a manifests folder
    /// (after the ServiceEntries, which win a shared host), with their pods as endpoints that
    /// have labels but no address.
    pub fn build_for_analysis(res: &'a Resources, me: &ProxyIdentity) -> Registry<'a> {
        let mut reg = Self::build_from(res, me, &res.service_entries);
        let kube = Self::build_from(res, me, &res.kube_services);
        for svc in kube.services {
            if reg.by_host.contains_key(&svc.host) {
                continue;
            }
            let idx = reg.services.len();
            if svc.host.starts_with('*') {
                reg.wildcard.push(idx);
            }
            reg.by_host.insert(svc.host.clone(), idx);
            reg.services.push(svc);
        }
        reg
    }

    fn build_from(
        res: &'a Resources,
        me: &ProxyIdentity,
        entries: &'a [ServiceEntry],
    ) -> Registry<'a> {
        let mut reg = Registry::default();
        for se in entries {
            if !visible_to(&se.spec.export_to, &se.namespace, &me.namespace) {
                continue;
            }
            let endpoints = endpoints_of(res, se);
            let ports: Vec<Port> = se.spec.ports.iter().filter_map(Port::from_spec).collect();
            for raw in &se.spec.hosts {
                let host = resolve_short_name(raw, &se.namespace);
                if reg.by_host.contains_key(&host) {
                    reg.shadowed.push((se, host));
                    continue;
                }
                let idx = reg.services.len();
                if host.starts_with('*') {
                    reg.wildcard.push(idx);
                }
                reg.by_host.insert(host.clone(), idx);
                reg.services.push(Service {
                    host,
                    namespace: se.namespace.clone(),
                    entry: se,
                    ports: ports.clone(),
                    resolution: se.spec.resolution.unwrap_or(Resolution::None),
                    endpoints: endpoints.clone(),
                });
            }
        }
        // Longest wildcard first, so `*.a.example.com` beats `*.example.com`.
        reg.wildcard
            .sort_by_key(|&i| std::cmp::Reverse(reg.services[i].host.len()));
        reg
    }

    /// The service for a fully qualified destination host: exact, else the longest wildcard
    /// ServiceEntry host covering it.
    pub fn service(&self, fqdn: &str) -> Option<&Service<'a>> {
        if let Some(&i) = self.by_host.get(fqdn) {
            return Some(&self.services[i]);
        }
        self.wildcard
            .iter()
            .map(|&i| &self.services[i])
            .find(|s| wildcard_covers(&s.host, fqdn))
    }
}

/// `*.example.com` covers `a.example.com` and `a.b.example.com`, never `example.com`; `*`
/// covers everything.
pub fn wildcard_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

fn endpoints_of(res: &Resources, se: &ServiceEntry) -> Vec<EndpointInfo> {
    // A Service read from manifests names its pods by selector; one read from the API server
    // (`crate::source::kubernetes`) has no selector but its EndpointSlices' ready addresses.
    if let (true, Some(selector)) = (se.kind == "Service", &se.spec.workload_selector) {
        return super::kube::pods(&res.workloads, &se.namespace, &selector.labels)
            .map(|labels| EndpointInfo {
                address: String::new(),
                port_map: HashMap::new(),
                labels: labels.clone(),
                weight: 1,
                workload_name: None,
                namespace: se.namespace.clone(),
                service_account: None,
            })
            .collect();
    }
    if !se.spec.endpoints.is_empty() {
        return se
            .spec
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(EndpointInfo {
                    address: e.address.clone()?,
                    port_map: port_map(&e.ports),
                    labels: e.labels.clone(),
                    weight: weight(e.weight),
                    workload_name: None,
                    namespace: se.namespace.clone(),
                    service_account: e.service_account.clone(),
                })
            })
            .collect();
    }
    let Some(selector) = &se.spec.workload_selector else {
        return Vec::new();
    };
    res.workload_entries
        .iter()
        .filter(|we| {
            we.namespace == se.namespace && labels_subset(&selector.labels, &we.spec.labels)
        })
        .filter_map(|we| {
            Some(EndpointInfo {
                address: we.spec.address.clone()?,
                port_map: port_map(&we.spec.ports),
                labels: we.spec.labels.clone(),
                weight: weight(we.spec.weight),
                workload_name: Some(we.meta.name.clone()),
                namespace: we.namespace.clone(),
                service_account: we.spec.service_account.clone(),
            })
        })
        .collect()
}

fn port_map(ports: &std::collections::BTreeMap<String, super::istio::Int>) -> HashMap<String, u16> {
    ports
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), u16::try_from(v.0).ok().filter(|p| *p > 0)?)))
        .collect()
}

fn weight(w: Option<super::istio::Int>) -> u32 {
    match w.map(|w| w.0) {
        Some(w) if w > 0 => u32::try_from(w).unwrap_or(u32::MAX),
        _ => 1,
    }
}

/// The DestinationRules that apply to `fqdn` for a proxy in `me.namespace`, in Istio's lookup
/// order: the proxy's namespace, then the service's, then the root namespace; within one
/// namespace, an exact host before wildcards, then load order. Subsets merge first-wins over
/// this list, and only the first top-level `trafficPolicy` counts.
pub fn destination_rules_for<'r>(
    res: &'r Resources,
    fqdn: &str,
    service_ns: Option<&str>,
    me: &ProxyIdentity,
) -> Vec<&'r DestinationRule> {
    let mut found: Vec<(u8, u8, usize, &DestinationRule)> = Vec::new();
    for dr in &res.destination_rules {
        if !visible_to(&dr.spec.export_to, &dr.namespace, &me.namespace) {
            continue;
        }
        let host = resolve_short_name(&dr.spec.host, &dr.namespace);
        let specificity = if host == fqdn {
            0
        } else if wildcard_covers(&host, fqdn) {
            1
        } else {
            continue;
        };
        let ns_rank = if dr.namespace == me.namespace {
            0
        } else if Some(dr.namespace.as_str()) == service_ns {
            1
        } else if dr.namespace == ROOT_NAMESPACE {
            2
        } else {
            3
        };
        found.push((ns_rank, specificity, dr.order, dr));
    }
    found.sort_by_key(|(ns, spec, order, _)| (*ns, *spec, *order));
    found.into_iter().map(|(_, _, _, dr)| dr).collect()
}
