//! Decides whether a configuration can be served, and tells the user everything wrong with it at
//! once. Three layers, in the order Istio applies them:
//!
//! 1. the admission webhook's schema checks (`IST0106`, warnings `IST0133`): a config Istio's API
//!    server would refuse is refused here too;
//! 2. `istioctl analyze`'s cross-resource checks (`IST0101`, `IST0109`, `IST0112`, `IST0130`,
//!    `IST0131`, `IST0173`, `IST0174`, `IST0002`);
//! 3. switchyard's own notes: fields it reads but does not act on yet (`SY0002`, one table,
//!    [`NOT_IMPLEMENTED`]) and resources that do not apply to this proxy (`SY0004`).
//!
//! `istioctl analyze` looks at every resource it is given, so layer 1 and the structural checks
//! run on everything. Reference checks (does this host exist?) depend on where they are judged
//! from ([`Mode`]): as istioctl, from each resource's own namespace; or as one sidecar, only on
//! resources it would serve, because a gateway's VirtualService points at services it cannot see.

use std::collections::HashSet;
use std::net::IpAddr;

use super::diagnostic::{Diagnostic, Severity, codes};
use super::duration::{check_istio_duration, parse_go_duration};
use super::istio::{
    Bool, ClientTlsSettings, ConnectionPoolSettings, CorsPolicy, Destination, Headers,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute, Int,
    LoadBalancerSettings, Opaque, OutlierDetection, Percent, Resolution, StringMatch, TlsMode,
    TrafficPolicy, WorkloadEntrySpec,
};
use super::registry::{Service, destination_rules_for, wildcard_covers};
use super::scope::{ProxyIdentity, binds_mesh, visible_to};
use super::{DestinationRule, Resource, Resources, ServiceEntry, VirtualService, WorkloadEntry};
use crate::route::host::resolve_short_name;
use crate::route::matcher::StringMatcher;

mod perspective;
mod reachability;

use perspective::Hosts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `switchyard validate --namespace N`: as strict as `istioctl analyze`, references judged
    /// from one proxy in the identity's namespace.
    Analyze,
    /// `switchyard validate` (`--all-namespaces`): as strict, every resource judged from its
    /// own namespace (or its `exportTo` namespaces), as `istioctl analyze` does.
    AnalyzeAll,
    /// `run` and every reload: what decides whether a config is served.
    Serve,
}

pub struct ValidateOptions<'a> {
    pub identity: &'a ProxyIdentity,
    pub mode: Mode,
    pub istio_mutual_as_plaintext: bool,
}

/// Findings a sidecar would still serve through: Errors for `validate`, Warnings when serving.
/// A subset with no endpoints answers 503 UH (scaling a canary to zero must not block a reload);
/// two mesh VirtualServices for one host are resolved by "first loaded wins", as on a sidecar;
/// a destination without `port` on a multi-port service takes the port the request addressed,
/// as a sidecar takes its listener's (the webhook accepts it; only `istioctl analyze` objects).
const SERVED_ANYWAY: [&str; 3] = [
    codes::SUBSET_SELECTS_NOTHING,
    codes::CONFLICTING_MESH_GATEWAY_HOSTS,
    codes::DESTINATION_PORT_SELECTOR_REQUIRED,
];

/// A field Istio defines that switchyard reads but does not act on yet.
struct Gap {
    key: &'static str,
    severity: Severity,
    /// Empty: "<key> is not implemented yet; ignored".
    message: &'static str,
}

const fn ignored(key: &'static str) -> Gap {
    Gap {
        key,
        severity: Severity::Warning,
        message: "",
    }
}

const fn refused(key: &'static str, message: &'static str) -> Gap {
    Gap {
        key,
        severity: Severity::Error,
        message,
    }
}

/// Everything switchyard reads but does not act on, so nothing is dropped silently. Tuning that is
/// ignored is a Warning; anything whose absence would weaken security or send traffic somewhere
/// the user did not ask for is an Error, so such a config is refused. When a feature lands,
/// delete its row: the checks look fields up here by key and stay quiet for keys that are gone.
const NOT_IMPLEMENTED: &[Gap] = &[
    // VirtualService http[] (timeout, retries and fault are served)
    ignored("retries.retryRemoteLocalities"),
    Gap {
        message: "fault.delay.exponentialDelay is not supported by Istio's translation; ignored",
        ..ignored("fault.delay.exponentialDelay")
    },
    Gap {
        message: "fault.abort.http2Error is not supported by Istio's translation; ignored",
        ..ignored("fault.abort.http2Error")
    },
    // VirtualService L4
    Gap {
        message: "tcp routes are not served by an HTTP proxy",
        ..ignored("tcp")
    },
    Gap {
        message: "tls routes are not served by an HTTP proxy",
        ..ignored("tls")
    },
    // DestinationRule trafficPolicy (top level, subsets, port level)
    ignored("connectionPool.http.h2UpgradePolicy"),
    ignored("connectionPool.http.useClientProtocol"),
    ignored("connectionPool.http.maxConcurrentStreams"),
    ignored("connectionPool.http.http2KeepAlive"),
    ignored("connectionPool.tcp.tcpKeepalive"),
    ignored("connectionPool.tcp.idleTimeout"),
    ignored("connectionPool.tcp.maxConnectionDuration"),
    ignored("outlierDetection.consecutiveLocalOriginFailures"),
    ignored("outlierDetection.splitExternalLocalOriginErrors"),
    ignored("loadBalancer.localityLbSetting"),
    ignored("loadBalancer.warmup"),
    ignored("loadBalancer.warmupDurationSecs"),
    ignored("tunnel"),
    ignored("proxyProtocol"),
    ignored("retryBudget"),
    Gap {
        message: "workloadSelector is not implemented yet; ignored (the rule applies to this proxy whatever its labels)",
        ..ignored("DestinationRule.workloadSelector")
    },
    refused(
        "tls.mode: ISTIO_MUTUAL",
        "ISTIO_MUTUAL needs a mesh identity switchyard does not have; use --istio-mutual-as-plaintext for local development",
    ),
    Gap {
        message: "ISTIO_MUTUAL is sent in plaintext (--istio-mutual-as-plaintext)",
        ..ignored("tls.mode: ISTIO_MUTUAL as plaintext")
    },
    // ServiceEntry
    ignored("subjectAltNames"),
    Gap {
        message: "clients speak plain HTTP to switchyard, so without a DestinationRule tls.mode SIMPLE or MUTUAL for this port requests reach it in plaintext",
        ..ignored("ports.protocol: HTTPS/TLS")
    },
    refused(
        "tls origination with resolution: NONE",
        "a DestinationRule sets tls.mode SIMPLE or MUTUAL, but TLS is not originated to the address a request names (resolution NONE without endpoints): use resolution DNS or STATIC",
    ),
    Gap {
        message: "resolution DYNAMIC_DNS is not implemented yet; ignored",
        ..ignored("resolution: DYNAMIC_DNS")
    },
];

/// All diagnostics for `res` (not including `res.diagnostics`, which the loader already holds),
/// sorted by file, line.
pub fn validate(res: &Resources, opts: &ValidateOptions) -> Vec<Diagnostic> {
    let mut v = Validator {
        res,
        mode: opts.mode,
        hosts: Hosts::new(res, opts.identity, opts.mode),
        out: Out {
            diags: Vec::new(),
            istio_mutual_as_plaintext: opts.istio_mutual_as_plaintext,
        },
    };
    for vs in &res.virtual_services {
        v.virtual_service(vs);
    }
    for dr in &res.destination_rules {
        v.destination_rule(dr);
    }
    for se in &res.service_entries {
        v.service_entry(se);
    }
    for we in &res.workload_entries {
        v.out.workload_entry(we);
    }
    v.conflicting_mesh_hosts();
    v.shadowed_hosts();

    let mut diags = v.out.diags;
    if opts.mode == Mode::Serve {
        for d in &mut diags {
            if d.severity == Severity::Error && SERVED_ANYWAY.contains(&d.code) {
                d.severity = Severity::Warning;
            }
        }
    }
    // Stable, so findings on one line keep the order they were found in.
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    diags
}

struct Validator<'a> {
    res: &'a Resources,
    mode: Mode,
    hosts: Hosts<'a>,
    out: Out,
}

/// Where findings go. Kept apart from the registry so a check can hold a `&Service` while it
/// reports.
struct Out {
    diags: Vec<Diagnostic>,
    istio_mutual_as_plaintext: bool,
}

// ---------------------------------------------------------------------------------------------
// Scope and cross-resource checks (analyzer)

impl Validator<'_> {
    fn virtual_service(&mut self, vs: &VirtualService) {
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

    fn vs_references(&mut self, vs: &VirtualService) {
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
    fn destination_reference(
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

    fn destination_rule(&mut self, dr: &DestinationRule) {
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

    fn service_entry(&mut self, se: &ServiceEntry) {
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
    fn tls_ports(&mut self, se: &ServiceEntry) {
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
    fn conflicting_mesh_hosts(&mut self) {
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

    fn shadowed_hosts(&mut self) {
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
fn kube_only(res: &Resources, mode: Mode, fqdn: &str) -> &'static str {
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
fn endpoints_are_known(svc: &Service) -> bool {
    if svc.entry.kind == "Service" {
        return super::kube::endpoints_known(svc.entry);
    }
    match svc.resolution {
        Resolution::Static => true,
        Resolution::Dns | Resolution::DnsRoundRobin => !svc.entry.spec.endpoints.is_empty(),
        Resolution::None | Resolution::DynamicDns => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Output helpers

impl Out {
    fn push<S>(
        &mut self,
        r: &Resource<S>,
        severity: Severity,
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.diags.push(r.diag(severity, code, path, message));
    }

    /// What the admission webhook would reject.
    fn schema<S>(&mut self, r: &Resource<S>, path: impl Into<String>, message: impl Into<String>) {
        self.push(
            r,
            Severity::Error,
            codes::SCHEMA_VALIDATION_ERROR,
            path,
            message,
        );
    }

    /// What the admission webhook would accept with a warning.
    fn schema_warning<S>(
        &mut self,
        r: &Resource<S>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(r, Severity::Warning, codes::SCHEMA_WARNING, path, message);
    }

    /// `new` lists the replacements, each quoted.
    fn deprecated<S>(&mut self, r: &Resource<S>, path: impl Into<String>, old: &str, new: &str) {
        self.push(
            r,
            Severity::Warning,
            codes::DEPRECATED,
            path,
            format!("Deprecated: \"{old}\" is deprecated; use {new}"),
        );
    }

    fn gap<S>(&mut self, r: &Resource<S>, key: &str, path: impl Into<String>) {
        if let Some(g) = NOT_IMPLEMENTED.iter().find(|g| g.key == key) {
            let message = if g.message.is_empty() {
                format!("{} is not implemented yet; ignored", g.key)
            } else {
                g.message.to_string()
            };
            self.push(r, g.severity, codes::NOT_IMPLEMENTED, path, message);
        }
    }

    fn not_exported<S>(&mut self, r: &Resource<S>, export_to: &[String], ns: &str) {
        self.push(
            r,
            Severity::Info,
            codes::NOT_APPLICABLE,
            "spec.exportTo",
            format!(
                "not exported to namespace \"{ns}\" (exportTo: {}); ignored by this proxy",
                export_to.join(", ")
            ),
        );
    }

    fn duration<S>(&mut self, r: &Resource<S>, path: String, value: &str, rule: DurationRule) {
        let d = match parse_go_duration(value) {
            Ok(d) => d,
            Err(e) => return self.schema(r, path, e.to_string()),
        };
        let problem = match rule {
            DurationRule::AtLeast1ms | DurationRule::Timeout => check_istio_duration(d).err(),
            DurationRule::ZeroOr1ms if d.is_zero() => None,
            DurationRule::ZeroOr1ms => check_istio_duration(d).err(),
            DurationRule::WholeSeconds => check_istio_duration(d).err().or_else(|| {
                (d.subsec_nanos() != 0)
                    .then(|| "max_age duration is accurate only to seconds precision".to_string())
            }),
            DurationRule::Any => None,
        };
        if let Some(p) = problem {
            let hint = if rule == DurationRule::Timeout && d.is_zero() {
                "; leave the field out for no timeout"
            } else {
                ""
            };
            self.schema(r, path, format!("invalid duration {value:?}: {p}{hint}"));
        }
    }

    fn percentage<S>(&mut self, r: &Resource<S>, path: String, p: &Percent) {
        let v = p.value.0;
        if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            self.schema(
                r,
                path,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }

    fn non_negative<S>(&mut self, r: &Resource<S>, path: String, v: Option<Int>, what: &str) {
        if let Some(n) = v.map(|v| v.0).filter(|n| *n < 0) {
            self.schema(r, path, format!("{what} must be non-negative (got {n})"));
        }
    }

    fn percent_0_100<S>(&mut self, r: &Resource<S>, path: String, v: Option<Int>) {
        if let Some(n) = v.map(|v| v.0).filter(|n| !(0..=100).contains(n)) {
            self.schema(r, path, format!("percentage {n} is not in range 0..100"));
        }
    }

    fn port_number<S>(&mut self, r: &Resource<S>, path: String, n: i64) {
        if !(1..=65535).contains(&n) {
            self.schema(
                r,
                path,
                format!("port number {n} must be in the range 1..65535"),
            );
        }
    }

    fn export_to<S>(&mut self, r: &Resource<S>, export_to: &[String]) {
        let mut seen = HashSet::new();
        for (i, e) in export_to.iter().enumerate() {
            if !matches!(e.as_str(), "." | "*" | "~") && !is_dns1123_label(e) {
                self.schema(
                    r,
                    format!("spec.exportTo[{i}]"),
                    format!("invalid exportTo entry {e:?}: only ., *, ~, or a valid DNS 1123 label is allowed"),
                );
            }
            if !seen.insert(e.as_str()) {
                self.schema(
                    r,
                    format!("spec.exportTo[{i}]"),
                    format!("duplicate entries in exportTo: {e}"),
                );
            }
        }
        if export_to.len() > 1 {
            if export_to.iter().any(|e| e == "*") {
                self.schema(
                    r,
                    "spec.exportTo",
                    "cannot have both public (*) and non-public exportTo values for a resource",
                );
            }
            if export_to.iter().any(|e| e == "~") {
                self.schema(
                    r,
                    "spec.exportTo",
                    "if you want to make the resource private, please use only ~ in exportTo",
                );
            }
        }
    }

    fn gateway_names<S>(&mut self, r: &Resource<S>, names: &[String], path: &str) {
        for (i, g) in names.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match g.split_once('/') {
                Some((ns, name)) => {
                    if ns.is_empty() || name.is_empty() {
                        self.schema(r, p, "config namespace and gateway name cannot be empty");
                    } else if !is_dns1123_label(ns) {
                        self.schema(r, p, format!("invalid value for namespace: {ns:?}"));
                    } else if !is_dns1123_label(name) {
                        self.schema(r, p, format!("invalid value for gateway name: {name:?}"));
                    }
                }
                None if g.contains('.') => {
                    let (name, rest) = g.split_once('.').unwrap_or((g, ""));
                    let ns = rest.split('.').next().unwrap_or("");
                    self.schema_warning(
                        r,
                        p,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                None if !is_dns1123_label(g) => {
                    self.schema(r, p, format!("invalid gateway name {g:?}"));
                }
                None => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurationRule {
    /// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
    AtLeast1ms,
    /// As `AtLeast1ms`, with a hint for `0s`, which users write to mean "no timeout".
    Timeout,
    /// `connectionPool.tcp.idleTimeout`: `0s` means disabled.
    ZeroOr1ms,
    /// `corsPolicy.maxAge` is sent in whole seconds.
    WholeSeconds,
    /// Any non-negative duration (cookie `ttl`: `0s` makes a session cookie).
    Any,
}

// ---------------------------------------------------------------------------------------------
// VirtualService: webhook

impl Out {
    fn virtual_service_schema(&mut self, vs: &VirtualService) {
        let spec = &vs.spec;
        let delegate = spec.hosts.is_empty();
        let mesh = binds_mesh(&spec.gateways);
        if delegate {
            if !spec.gateways.is_empty() {
                self.schema(
                    vs,
                    "spec.gateways",
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !spec.tls.is_empty() {
                self.schema(
                    vs,
                    "spec.tls",
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !spec.tcp.is_empty() {
                self.schema(
                    vs,
                    "spec.tcp",
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }
        self.gateway_names(vs, &spec.gateways, "spec.gateways");
        self.vs_hosts(vs, mesh);
        if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
            self.schema(
                vs,
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, rule) in spec.http.iter().enumerate() {
            self.http_route(vs, i, rule, delegate, mesh);
        }
        self.l4_routes(vs, "tcp", &spec.tcp);
        self.l4_routes(vs, "tls", &spec.tls);
        self.export_to(vs, &spec.export_to);
    }

    fn vs_hosts(&mut self, vs: &VirtualService, mesh: bool) {
        let mut valid = true;
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            if let Err(e) = validate_wildcard_domain(host) {
                self.schema(vs, path, format!("invalid host {host:?}: {e}"));
                valid = false;
            } else if mesh && host == "*" {
                self.schema(
                    vs,
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                valid = false;
            }
        }
        if !valid {
            return;
        }
        // Compared after short-name expansion: `reviews` and `reviews.default.svc.cluster.local`
        // in one VirtualService name the same virtual host.
        let resolved: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| resolve_short_name(h, &vs.namespace))
            .collect();
        for j in 1..resolved.len() {
            if let Some(i) = (0..j).find(|&i| hosts_overlap(&resolved[i], &resolved[j])) {
                self.schema(
                    vs,
                    format!("spec.hosts[{j}]"),
                    format!(
                        "duplicate hosts in virtual service: {} & {}",
                        vs.spec.hosts[i], vs.spec.hosts[j]
                    ),
                );
            }
        }
    }

    fn http_route(
        &mut self,
        vs: &VirtualService,
        i: usize,
        rule: &HttpRoute,
        in_delegate: bool,
        mesh: bool,
    ) {
        let p = format!("spec.http[{i}]");
        let actions: Vec<&str> = [
            ("route", !rule.route.is_empty()),
            ("redirect", rule.redirect.is_some()),
            ("directResponse", rule.direct_response.is_some()),
            ("delegate", rule.delegate.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match actions.as_slice() {
            [] => self.schema(vs, &p, "HTTP route, redirect, direct response or delegate is required"),
            [_] => {}
            many => self.schema(
                vs,
                &p,
                format!("HTTP route may contain only one of route, redirect, directResponse or delegate; found {}", many.join(" and ")),
            ),
        }
        if in_delegate && rule.delegate.is_some() {
            self.schema(
                vs,
                format!("{p}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if rule.delegate.as_ref().is_some_and(|d| d.name.is_empty()) {
            self.schema(
                vs,
                format!("{p}.delegate.name"),
                "delegate name is required",
            );
        }
        for (action, set) in [
            ("redirect", rule.redirect.is_some()),
            ("direct response", rule.direct_response.is_some()),
        ] {
            if !set {
                continue;
            }
            if rule.fault.is_some() {
                self.schema(
                    vs,
                    format!("{p}.fault"),
                    format!("HTTP route cannot contain both fault and {action}"),
                );
            }
            if rule.rewrite.is_some() {
                self.schema(
                    vs,
                    format!("{p}.rewrite"),
                    format!("HTTP route rule cannot contain both rewrite and {action}"),
                );
            }
        }
        if rule.mirror.is_some() && !rule.mirrors.is_empty() {
            self.schema(
                vs,
                format!("{p}.mirrors"),
                "HTTP route cannot contain both mirror and mirrors",
            );
        }

        // Delegation merges matches by comparing them, which Istio cannot do for regexes.
        let regex_allowed = !in_delegate && rule.delegate.is_none();
        for (j, m) in rule.matches.iter().enumerate() {
            self.http_match(vs, &format!("{p}.match[{j}]"), m, regex_allowed, mesh);
        }
        if let Some(h) = &rule.headers {
            self.header_ops(vs, &format!("{p}.headers"), h);
        }
        self.authority_rewrite_once(vs, &p, rule);
        self.route_destinations(vs, &p, rule);
        if let Some(r) = &rule.redirect {
            self.redirect(vs, &format!("{p}.redirect"), r, &rule.matches);
        }
        if let Some(d) = &rule.direct_response {
            self.direct_response(vs, &format!("{p}.directResponse"), d);
        }
        if let Some(rw) = &rule.rewrite {
            self.rewrite(vs, &format!("{p}.rewrite"), rw);
        }
        if let Some(t) = &rule.timeout {
            self.duration(vs, format!("{p}.timeout"), t, DurationRule::Timeout);
        }
        if let Some(r) = &rule.retries {
            self.retries(vs, &format!("{p}.retries"), r);
        }
        if let Some(f) = &rule.fault {
            self.fault(vs, &format!("{p}.fault"), f);
        }
        if let Some(m) = &rule.mirror {
            self.destination(vs, &format!("{p}.mirror"), m);
        }
        if let Some(Int(n)) = rule.mirror_percent {
            if !(0..=100).contains(&n) {
                self.schema(
                    vs,
                    format!("{p}.mirrorPercent"),
                    format!("mirror_percent must be in range 0..100 (it has {n})"),
                );
            }
            self.deprecated(
                vs,
                format!("{p}.mirrorPercent"),
                "mirrorPercent",
                "\"mirrorPercentage\"",
            );
        }
        if let Some(pct) = &rule.mirror_percentage {
            self.mirror_percentage(vs, format!("{p}.mirrorPercentage"), pct);
        }
        for (j, m) in rule.mirrors.iter().enumerate() {
            let mp = format!("{p}.mirrors[{j}]");
            if m.destination.host.is_empty() {
                self.schema(
                    vs,
                    format!("{mp}.destination"),
                    "destination is required for mirrors",
                );
            } else {
                self.destination(vs, &format!("{mp}.destination"), &m.destination);
            }
            if let Some(pct) = &m.percentage {
                self.mirror_percentage(vs, format!("{mp}.percentage"), pct);
            }
        }
        if let Some(c) = &rule.cors_policy {
            self.cors(vs, &format!("{p}.corsPolicy"), c);
        }
    }

    fn mirror_percentage(&mut self, vs: &VirtualService, path: String, p: &Percent) {
        let v = p.value.0;
        if v.is_nan() || !(0.0..=100.0).contains(&v) {
            self.schema(
                vs,
                path,
                format!("mirror percentage must be in range 0..100 (it has {v})"),
            );
        }
    }

    fn http_match(
        &mut self,
        vs: &VirtualService,
        p: &str,
        m: &HttpMatchRequest,
        regex_allowed: bool,
        mesh: bool,
    ) {
        for (name, sm) in &m.headers {
            let hp = format!("{p}.headers.{name}");
            if let Some(e) = match_header_name_problem(name) {
                self.schema(vs, &hp, e);
            }
            if mesh && name.starts_with(JWT_CLAIM_PREFIX) {
                self.schema(
                    vs,
                    &hp,
                    format!("JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{}]", vs.spec.gateways.join(" ")),
                );
            }
            self.string_match(vs, &hp, sm, MatchKind::Header, regex_allowed);
        }
        for (name, sm) in &m.without_headers {
            let hp = format!("{p}.withoutHeaders.{name}");
            if let Some(e) = match_header_name_problem(name) {
                self.schema(vs, &hp, e);
            }
            self.string_match(vs, &hp, sm, MatchKind::WithoutHeader, regex_allowed);
        }
        if let Some(sm) = &m.uri {
            self.string_match(vs, &format!("{p}.uri"), sm, MatchKind::Uri, regex_allowed);
        }
        for (field, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                self.string_match(
                    vs,
                    &format!("{p}.{field}"),
                    sm,
                    MatchKind::Pseudo,
                    regex_allowed,
                );
            }
        }
        for (name, sm) in &m.query_params {
            self.string_match(
                vs,
                &format!("{p}.queryParams.{name}"),
                sm,
                MatchKind::Query,
                regex_allowed,
            );
        }
        if let Some(port) = m.port.map(|p| p.0).filter(|p| *p != 0) {
            self.port_number(vs, format!("{p}.port"), port);
        }
        if let Some(ns) = m
            .source_namespace
            .as_deref()
            .filter(|ns| !ns.is_empty() && !is_dns1123_label(ns))
        {
            self.schema(
                vs,
                format!("{p}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
        self.gateway_names(vs, &m.gateways, &format!("{p}.gateways"));
    }

    fn string_match(
        &mut self,
        vs: &VirtualService,
        p: &str,
        sm: &StringMatch,
        kind: MatchKind,
        regex_allowed: bool,
    ) {
        let set: Vec<&str> = [
            ("exact", sm.exact.is_some()),
            ("prefix", sm.prefix.is_some()),
            ("regex", sm.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
        if set.len() > 1 {
            self.schema(
                vs,
                p,
                format!(
                    "only one of exact, prefix or regex may be set; found {}",
                    set.join(" and ")
                ),
            );
            return;
        }
        if sm.prefix.as_deref() == Some("")
            && matches!(
                kind,
                MatchKind::Header | MatchKind::Pseudo | MatchKind::Query
            )
        {
            self.schema(
                vs,
                format!("{p}.prefix"),
                "prefix string match should not be empty",
            );
        }
        let Some(re) = &sm.regex else {
            return;
        };
        let rp = format!("{p}.regex");
        if !regex_allowed {
            self.schema(
                vs,
                rp,
                "regex match is not supported in a delegate or a route that delegates",
            );
            return;
        }
        if re.is_empty() {
            self.schema(vs, rp, "regex string match should not be empty");
            return;
        }
        // `regex: "*"` is Istio's presence check for headers and query parameters, not an RE2.
        if re == "*"
            && matches!(
                kind,
                MatchKind::Header | MatchKind::WithoutHeader | MatchKind::Query
            )
        {
            return;
        }
        if let Err(e) = regex_problem(re) {
            self.schema(vs, rp, e);
        }
    }

    fn route_destinations(&mut self, vs: &VirtualService, p: &str, rule: &HttpRoute) {
        let mut total: i64 = 0;
        for (j, rd) in rule.route.iter().enumerate() {
            let dp = format!("{p}.route[{j}]");
            if let Some(h) = &rd.headers {
                self.header_ops(vs, &format!("{dp}.headers"), h);
            }
            self.destination(vs, &format!("{dp}.destination"), &rd.destination);
            if let Some(Int(w)) = rd.weight {
                if w < 0 {
                    self.schema(vs, format!("{dp}.weight"), format!("weight {w} < 0"));
                } else if w > i64::from(i32::MAX) {
                    self.schema(
                        vs,
                        format!("{dp}.weight"),
                        format!("weight {w} is too large (at most {})", i32::MAX),
                    );
                } else {
                    total = total.saturating_add(w);
                }
            }
        }
        if rule.route.len() > 1 && total == 0 {
            self.schema(vs, format!("{p}.route"), "total destination weight = 0");
        }
    }

    fn destination(&mut self, vs: &VirtualService, p: &str, d: &Destination) {
        if d.host.is_empty() {
            self.schema(vs, format!("{p}.host"), "destination host is required");
        } else if d.host == "*" {
            self.schema(vs, format!("{p}.host"), "invalid destination host *");
        } else if let Err(e) = validate_wildcard_domain(&d.host) {
            self.schema(
                vs,
                format!("{p}.host"),
                format!("invalid destination host {:?}: {e}", d.host),
            );
        }
        if let Some(s) = d
            .subset
            .as_deref()
            .filter(|s| !s.is_empty() && !is_dns1123_label(s))
        {
            self.schema(
                vs,
                format!("{p}.subset"),
                format!("subset name is invalid: {s} (must be a DNS-1123 label: letters, digits and '-', at most 63)"),
            );
        }
        if let Some(port) = &d.port {
            self.port_number(
                vs,
                format!("{p}.port.number"),
                port.number.map_or(0, |n| n.0),
            );
        }
    }

    fn redirect(
        &mut self,
        vs: &VirtualService,
        p: &str,
        r: &HttpRedirect,
        matches: &[HttpMatchRequest],
    ) {
        let uri = r.uri.as_deref().filter(|u| !u.is_empty());
        let changes = uri.is_some()
            || r.prefix_rewrite.is_some()
            || r.authority.as_deref().is_some_and(|a| !a.is_empty())
            || r.scheme.as_deref().is_some_and(|s| !s.is_empty())
            || r.port.is_some_and(|p| p.0 != 0)
            || r.derive_port.is_some();
        if !changes {
            self.schema(
                vs,
                p,
                "redirect must specify URI, prefixRewrite, authority, scheme, or port",
            );
        }
        if uri.is_some() && r.prefix_rewrite.is_some() {
            self.schema(
                vs,
                format!("{p}.prefixRewrite"),
                "redirect may contain only one of uri or prefixRewrite",
            );
        }
        if r.prefix_rewrite.is_some()
            && (matches.is_empty()
                || matches
                    .iter()
                    .any(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_none())))
        {
            self.schema(
                vs,
                format!("{p}.prefixRewrite"),
                "prefixRewrite requires every match of the rule to be a uri prefix match",
            );
        }
        if let Some(code) = r.redirect_code.map(|c| c.0).filter(|c| *c != 0) {
            if !(300..=399).contains(&code) {
                self.schema(
                    vs,
                    format!("{p}.redirectCode"),
                    format!("{code} is not a valid redirect code, must be 3xx"),
                );
            } else if ![301, 302, 303, 307, 308].contains(&code) {
                self.schema_warning(
                    vs,
                    format!("{p}.redirectCode"),
                    format!("redirect code {code} is not one of 301, 302, 303, 307, 308; Istio drops the redirect for it"),
                );
            }
        }
        if r.scheme
            .as_deref()
            .is_some_and(|s| !matches!(s, "" | "http" | "https"))
        {
            self.schema(
                vs,
                format!("{p}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(Int(port)) = r.port {
            if port != 0 {
                self.port_number(vs, format!("{p}.port"), port);
            }
            if r.derive_port.is_some() {
                self.schema(
                    vs,
                    format!("{p}.derivePort"),
                    "redirect may contain only one of port or derivePort",
                );
            }
        }
    }

    fn direct_response(
        &mut self,
        vs: &VirtualService,
        p: &str,
        d: &super::istio::HttpDirectResponse,
    ) {
        let status = d.status.map_or(0, |s| s.0);
        if !(200..=599).contains(&status) {
            self.schema(
                vs,
                format!("{p}.status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
        let Some(body) = &d.body else {
            return;
        };
        let size = match (&body.string, &body.bytes) {
            (Some(_), Some(_)) => {
                self.schema(
                    vs,
                    format!("{p}.body"),
                    "body may contain only one of string or bytes",
                );
                return;
            }
            (Some(s), None) => s.len(),
            (None, Some(b)) => match base64_decoded_len(b) {
                Some(n) => n,
                None => {
                    self.schema(
                        vs,
                        format!("{p}.body.bytes"),
                        "body.bytes is not valid base64",
                    );
                    return;
                }
            },
            (None, None) => 0,
        };
        if size > MB {
            self.schema(
                vs,
                format!("{p}.body"),
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 * KB {
            self.schema_warning(
                vs,
                format!("{p}.body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }

    fn rewrite(&mut self, vs: &VirtualService, p: &str, rw: &super::istio::HttpRewrite) {
        let uri = rw.uri.as_deref().is_some_and(|u| !u.is_empty());
        let authority = rw.authority.as_deref().is_some_and(|a| !a.is_empty());
        if uri && rw.uri_regex_rewrite.is_some() {
            self.schema(
                vs,
                p,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if !uri && !authority && rw.uri_regex_rewrite.is_none() {
            self.schema(
                vs,
                p,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rp = format!("{p}.uriRegexRewrite");
            match (
                rr.pattern.as_deref().filter(|s| !s.is_empty()),
                rr.rewrite.as_deref().filter(|s| !s.is_empty()),
            ) {
                (Some(pattern), Some(_)) => {
                    if let Err(e) = regex_problem(pattern) {
                        self.schema(vs, format!("{rp}.match"), e);
                    }
                }
                _ => self.schema(
                    vs,
                    rp,
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                ),
            }
        }
    }

    /// Istio's `validateAuthorityRewrite`: `rewrite.authority`, and a Host or `:authority` key in
    /// `headers.request.set`/`add`, all become one host rewrite, so only one may be given.
    fn authority_rewrite_once(&mut self, vs: &VirtualService, p: &str, rule: &HttpRoute) {
        let mut current = rule
            .rewrite
            .as_ref()
            .and_then(|r| r.authority.clone())
            .filter(|a| !a.is_empty());
        let Some(req) = rule.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (k, v) in map {
                if !is_authority_header(k) {
                    continue;
                }
                if let Some(c) = &current {
                    self.schema(
                        vs,
                        format!("{p}.headers.request.{op}.{k}"),
                        format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
                    );
                    return;
                }
                current = Some(v.clone());
            }
        }
    }

    fn header_ops(&mut self, vs: &VirtualService, p: &str, h: &Headers) {
        for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
            let Some(ops) = ops else {
                continue;
            };
            let request = dir == "request";
            for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
                for (name, value) in map {
                    let path = format!("{p}.{dir}.{op}.{name}");
                    if let Some(e) = header_op_name_problem(name, request) {
                        self.schema(vs, &path, e);
                    }
                    if let Some(e) = header_value_problem(value) {
                        self.schema(vs, &path, e);
                    }
                }
            }
            for (k, name) in ops.remove.iter().enumerate() {
                if let Some(e) = header_op_name_problem(name, false) {
                    self.schema(vs, format!("{p}.{dir}.remove[{k}]"), e);
                }
            }
        }
    }

    fn retries(&mut self, vs: &VirtualService, p: &str, r: &HttpRetry) {
        let attempts = r.attempts.map_or(0, |a| a.0);
        if attempts < 0 {
            self.schema(vs, format!("{p}.attempts"), "attempts cannot be negative");
        }
        let retry_on = r.retry_on.as_deref().unwrap_or("");
        if attempts == 0
            && (r.per_try_timeout.is_some()
                || !retry_on.is_empty()
                || r.retry_remote_localities.is_some())
        {
            self.schema(
                vs,
                p,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(t) = &r.per_try_timeout {
            self.duration(vs, format!("{p}.perTryTimeout"), t, DurationRule::Timeout);
        }
        if let Some(b) = &r.backoff {
            self.duration(vs, format!("{p}.backoff"), b, DurationRule::AtLeast1ms);
        }
        if !retry_on.is_empty() {
            // Istio splits on commas without trimming, so "5xx, reset" is refused, as here.
            for policy in retry_on.split(',') {
                let is_status = policy.parse::<u16>().is_ok_and(is_known_http_status);
                if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                    self.schema(
                        vs,
                        format!("{p}.retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }

    fn fault(&mut self, vs: &VirtualService, p: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.schema(
                vs,
                p,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.abort");
            if let Some(pct) = &a.percentage {
                self.percentage(vs, format!("{ap}.percentage"), pct);
            }
            let kinds = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() > 1 {
                self.schema(
                    vs,
                    &ap,
                    "abort may contain only one of httpStatus, grpcStatus or http2Error",
                );
            } else if let Some(Int(s)) = a.http_status {
                if !(200..=599).contains(&s) {
                    self.schema(
                        vs,
                        format!("{ap}.httpStatus"),
                        format!("HTTP status {s} is not in range 200-599"),
                    );
                }
            } else if let Some(g) = &a.grpc_status {
                if !crate::route::policy::GRPC_STATUS_NAMES.contains(&g.as_str()) {
                    self.schema(
                        vs,
                        format!("{ap}.grpcStatus"),
                        format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                    );
                }
            } else if a.http2_error.is_some() {
                self.schema(
                    vs,
                    format!("{ap}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                self.schema_warning(vs, &ap, "abort configured, but error type not set");
            }
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.delay");
            if let Some(pct) = &d.percentage {
                self.percentage(vs, format!("{dp}.percentage"), pct);
            }
            if let Some(t) = &d.fixed_delay {
                self.duration(vs, format!("{dp}.fixedDelay"), t, DurationRule::AtLeast1ms);
            }
            if let Some(t) = &d.exponential_delay {
                self.duration(
                    vs,
                    format!("{dp}.exponentialDelay"),
                    t,
                    DurationRule::AtLeast1ms,
                );
                self.schema(
                    vs,
                    format!("{dp}.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
            if d.percent.is_some() {
                self.percent_0_100(vs, format!("{dp}.percent"), d.percent);
                self.deprecated(
                    vs,
                    format!("{dp}.percent"),
                    "fault.delay.percent",
                    "\"fault.delay.percentage\"",
                );
            }
        }
    }

    fn cors(&mut self, vs: &VirtualService, p: &str, c: &CorsPolicy) {
        for (k, origin) in c.allow_origins.iter().enumerate() {
            let op = format!("{p}.allowOrigins[{k}]");
            let value = origin
                .exact
                .as_deref()
                .or(origin.prefix.as_deref())
                .or(origin.regex.as_deref());
            if value.is_none_or(str::is_empty) {
                self.schema(
                    vs,
                    &op,
                    "'' is not a valid match type for CORS allow origins",
                );
                continue;
            }
            self.string_match(vs, &op, origin, MatchKind::Uri, true);
        }
        if !c.allow_origin.is_empty() {
            self.deprecated(
                vs,
                format!("{p}.allowOrigin"),
                "corsPolicy.allowOrigin",
                "\"corsPolicy.allowOrigins\"",
            );
        }
        for (k, m) in c.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.schema(
                    vs,
                    format!("{p}.allowMethods[{k}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (k, name) in names.iter().enumerate() {
                if name != "*" && !is_token(name) {
                    self.schema(
                        vs,
                        format!("{p}.{field}[{k}]"),
                        format!("header name {name:?} is not a valid HTTP header name"),
                    );
                }
            }
        }
        if let Some(age) = &c.max_age {
            self.duration(vs, format!("{p}.maxAge"), age, DurationRule::WholeSeconds);
        }
    }

    /// TCP and TLS routes are kept as raw YAML (not served here); only what the webhook requires
    /// of every route is checked.
    fn l4_routes(&mut self, vs: &VirtualService, kind: &str, routes: &[Opaque]) {
        let upper = kind.to_ascii_uppercase();
        for (i, r) in routes.iter().enumerate() {
            let p = format!("spec.{kind}[{i}]");
            if kind == "tls" && seq(r.get("match")).is_empty() {
                self.schema(vs, &p, "TLS route must have at least one match condition");
            }
            let dests = seq(r.get("route"));
            if dests.is_empty() {
                self.schema(vs, &p, format!("{upper} route is required"));
            }
            let mut total = 0i64;
            for (j, d) in dests.iter().enumerate() {
                let host = d
                    .get("destination")
                    .and_then(|d| d.get("host"))
                    .and_then(|h| h.as_str())
                    .unwrap_or("");
                if host.is_empty() {
                    self.schema(
                        vs,
                        format!("{p}.route[{j}].destination.host"),
                        "destination host is required",
                    );
                }
                let w = d.get("weight").and_then(|w| w.as_i64()).unwrap_or(0);
                if w < 0 {
                    self.schema(
                        vs,
                        format!("{p}.route[{j}].weight"),
                        format!("weight {w} < 0"),
                    );
                }
                total = total.saturating_add(w.max(0));
            }
            if dests.len() > 1 && total == 0 {
                self.schema(vs, format!("{p}.route"), "total destination weight = 0");
            }
        }
    }

    fn vs_gaps(&mut self, vs: &VirtualService) {
        if !vs.spec.tcp.is_empty() {
            self.gap(vs, "tcp", "spec.tcp");
        }
        if !vs.spec.tls.is_empty() {
            self.gap(vs, "tls", "spec.tls");
        }
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let p = format!("spec.http[{i}]");
            let delay = rule.fault.as_ref().and_then(|f| f.delay.as_ref());
            let abort = rule.fault.as_ref().and_then(|f| f.abort.as_ref());
            let fields = [
                (
                    "retries.retryRemoteLocalities",
                    rule.retries
                        .as_ref()
                        .is_some_and(|r| r.retry_remote_localities.is_some_and(|b| b.0)),
                ),
                (
                    "fault.delay.exponentialDelay",
                    delay.is_some_and(|d| d.exponential_delay.is_some()),
                ),
                (
                    "fault.abort.http2Error",
                    abort.is_some_and(|a| a.http2_error.is_some()),
                ),
            ];
            for (field, set) in fields {
                if set {
                    self.gap(vs, field, format!("{p}.{field}"));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Uri,
    Header,
    WithoutHeader,
    /// `scheme`, `method`, `authority`.
    Pseudo,
    Query,
}

const KB: usize = 1024;
const MB: usize = 1024 * KB;
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims.";

/// Istio's `supportedRetryOnPolicies` (`pkg/config/validation/agent/validation.go`).
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Go's `http.StatusText` knows these; Istio takes any of them as a retriable status code.
fn is_known_http_status(code: u16) -> bool {
    matches!(
        code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511
    )
}

fn seq(v: Option<&Opaque>) -> Vec<&Opaque> {
    match v {
        Some(Opaque::Sequence(s)) => s.iter().collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// DestinationRule: webhook and gaps

impl Out {
    fn destination_rule_schema(&mut self, dr: &DestinationRule, applies: bool) {
        let spec = &dr.spec;
        if spec.host.is_empty() {
            self.schema(dr, "spec.host", "host is required");
        } else if spec.host.parse::<IpAddr>().is_err()
            && let Err(e) = validate_wildcard_domain(&spec.host)
        {
            self.schema(
                dr,
                "spec.host",
                format!("invalid host {:?}: {e}", spec.host),
            );
        }
        if let Some(tp) = &spec.traffic_policy {
            self.traffic_policy(dr, tp, "spec.trafficPolicy", applies);
        }
        let mut names = HashSet::new();
        for (k, subset) in spec.subsets.iter().enumerate() {
            let p = format!("spec.subsets[{k}]");
            if subset.name.is_empty() {
                self.schema(dr, format!("{p}.name"), "subset name cannot be empty");
            } else if !is_dns1123_label(&subset.name) {
                self.schema(
                    dr,
                    format!("{p}.name"),
                    format!("subset name is invalid: {} (must be a DNS-1123 label: letters, digits and '-', at most 63)", subset.name),
                );
            }
            if !names.insert(subset.name.as_str()) {
                self.schema(
                    dr,
                    format!("{p}.name"),
                    format!("duplicate subset names: {}", subset.name),
                );
            }
            if let Some(tp) = &subset.traffic_policy {
                self.traffic_policy(dr, tp, &format!("{p}.trafficPolicy"), applies);
            }
        }
        self.export_to(dr, &spec.export_to);
    }

    /// `gaps`: also report what is not implemented (only for rules that apply to this proxy).
    fn traffic_policy(&mut self, dr: &DestinationRule, tp: &TrafficPolicy, p: &str, gaps: bool) {
        let empty = tp.load_balancer.is_none()
            && tp.connection_pool.is_none()
            && tp.outlier_detection.is_none()
            && tp.tls.is_none()
            && tp.port_level_settings.is_empty()
            && tp.tunnel.is_none()
            && tp.proxy_protocol.is_none()
            && tp.retry_budget.is_none();
        if empty {
            self.schema(dr, p, "traffic policy must have at least one field");
        }
        if let Some(lb) = &tp.load_balancer {
            self.load_balancer(dr, lb, &format!("{p}.loadBalancer"), gaps);
        }
        if let Some(cp) = &tp.connection_pool {
            self.connection_pool(dr, cp, &format!("{p}.connectionPool"), gaps);
        }
        if let Some(od) = &tp.outlier_detection {
            self.outlier_detection(dr, od, &format!("{p}.outlierDetection"), gaps);
        }
        if let Some(tls) = &tp.tls {
            self.client_tls(dr, tls, &format!("{p}.tls"), gaps);
        }
        for (k, pl) in tp.port_level_settings.iter().enumerate() {
            let pp = format!("{p}.portLevelSettings[{k}]");
            match pl.port.as_ref().and_then(|port| port.number) {
                None => self.schema(
                    dr,
                    format!("{pp}.port"),
                    "portTrafficPolicy must have valid port",
                ),
                Some(Int(n)) => self.port_number(dr, format!("{pp}.port.number"), n),
            }
            if pl.load_balancer.is_none()
                && pl.connection_pool.is_none()
                && pl.outlier_detection.is_none()
                && pl.tls.is_none()
            {
                self.schema(dr, &pp, "port traffic policy must have at least one field");
            }
            // The whole port-level block is reported as ignored below; only TLS is reported on its
            // own, because ignoring it is a security problem rather than a tuning one.
            if let Some(lb) = &pl.load_balancer {
                self.load_balancer(dr, lb, &format!("{pp}.loadBalancer"), false);
            }
            if let Some(cp) = &pl.connection_pool {
                self.connection_pool(dr, cp, &format!("{pp}.connectionPool"), false);
            }
            if let Some(od) = &pl.outlier_detection {
                self.outlier_detection(dr, od, &format!("{pp}.outlierDetection"), false);
            }
            if let Some(tls) = &pl.tls {
                self.client_tls(dr, tls, &format!("{pp}.tls"), gaps);
            }
        }
        if gaps {
            let blocks = [
                ("tunnel", tp.tunnel.is_some()),
                ("proxyProtocol", tp.proxy_protocol.is_some()),
                ("retryBudget", tp.retry_budget.is_some()),
            ];
            for (field, set) in blocks {
                if set {
                    self.gap(dr, field, format!("{p}.{field}"));
                }
            }
        }
    }

    fn load_balancer(
        &mut self,
        dr: &DestinationRule,
        lb: &LoadBalancerSettings,
        p: &str,
        gaps: bool,
    ) {
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            self.schema(
                dr,
                p,
                "load balancer may contain only one of simple or consistentHash",
            );
        }
        if let Some(ch) = &lb.consistent_hash {
            let cp = format!("{p}.consistentHash");
            let keys = [
                ch.http_header_name.is_some(),
                ch.http_cookie.is_some(),
                ch.use_source_ip.is_some(),
                ch.http_query_parameter_name.is_some(),
            ];
            if keys.iter().filter(|k| **k).count() > 1 {
                self.schema(
                    dr,
                    &cp,
                    "consistentHash may contain only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
                );
            }
            if let Some(name) = ch.http_header_name.as_ref().filter(|n| !is_token(n)) {
                self.schema(
                    dr,
                    format!("{cp}.httpHeaderName"),
                    format!("header name {name:?} is not a valid HTTP header name"),
                );
            }
            if let Some(cookie) = &ch.http_cookie {
                if cookie.name.is_empty() {
                    self.schema(
                        dr,
                        format!("{cp}.httpCookie.name"),
                        "name required for HttpCookie",
                    );
                }
                if let Some(ttl) = &cookie.ttl {
                    self.duration(dr, format!("{cp}.httpCookie.ttl"), ttl, DurationRule::Any);
                }
            }
            if ch.ring_hash.is_some() && ch.maglev.is_some() {
                self.schema(
                    dr,
                    &cp,
                    "consistentHash may contain only one of ringHash or maglev",
                );
            }
            let table_size = ch
                .maglev
                .as_ref()
                .and_then(|m| m.table_size)
                .map_or(0, |s| s.0);
            if table_size != 0 && !(is_prime(table_size) && table_size < 5_000_011) {
                self.schema(
                    dr,
                    format!("{cp}.maglev.tableSize"),
                    format!(
                        "maglev table size {table_size} must be a prime number less than 5000011"
                    ),
                );
            }
            let ring = ch.ring_hash.as_ref().and_then(|r| r.minimum_ring_size);
            self.non_negative(
                dr,
                format!("{cp}.ringHash.minimumRingSize"),
                ring,
                "minimumRingSize",
            );
            if ch.minimum_ring_size.is_some() {
                self.non_negative(
                    dr,
                    format!("{cp}.minimumRingSize"),
                    ch.minimum_ring_size,
                    "minimumRingSize",
                );
                self.deprecated(
                    dr,
                    format!("{cp}.minimumRingSize"),
                    "consistentHash.minimumRingSize",
                    "\"consistentHash.ringHash.minimumRingSize\"",
                );
            }
            if gaps {}
        }
        if let Some(w) = &lb.warmup_duration_secs {
            self.duration(
                dr,
                format!("{p}.warmupDurationSecs"),
                w,
                DurationRule::AtLeast1ms,
            );
        }
        if gaps {
            let fields = [
                ("localityLbSetting", lb.locality_lb_setting.is_some()),
                ("warmup", lb.warmup.is_some()),
                ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
            ];
            for (field, set) in fields {
                if set {
                    self.gap(dr, &format!("loadBalancer.{field}"), format!("{p}.{field}"));
                }
            }
        }
    }

    fn connection_pool(
        &mut self,
        dr: &DestinationRule,
        cp: &ConnectionPoolSettings,
        p: &str,
        gaps: bool,
    ) {
        if cp.tcp.is_none() && cp.http.is_none() {
            self.schema(dr, p, "connection pool must have at least one field");
        }
        if let Some(h) = &cp.http {
            let hp = format!("{p}.http");
            let ints = [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ];
            for (field, v) in ints {
                self.non_negative(dr, format!("{hp}.{field}"), v, field);
            }
            if let Some(t) = &h.idle_timeout {
                self.duration(dr, format!("{hp}.idleTimeout"), t, DurationRule::AtLeast1ms);
            }
            let upgrade = match &h.h2_upgrade_policy {
                Some(Opaque::String(s)) => s == "UPGRADE",
                Some(Opaque::Number(n)) => n.as_i64() == Some(2),
                _ => false,
            };
            if upgrade && h.use_client_protocol == Some(Bool(true)) {
                self.schema(
                    dr,
                    &hp,
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
        }
        if let Some(t) = &cp.tcp {
            let tp = format!("{p}.tcp");
            self.non_negative(
                dr,
                format!("{tp}.maxConnections"),
                t.max_connections,
                "maxConnections",
            );
            if let Some(d) = &t.connect_timeout {
                self.duration(
                    dr,
                    format!("{tp}.connectTimeout"),
                    d,
                    DurationRule::AtLeast1ms,
                );
            }
            if let Some(d) = &t.idle_timeout {
                self.duration(dr, format!("{tp}.idleTimeout"), d, DurationRule::ZeroOr1ms);
            }
            if let Some(d) = &t.max_connection_duration {
                self.duration(
                    dr,
                    format!("{tp}.maxConnectionDuration"),
                    d,
                    DurationRule::AtLeast1ms,
                );
            }
        }
        if gaps {
            // maxConnections, connectTimeout, http1MaxPendingRequests, http2MaxRequests,
            // maxRetries, maxRequestsPerConnection and http.idleTimeout are served; these tune
            // connections we do not manage that way yet.
            let http = cp.http.as_ref();
            let tcp = cp.tcp.as_ref();
            let unserved = [
                (
                    "connectionPool.http.h2UpgradePolicy",
                    http.is_some_and(|h| h.h2_upgrade_policy.is_some()),
                    "http.h2UpgradePolicy",
                ),
                (
                    "connectionPool.http.useClientProtocol",
                    http.is_some_and(|h| h.use_client_protocol.is_some()),
                    "http.useClientProtocol",
                ),
                (
                    "connectionPool.http.maxConcurrentStreams",
                    http.is_some_and(|h| h.max_concurrent_streams.is_some()),
                    "http.maxConcurrentStreams",
                ),
                (
                    "connectionPool.http.http2KeepAlive",
                    http.is_some_and(|h| h.http2_keep_alive.is_some()),
                    "http.http2KeepAlive",
                ),
                (
                    "connectionPool.tcp.tcpKeepalive",
                    tcp.is_some_and(|t| t.tcp_keepalive.is_some()),
                    "tcp.tcpKeepalive",
                ),
                (
                    "connectionPool.tcp.idleTimeout",
                    tcp.is_some_and(|t| t.idle_timeout.is_some()),
                    "tcp.idleTimeout",
                ),
                (
                    "connectionPool.tcp.maxConnectionDuration",
                    tcp.is_some_and(|t| t.max_connection_duration.is_some()),
                    "tcp.maxConnectionDuration",
                ),
            ];
            for (key, set, field) in unserved {
                if set {
                    self.gap(dr, key, format!("{p}.{field}"));
                }
            }
        }
    }

    fn outlier_detection(
        &mut self,
        dr: &DestinationRule,
        od: &OutlierDetection,
        p: &str,
        gaps: bool,
    ) {
        if let Some(t) = &od.base_ejection_time {
            self.duration(
                dr,
                format!("{p}.baseEjectionTime"),
                t,
                DurationRule::AtLeast1ms,
            );
        }
        if let Some(t) = &od.interval {
            self.duration(dr, format!("{p}.interval"), t, DurationRule::AtLeast1ms);
        }
        let ints = [
            ("consecutiveErrors", od.consecutive_errors),
            ("consecutive5xxErrors", od.consecutive_5xx_errors),
            ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
            (
                "consecutiveLocalOriginFailures",
                od.consecutive_local_origin_failures,
            ),
        ];
        for (field, v) in ints {
            self.non_negative(dr, format!("{p}.{field}"), v, field);
        }
        if od.consecutive_errors.is_some_and(|n| n.0 != 0) {
            self.deprecated(
                dr,
                format!("{p}.consecutiveErrors"),
                "outlierDetection.consecutiveErrors",
                "\"outlierDetection.consecutive5xxErrors\" or \"outlierDetection.consecutiveGatewayErrors\"",
            );
        }
        if od
            .consecutive_local_origin_failures
            .is_some_and(|n| n.0 > 0)
            && od.split_external_local_origin_errors != Some(Bool(true))
        {
            self.schema(
                dr,
                format!("{p}.consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        self.percent_0_100(
            dr,
            format!("{p}.maxEjectionPercent"),
            od.max_ejection_percent,
        );
        self.percent_0_100(dr, format!("{p}.minHealthPercent"), od.min_health_percent);
        if gaps {
            let unserved = [
                (
                    "outlierDetection.consecutiveLocalOriginFailures",
                    od.consecutive_local_origin_failures.is_some(),
                    "consecutiveLocalOriginFailures",
                ),
                (
                    "outlierDetection.splitExternalLocalOriginErrors",
                    od.split_external_local_origin_errors.is_some_and(|b| b.0),
                    "splitExternalLocalOriginErrors",
                ),
            ];
            for (key, set, field) in unserved {
                if set {
                    self.gap(dr, key, format!("{p}.{field}"));
                }
            }
        }
    }

    fn client_tls(&mut self, dr: &DestinationRule, tls: &ClientTlsSettings, p: &str, gaps: bool) {
        let mode = tls.mode.unwrap_or(TlsMode::Disable);
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if matches!(mode, TlsMode::Simple | TlsMode::Mutual) && set(&tls.credential_name) {
            if set(&tls.client_certificate) || set(&tls.ca_certificates) || set(&tls.private_key) {
                self.schema(
                    dr,
                    p,
                    "cannot specify client certificates or CA certificate If credentialName is set",
                );
            }
        } else if mode == TlsMode::Mutual {
            if !set(&tls.client_certificate) {
                self.schema(
                    dr,
                    format!("{p}.clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&tls.private_key) {
                self.schema(
                    dr,
                    format!("{p}.privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
        if !gaps {
            return;
        }
        let key = match mode {
            TlsMode::Disable => return,
            TlsMode::Mutual
                if !set(&tls.credential_name)
                    && (!set(&tls.client_certificate) || !set(&tls.private_key)) =>
            {
                // Already reported above as the webhook does.
                return;
            }
            TlsMode::Simple | TlsMode::Mutual => {
                // The same build the table compiler does, so certificate files that cannot be
                // read or parsed refuse the config (and a reload keeps the last good table).
                if let Err(e) = crate::upstream::tls::TlsOrigin::build(tls, "", false) {
                    let code = match e.error {
                        crate::upstream::tls::TlsError::Read { .. } => {
                            codes::REFERENCED_RESOURCE_NOT_FOUND
                        }
                        crate::upstream::tls::TlsError::CredentialName => codes::NOT_IMPLEMENTED,
                        _ => codes::SCHEMA_VALIDATION_ERROR,
                    };
                    self.push(
                        dr,
                        Severity::Error,
                        code,
                        format!("{p}.{}", e.field),
                        e.error.to_string(),
                    );
                }
                return;
            }
            TlsMode::IstioMutual if self.istio_mutual_as_plaintext => {
                "tls.mode: ISTIO_MUTUAL as plaintext"
            }
            TlsMode::IstioMutual => "tls.mode: ISTIO_MUTUAL",
        };
        self.gap(dr, key, format!("{p}.mode"));
    }
}

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry: webhook

impl Out {
    fn service_entry_schema(&mut self, se: &ServiceEntry) {
        let spec = &se.spec;
        if spec.hosts.is_empty() {
            self.schema(
                se,
                "spec.hosts",
                "service entry must have at least one host",
            );
        }
        for (i, host) in spec.hosts.iter().enumerate() {
            if host == "*" {
                self.schema(se, format!("spec.hosts[{i}]"), "invalid host *");
            } else if let Err(e) = validate_wildcard_domain(host) {
                self.schema(
                    se,
                    format!("spec.hosts[{i}]"),
                    format!("invalid host {host:?}: {e}"),
                );
            }
        }
        let resolution = spec.resolution.unwrap_or(Resolution::None);
        for (i, a) in spec.addresses.iter().enumerate() {
            let p = format!("spec.addresses[{i}]");
            match a.split_once('/') {
                None if a.parse::<IpAddr>().is_err() => {
                    self.schema(se, p, format!("{a:?} is not a valid IP address"));
                }
                None => {}
                Some((ip, bits)) => {
                    let max = match ip.parse::<IpAddr>() {
                        Ok(IpAddr::V4(_)) => Some(32),
                        Ok(IpAddr::V6(_)) => Some(128),
                        Err(_) => None,
                    };
                    if !max.is_some_and(|m| bits.parse::<u8>().is_ok_and(|b| b <= m)) {
                        self.schema(se, p, format!("{a:?} is not a valid CIDR block"));
                    } else if !matches!(resolution, Resolution::None | Resolution::Static) {
                        self.schema(
                            se,
                            p,
                            "CIDR addresses are allowed only for NONE/STATIC resolution types",
                        );
                    }
                }
            }
        }
        let mut port_names = HashSet::new();
        let mut port_numbers = HashSet::new();
        for (i, port) in spec.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            let name = port.name.as_deref().unwrap_or("");
            if !is_dns1123_label(name) {
                self.schema(
                    se,
                    format!("{p}.name"),
                    format!("invalid port name: {name:?} (must be a DNS-1123 label)"),
                );
            } else if !port_names.insert(name) {
                self.schema(
                    se,
                    format!("{p}.name"),
                    format!("service entry port name {name:?} already defined"),
                );
            }
            let number = port.number.map_or(0, |n| n.0);
            self.port_number(se, format!("{p}.number"), number);
            if !port_numbers.insert(number) {
                self.schema(
                    se,
                    format!("{p}.number"),
                    format!("service entry port {number} already defined"),
                );
            }
            if let Some(t) = port.target_port.map(|t| t.0).filter(|t| *t != 0) {
                self.port_number(se, format!("{p}.targetPort"), t);
            }
            let known = |proto: &str| {
                proto.is_empty() || PROTOCOLS.iter().any(|k| k.eq_ignore_ascii_case(proto))
            };
            if let Some(proto) = port.protocol.as_deref().filter(|p| !known(p)) {
                self.schema(
                    se,
                    format!("{p}.protocol"),
                    format!("unrecognized protocol {proto:?}"),
                );
            }
        }
        if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
            self.schema(
                se,
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
        match resolution {
            Resolution::None => {
                if !spec.endpoints.is_empty() {
                    self.schema(
                        se,
                        "spec.endpoints",
                        "no endpoints should be provided for resolution type none",
                    );
                }
                if spec.workload_selector.is_some() {
                    self.schema_warning(
                        se,
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if spec.endpoints.is_empty() {
                    for (i, host) in spec.hosts.iter().enumerate() {
                        if host.starts_with('*') {
                            self.schema(
                                se,
                                format!("spec.hosts[{i}]"),
                                format!("hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"),
                            );
                        }
                    }
                }
                if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                    self.schema(
                        se,
                        "spec.endpoints",
                        format!(
                            "there must only be 0 or 1 endpoint for resolution mode {resolution}"
                        ),
                    );
                }
            }
            Resolution::Static | Resolution::DynamicDns => {}
        }
        let declared: Vec<&str> = spec
            .ports
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let p = format!("spec.endpoints[{i}]");
            match ep.address.as_deref().unwrap_or("") {
                "" => self.schema(se, format!("{p}.address"), "address is required"),
                addr if addr.parse::<IpAddr>().is_ok() || addr.starts_with(UNIX_PREFIX) => {}
                addr if resolution == Resolution::Static => {
                    self.schema(
                        se,
                        format!("{p}.address"),
                        format!("endpoint address {addr:?} is not a valid IP address"),
                    );
                }
                addr if validate_wildcard_domain(addr).is_err() || addr.starts_with('*') => {
                    self.schema(
                        se,
                        format!("{p}.address"),
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
                _ => {}
            }
            for name in ep.ports.keys() {
                if !declared.contains(&name.as_str()) {
                    self.schema(
                        se,
                        format!("{p}.ports.{name}"),
                        format!("endpoint port {name:?} is not defined by the service entry (ports: {})", declared.join(", ")),
                    );
                }
            }
            self.endpoint_fields(se, &p, ep);
        }
        self.export_to(se, &spec.export_to);
    }

    /// What ServiceEntry endpoints and WorkloadEntries share.
    fn endpoint_fields<S>(&mut self, r: &Resource<S>, p: &str, ep: &WorkloadEntrySpec) {
        for (name, Int(port)) in &ep.ports {
            if !is_dns1123_label(name) {
                self.schema(
                    r,
                    format!("{p}.ports.{name}"),
                    format!("invalid port name: {name:?} (must be a DNS-1123 label)"),
                );
            }
            self.port_number(r, format!("{p}.ports.{name}"), *port);
        }
        if let Some(w) = ep
            .weight
            .map(|w| w.0)
            .filter(|w| !(0..=i64::from(u32::MAX)).contains(w))
        {
            self.schema(
                r,
                format!("{p}.weight"),
                format!("weight {w} must be in range 0..{}", u32::MAX),
            );
        }
    }

    fn workload_entry(&mut self, we: &WorkloadEntry) {
        let spec = &we.spec;
        // Whether the address must be an IP depends on the ServiceEntry that selects this entry
        // (DNS resolution takes a host name), which a standalone entry does not know.
        if spec.address.as_deref().unwrap_or("").is_empty() {
            match spec.network.as_deref().filter(|n| !n.is_empty()) {
                None => self.schema(we, "spec.address", "address is required"),
                Some(n) => self.schema_warning(
                    we,
                    "spec.address",
                    format!("address is unset with network {n:?}"),
                ),
            }
        }
        self.endpoint_fields(we, "spec", spec);
    }
}

const UNIX_PREFIX: &str = "unix://";

/// Istio's `protocol.Parse` names (case-insensitive).
const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

// ---------------------------------------------------------------------------------------------
// Names and values

/// Kubernetes' DNS-1123 label, with Istio's allowance for upper case.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Istio's `ValidateWildcardDomain`: DNS labels, where only the first may be a wildcard (`*` or
/// `*suffix`). A short name (no dot) is one label.
fn validate_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("domain name is empty".to_string());
    }
    if host.len() > 255 {
        return Err("domain name is too long (at most 255 characters)".to_string());
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let mut labels = trimmed.split('.');
    let first = labels.next().unwrap_or("");
    let first_ok = match first.strip_prefix('*') {
        Some("") => true,
        Some(rest) => is_dns1123_label(rest),
        None => is_dns1123_label(first),
    };
    if !first_ok {
        return Err(format!(
            "label {first:?} is not a valid DNS label (a wildcard may only be a leading '*')"
        ));
    }
    for label in labels {
        if !is_dns1123_label(label) {
            return Err(format!("label {label:?} is not a valid DNS label"));
        }
    }
    Ok(())
}

/// Istio's `host.Name.Matches`: the two names can stand for a common host (`*.com` and
/// `*.foo.com` can).
fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(_), None) => wildcard_covers(a, b),
        (None, Some(_)) => wildcard_covers(b, a),
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A header name in a match: a token, a pseudo-header (`:path`), or a JWT claim key.
fn match_header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("header name cannot be empty".to_string());
    }
    if let Some(claim) = name.strip_prefix(JWT_CLAIM_PREFIX) {
        return claim
            .is_empty()
            .then(|| format!("header name {name:?} names no claim"));
    }
    let bare = name.strip_prefix(':').unwrap_or(name);
    (!is_token(bare)).then(|| {
        format!("header name {name:?} is not a valid HTTP header name (an RFC 7230 token)")
    })
}

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (request set/add, where Host and
/// `:authority` become a host rewrite) and `ValidateHTTPHeaderOperationName` (everything else).
fn header_op_name_problem(name: &str, authority_allowed: bool) -> Option<String> {
    if name.is_empty() {
        return Some("header name cannot be empty".to_string());
    }
    if authority_allowed && is_authority_header(name) {
        return None;
    }
    if name.eq_ignore_ascii_case("host") {
        return Some(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Some(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    (!is_token(name)).then(|| {
        format!("header name {name:?} is not a valid HTTP header name (an RFC 7230 token)")
    })
}

/// Values go through Envoy's header formatter: `%VAR%` is expanded and a literal `%` must be
/// written `%%`; Envoy refuses the whole config for an unknown variable.
fn header_value_problem(value: &str) -> Option<String> {
    if value.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
        return Some(format!(
            "header value {value:?} contains a control character"
        ));
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        // An argument may itself contain `%` (`%START_TIME(%s)%`), so the operator is read by its
        // shape, not by searching for the next `%`.
        let rest = &value[i + 1..];
        let mut len = rest
            .bytes()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
            .count();
        if rest[len..].starts_with('(') {
            len = rest[len..].find(')').map_or(rest.len(), |k| len + k + 1);
        }
        if rest[len..].starts_with(':') {
            len += 1 + rest[len + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
        }
        if !rest[len..].starts_with('%') {
            return Some(format!(
                "header value {value:?}: single % not allowed. Escape by doubling to %% or encase Envoy variable name in pair of %"
            ));
        }
        let var = &rest[..len];
        if !is_known_header_variable(var) {
            return Some(format!(
                "header value {value:?}: unknown variable %{var}%. Escape a literal % by doubling it to %%"
            ));
        }
        i += len + 2;
    }
    None
}

/// Envoy's header formatter operators (`%NAME%`, `%NAME(arg)%`, `%NAME(arg):len%`).
fn is_known_header_variable(var: &str) -> bool {
    let name = var.split(['(', ':']).next().unwrap_or("");
    let with_args = var.len() > name.len() && var[name.len()..].starts_with('(');
    const PLAIN: &[&str] = &[
        "BYTES_RECEIVED",
        "BYTES_SENT",
        "CONNECTION_ID",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_PORT",
        "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_LOCAL_PORT",
        "DOWNSTREAM_LOCAL_SUBJECT",
        "DOWNSTREAM_LOCAL_URI_SAN",
        "DOWNSTREAM_PEER_CERT",
        "DOWNSTREAM_PEER_CERT_V_END",
        "DOWNSTREAM_PEER_CERT_V_START",
        "DOWNSTREAM_PEER_FINGERPRINT_1",
        "DOWNSTREAM_PEER_FINGERPRINT_256",
        "DOWNSTREAM_PEER_ISSUER",
        "DOWNSTREAM_PEER_SERIAL",
        "DOWNSTREAM_PEER_SUBJECT",
        "DOWNSTREAM_PEER_URI_SAN",
        "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_TLS_CIPHER",
        "DOWNSTREAM_TLS_SESSION_ID",
        "DOWNSTREAM_TLS_VERSION",
        "DURATION",
        "HOSTNAME",
        "PROTOCOL",
        "REQUESTED_SERVER_NAME",
        "REQUEST_DURATION",
        "RESPONSE_CODE",
        "RESPONSE_DURATION",
        "RESPONSE_FLAGS",
        "ROUTE_NAME",
        "START_TIME",
        "STREAM_ID",
        "UPSTREAM_CLUSTER",
        "UPSTREAM_HOST",
        "UPSTREAM_LOCAL_ADDRESS",
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_LOCAL_PORT",
        "UPSTREAM_REMOTE_ADDRESS",
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_REMOTE_PORT",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        "VIRTUAL_CLUSTER_NAME",
    ];
    const WITH_ARGS: &[&str] = &[
        "CLUSTER_METADATA",
        "DYNAMIC_METADATA",
        "ENVIRONMENT",
        "FILTER_STATE",
        "PER_REQUEST_STATE",
        "REQ",
        "RESP",
        "START_TIME",
        "TRAILER",
        "UPSTREAM_METADATA",
    ];
    if with_args {
        WITH_ARGS.contains(&name) && var.contains(')')
    } else {
        PLAIN.contains(&name)
    }
}

/// Compiles with the matcher the router uses, so what passes here also serves.
fn regex_problem(pattern: &str) -> Result<(), String> {
    StringMatcher::regex(pattern).map(|_| ()).map_err(|e| {
        // The regex crate explains on several lines, ending with `error: <what>`.
        let message = e.message.lines().rev().find_map(|l| l.trim().strip_prefix("error: ")).unwrap_or(e.message.trim());
        format!(
            "invalid regex {:?}: {message}; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)",
            e.pattern
        )
    })
}

/// Decoded size of standard or URL-safe base64, padded or not (jsonpb takes all four), or
/// `None` when it is not base64.
fn base64_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    if padding > 2
        || !body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+/-_".contains(&c))
    {
        return None;
    }
    match body.len() % 4 {
        1 => None,
        r => Some(body.len() / 4 * 3 + r.saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_envoys_formatter() {
        assert_eq!(header_value_problem("plain"), None);
        assert_eq!(header_value_problem("100%%"), None);
        assert_eq!(header_value_problem("%HOSTNAME%"), None);
        assert_eq!(header_value_problem("a %REQ(x-user)% b"), None);
        assert_eq!(header_value_problem("%START_TIME(%s)%"), None);
        assert!(header_value_problem("50%").is_some());
        assert!(header_value_problem("%NOPE%").is_some());
        assert!(header_value_problem("a\nb").is_some());
    }

    #[test]
    fn wildcard_domains() {
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("reviews.default.svc.cluster.local.").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("bad_name.com").is_err());
        assert!(validate_wildcard_domain("").is_err());
    }

    #[test]
    fn host_overlap_is_symmetric_wildcard_matching() {
        assert!(hosts_overlap("*.com", "*.foo.com"));
        assert!(hosts_overlap("a.foo.com", "*.foo.com"));
        assert!(!hosts_overlap("foo.com", "*.foo.com"));
        assert!(!hosts_overlap("a.com", "b.com"));
    }

    #[test]
    fn base64_sizes() {
        assert_eq!(base64_decoded_len("aGVsbG8="), Some(5));
        assert_eq!(base64_decoded_len("aGVsbG8"), Some(5));
        assert_eq!(base64_decoded_len("aGk="), Some(2));
        assert_eq!(base64_decoded_len("a"), None);
        assert_eq!(base64_decoded_len("a*b="), None);
    }

    #[test]
    fn retry_status_codes_are_gos_list() {
        assert!(is_known_http_status(503));
        assert!(is_known_http_status(429));
        assert!(!is_known_http_status(599));
        assert!(!is_known_http_status(306));
    }

    #[test]
    fn every_not_implemented_key_is_unique() {
        let mut keys = HashSet::new();
        for g in NOT_IMPLEMENTED {
            assert!(keys.insert(g.key), "duplicate key {}", g.key);
        }
    }
}
