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

mod analyzer;
mod destination_rule;
mod names;
mod out;
mod perspective;
mod reachability;
mod service_entry;
pub(crate) use service_entry::PROTOCOLS;
mod virtual_service;

use names::*;
use out::*;
use virtual_service::*;

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
