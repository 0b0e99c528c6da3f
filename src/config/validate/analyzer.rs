//! `istioctl analyze`'s cross-resource checks as each resource is visited: scope (exportTo,
//! namespaces), references to hosts and subsets (`IST0101`), conflicting and shadowed mesh hosts
//! (`IST0109`, `IST0002`), TLS ports. The resource's own schema lives in its own file.

use super::*;

impl Validator<'_> {
    pub(super) fn virtual_service(&mut self, vs: &VirtualService) {
        self.out.virtual_service_schema(vs);
        self.out.unreachable_http(vs);
        self.out.unreachable_l4(vs, "tcp", &vs.spec.tcp);
        self.out.unreachable_l4(vs, "tls", &vs.spec.tls);

        let spec = &vs.spec;
        let own = self.hosts.each_own();
        if !binds_mesh(&spec.gateways) {
            if own {
                // istioctl checks where a gateway's routes go too; this is no sidecar's view.
                self.vs_references(vs);
                return;
            }
            self.out.push(
                vs,
                Severity::Info,
                codes::NOT_APPLICABLE,
                "spec.gateways",
                format!(
                    "applies to gateways only ({}); not served by a sidecar",
                    spec.gateways.join(", ")
                ),
            );
            return;
        }
        let me = &self.hosts.identity(&vs.namespace).namespace;
        if !own && !visible_to(&spec.export_to, &vs.namespace, me) {
            self.out.not_exported(vs, &spec.export_to, me);
            return;
        }
        self.vs_references(vs);
        self.out.vs_gaps(vs);
    }

    pub(super) fn vs_references(&mut self, vs: &VirtualService) {
        for (i, rule) in vs.spec.http.iter().enumerate() {
            for (j, rd) in rule.route.iter().enumerate() {
                let path = format!("spec.http[{i}].route[{j}].destination");
                self.destination_reference(vs, &rd.destination, &path, "host");
            }
            if let Some(m) = &rule.mirror {
                self.destination_reference(vs, m, &format!("spec.http[{i}].mirror"), "mirror host");
            }
            for (j, m) in rule.mirrors.iter().enumerate() {
                let path = format!("spec.http[{i}].mirrors[{j}].destination");
                self.destination_reference(vs, &m.destination, &path, "mirror host");
            }
            if let Some(d) = rule.delegate.as_ref().filter(|d| !d.name.is_empty()) {
                let ns = d
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(vs.namespace.as_str());
                let found = self
                    .res
                    .virtual_services
                    .iter()
                    .any(|t| t.meta.name == d.name && t.namespace == ns);
                if !found {
                    self.out.push(
                        vs,
                        Severity::Error,
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        format!("spec.http[{i}].delegate.name"),
                        format!(
                            "Referenced delegate VirtualService not found: \"{ns}/{}\"",
                            d.name
                        ),
                    );
                }
            }
        }
    }

    /// Istio's DestinationHostAnalyzer and DestinationRuleAnalyzer for one destination.
    pub(super) fn destination_reference(
        &mut self,
        vs: &VirtualService,
        d: &Destination,
        path: &str,
        what: &str,
    ) {
        if d.host.is_empty() {
            // Also a schema error; istioctl's host analyzer reports the empty host as well.
            self.out.push(
                vs,
                Severity::Error,
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                format!("{path}.host"),
                format!("Referenced {what} not found: \"\""),
            );
            return;
        }
        if d.host == "*" {
            return; // already a schema error
        }
        let fqdn = resolve_short_name(&d.host, &vs.namespace);
        let service = self.hosts.service(&vs.namespace, &vs.spec.export_to, &fqdn);
        match service {
            None => self.out.push(
                vs,
                Severity::Error,
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                format!("{path}.host"),
                format!(
                    "Referenced {what} not found: \"{fqdn}\"{}",
                    kube_only(self.res, self.mode, &fqdn)
                ),
            ),
            Some(svc) => match d.port.as_ref().and_then(|p| p.number) {
                None if svc.ports.len() > 1 => {
                    let ports: Vec<String> =
                        svc.ports.iter().map(|p| p.number.to_string()).collect();
                    self.out.push(
                        vs,
                        Severity::Error,
                        codes::DESTINATION_PORT_SELECTOR_REQUIRED,
                        format!("{path}.host"),
                        format!(
                            "This VirtualService routes to a service \"{fqdn}\" that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                            ports.join(" ")
                        ),
                    );
                }
                // An out-of-range number is already a schema error.
                Some(Int(n)) if u16::try_from(n).is_ok_and(|p| p != 0 && svc.port(p).is_none()) => {
                    self.out.push(
                        vs,
                        Severity::Error,
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        format!("{path}.port.number"),
                        format!("Referenced host:port not found: \"{fqdn}:{n}\""),
                    );
                }
                _ => {}
            },
        }
        let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else {
            return;
        };
        let service_ns = service.map(|s| s.namespace.as_str());
        let me = self.hosts.identity(&vs.namespace);
        let defined = destination_rules_for(self.res, &fqdn, service_ns, &me)
            .iter()
            .any(|dr| dr.spec.subsets.iter().any(|s| s.name == subset));
        if !defined {
            self.out.push(
                vs,
                Severity::Error,
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                format!("{path}.subset"),
                format!("Referenced host+subset in destinationrule not found: \"{fqdn}+{subset}\""),
            );
        }
    }

    pub(super) fn destination_rule(&mut self, dr: &DestinationRule) {
        let me = &self.hosts.identity(&dr.namespace).namespace;
        let visible = self.hosts.each_own() || visible_to(&dr.spec.export_to, &dr.namespace, me);
        self.out.destination_rule_schema(dr, visible);
        if !visible {
            self.out.not_exported(dr, &dr.spec.export_to, me);
            return;
        }
        if dr.spec.workload_selector.is_some() {
            self.out.gap(
                dr,
                "DestinationRule.workloadSelector",
                "spec.workloadSelector",
            );
        }
        if dr.spec.host.is_empty() {
            return;
        }
        let fqdn = resolve_short_name(&dr.spec.host, &dr.namespace);
        let views = self.hosts.views(&dr.namespace, &dr.spec.export_to);
        let service = if fqdn.starts_with('*') {
            views.iter().find_map(|reg| {
                reg.services
                    .iter()
                    .find(|s| s.host == fqdn || wildcard_covers(&fqdn, &s.host))
            })
        } else {
            views.iter().find_map(|reg| reg.service(&fqdn))
        };
        let Some(svc) = service else {
            let what = if self.mode == Mode::Serve {
                "ServiceEntry"
            } else {
                "ServiceEntry or Service"
            };
            self.out.push(
                dr,
                Severity::Warning,
                codes::UNKNOWN_DR_HOST,
                "spec.host",
                format!(
                    "DestinationRule for non-existent service \"{fqdn}\": no visible {what} defines it{}",
                    kube_only(self.res, self.mode, &fqdn)
                ),
            );
            return;
        };
        // A wildcard rule covers several services; which of them a subset must select is unclear.
        if fqdn.starts_with('*') || !endpoints_are_known(svc) {
            return;
        }
        let selected = if svc.entry.kind == "Service" {
            "pods"
        } else {
            "endpoints"
        };
        for (k, subset) in dr.spec.subsets.iter().enumerate() {
            if svc.subset_endpoints(&subset.labels).next().is_none() {
                self.out.push(
                    dr,
                    Severity::Error,
                    codes::SUBSET_SELECTS_NOTHING,
                    format!("spec.subsets[{k}].name"),
                    format!(
                        "The Subset {} defined in the DestinationRule does not select any {selected} of \"{}\", which may lead to 503 UH (NoHealthyUpstream).",
                        subset.name, svc.host
                    ),
                );
            }
        }
    }

    pub(super) fn service_entry(&mut self, se: &ServiceEntry) {
        self.out.service_entry_schema(se);
        let me = &self.hosts.identity(&se.namespace).namespace;
        if !self.hosts.each_own() && !visible_to(&se.spec.export_to, &se.namespace, me) {
            self.out.not_exported(se, &se.spec.export_to, me);
            return;
        }
        if !se.spec.subject_alt_names.is_empty() {
            self.out.gap(se, "subjectAltNames", "spec.subjectAltNames");
        }
        if se.spec.resolution == Some(Resolution::DynamicDns) {
            self.out
                .gap(se, "resolution: DYNAMIC_DNS", "spec.resolution");
        }
        self.tls_ports(se);
    }

    /// An Istio sidecar passes `HTTPS`/`TLS` ports through, the application doing TLS; our
    /// clients speak plain HTTP to us, so such a port is only reached over TLS when a
    /// DestinationRule originates it (SIMPLE/MUTUAL at top, port or subset level). And TLS is
    /// only originated from endpoint pools, which `resolution: NONE` without endpoints (the
    /// address the request names) does not use, so that combination is refused.
    pub(super) fn tls_ports(&mut self, se: &ServiceEntry) {
        use crate::config::registry::Protocol;
        for (k, port) in se.spec.ports.iter().enumerate() {
            let Some(number) = port.number.and_then(|n| u16::try_from(n.0).ok()) else {
                continue;
            };
            let https = matches!(
                Protocol::parse(port.protocol.as_deref()),
                Protocol::Https | Protocol::Tls
            );
            let (mut all, mut passthrough) = (true, false);
            let me = self.hosts.identity(&se.namespace);
            for host in &se.spec.hosts {
                let fqdn = resolve_short_name(host, &se.namespace);
                let drs = destination_rules_for(self.res, &fqdn, Some(&se.namespace), &me);
                let top = drs.iter().find_map(|dr| dr.spec.traffic_policy.as_ref());
                let subsets = drs
                    .iter()
                    .flat_map(|dr| dr.spec.subsets.iter())
                    .map(|s| s.traffic_policy.as_ref());
                let originates: Vec<bool> = std::iter::once(None)
                    .chain(subsets)
                    .map(|subset| {
                        crate::upstream::policy::ClusterPolicy::resolve(top, subset, number)
                            .tls
                            .is_some_and(|t| {
                                matches!(t.mode, Some(TlsMode::Simple | TlsMode::Mutual))
                            })
                    })
                    .collect();
                all &= originates.iter().any(|o| *o);
                let original_dst =
                    self.hosts
                        .service(&se.namespace, &[], &fqdn)
                        .is_some_and(|svc| {
                            svc.resolution == Resolution::None && svc.endpoints.is_empty()
                        });
                passthrough |= original_dst && originates.iter().any(|o| *o);
            }
            let path = format!("spec.ports[{k}].protocol");
            if passthrough {
                self.out
                    .gap(se, "tls origination with resolution: NONE", path);
            } else if https && !all {
                self.out.gap(se, "ports.protocol: HTTPS/TLS", path);
            }
        }
    }

    /// Istio's ConflictingMeshGatewayHostsAnalyzer: mesh-bound VirtualServices that claim one host
    /// within one exportTo scope. Each VirtualService is reported once, at its first conflicting
    /// host, naming every VirtualService in that conflict in load order.
    pub(super) fn conflicting_mesh_hosts(&mut self) {
        struct Claim<'r> {
            vs: &'r VirtualService,
            host_index: usize,
            /// `None`: exported everywhere.
            scope: Option<String>,
            fqdn: String,
        }
        let res = self.res;
        let mut claims: Vec<Claim> = Vec::new();
        for vs in &res.virtual_services {
            if !binds_mesh(&vs.spec.gateways) {
                continue;
            }
            let export = &vs.spec.export_to;
            let scopes: Vec<Option<String>> =
                if export.is_empty() || export.iter().any(|e| e == "*") {
                    vec![None]
                } else {
                    let mut seen = Vec::new();
                    for e in export {
                        let ns = if e == "." {
                            vs.namespace.clone()
                        } else {
                            e.clone()
                        };
                        if ns != "~" && !seen.contains(&Some(ns.clone())) {
                            seen.push(Some(ns));
                        }
                    }
                    seen
                };
            for (host_index, host) in vs.spec.hosts.iter().enumerate() {
                let fqdn = resolve_short_name(host, &vs.namespace);
                for scope in &scopes {
                    claims.push(Claim {
                        vs,
                        host_index,
                        scope: scope.clone(),
                        fqdn: fqdn.clone(),
                    });
                }
            }
        }
        let conflict = |a: &Claim, b: &Claim| match (&a.scope, &b.scope) {
            (None, None) => a.fqdn == b.fqdn,
            (Some(x), Some(y)) => x == y && a.fqdn == b.fqdn,
            // Istio matches a namespace-scoped host against everything exported everywhere with
            // wildcard semantics.
            _ => hosts_overlap(&a.fqdn, &b.fqdn),
        };
        let mut reported: HashSet<(String, String)> = HashSet::new();
        for a in &claims {
            let key = (a.vs.namespace.clone(), a.vs.meta.name.clone());
            if reported.contains(&key) {
                continue;
            }
            let mut group: Vec<&VirtualService> = claims
                .iter()
                .filter(|b| !std::ptr::eq(b.vs, a.vs) && conflict(a, b))
                .map(|b| b.vs)
                .collect();
            if group.is_empty() {
                continue;
            }
            group.push(a.vs);
            group.sort_by_key(|v| v.order);
            group.dedup_by_key(|v| v.order);
            let names: Vec<String> = group
                .iter()
                .map(|v| format!("{}/{}", v.namespace, v.meta.name))
                .collect();
            reported.insert(key);
            self.out.push(
                a.vs,
                Severity::Error,
                codes::CONFLICTING_MESH_GATEWAY_HOSTS,
                format!("spec.hosts[{}]", a.host_index),
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource. A sidecar uses the first loaded ({}) for this host.",
                    names.join(","),
                    a.fqdn,
                    names[0]
                ),
            );
        }
    }

    pub(super) fn shadowed_hosts(&mut self) {
        for (se, host, first) in self.hosts.shadowed() {
            let index = se
                .spec
                .hosts
                .iter()
                .position(|h| resolve_short_name(h, &se.namespace) == host)
                .unwrap_or(0);
            self.out.push(
                se,
                Severity::Warning,
                codes::NOT_APPLICABLE,
                format!("spec.hosts[{index}]"),
                format!(
                    "host \"{host}\" is already defined by ServiceEntry {first} (loaded earlier); this definition is ignored"
                ),
            );
        }
    }
}

/// For `run`, which reads endpoints from ServiceEntries only: why a host that a Kubernetes
/// Service in the files names is still unknown.
pub(super) fn kube_only(res: &Resources, mode: Mode, fqdn: &str) -> &'static str {
    if mode == Mode::Serve
        && res
            .kube_services
            .iter()
            .any(|s| s.spec.hosts.iter().any(|h| h == fqdn))
    {
        " (a Kubernetes Service defines it, but switchyard serves only hosts with a ServiceEntry, which gives their endpoints: add one)"
    } else {
        ""
    }
}

/// Whether a service's endpoint list says anything about its subsets. With DNS resolution and no
/// endpoints listed, the host name itself is the endpoint; with NONE, traffic goes to the original
/// destination; neither has labels a subset could select.
pub(super) fn endpoints_are_known(svc: &Service) -> bool {
    if svc.entry.kind == "Service" {
        return crate::config::kube::endpoints_known(svc.entry);
    }
    match svc.resolution {
        Resolution::Static => true,
        Resolution::Dns | Resolution::DnsRoundRobin => !svc.entry.spec.endpoints.is_empty(),
        Resolution::None | Resolution::DynamicDns => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Output helpers
