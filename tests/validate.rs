//! The validator on real files, loaded the way `switchyard validate` and `run` load them.
//!
//! `fixtures/istio-examples/` holds Istio's own YAML, unchanged: its analyzer testdata must give
//! exactly the findings its comments (and Istio's analyzer tests) name. `fixtures/validate/` holds
//! our cases, each checked line for line as a user sees them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use switchyard::config::scope::ProxyIdentity;
use switchyard::config::validate::{Mode, ValidateOptions, validate};
use switchyard::config::{Diagnostic, LoadOptions, Resources, Severity, codes, load};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn example(name: &str) -> PathBuf {
    fixtures().join("istio-examples").join(name)
}

fn own(name: &str) -> PathBuf {
    fixtures().join("validate").join(name)
}

fn check(
    res: &Resources,
    identity: &ProxyIdentity,
    mode: Mode,
    plaintext: bool,
) -> Vec<Diagnostic> {
    let opts = ValidateOptions {
        identity,
        mode,
        istio_mutual_as_plaintext: plaintext,
    };
    validate(res, &opts)
}

fn run(res: &Resources, mode: Mode) -> Vec<Diagnostic> {
    check(res, &ProxyIdentity::default(), mode, false)
}

/// Several files as one config directory, as `run --config DIR` reads them.
fn load_together(files: &[PathBuf]) -> (tempfile::TempDir, Resources) {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in files {
        let name = f.file_name().expect("file name");
        std::fs::copy(f, dir.path().join(name)).expect("copy fixture");
    }
    let res = load(dir.path(), &LoadOptions::default());
    (dir, res)
}

type Key = (String, String, String);

/// (code, resource, field path) of the findings of one severity in one file.
fn keys(diags: &[Diagnostic], file_name: &str, severity: Severity) -> BTreeSet<Key> {
    diags
        .iter()
        .filter(|d| d.severity == severity && d.file.file_name().is_some_and(|n| n == file_name))
        .map(|d| (d.code.to_string(), d.resource.clone(), d.field_path.clone()))
        .collect()
}

fn key(code: &str, resource: &str, path: &str) -> Key {
    (code.to_string(), resource.to_string(), path.to_string())
}

fn errors(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

/// Everything a user sees for one of our fixtures (load problems, then findings), with the
/// fixture directory stripped from the file names.
fn shown(name: &str, mode: Mode) -> Vec<String> {
    shown_as(name, &ProxyIdentity::default(), mode, false)
}

fn shown_as(name: &str, identity: &ProxyIdentity, mode: Mode, plaintext: bool) -> Vec<String> {
    let res = load(&own(name), &LoadOptions::default());
    let prefix = format!("{}/", fixtures().join("validate").display());
    res.diagnostics
        .iter()
        .chain(check(&res, identity, mode, plaintext).iter())
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect()
}

fn assert_shown(name: &str, mode: Mode, expected: &[&str]) {
    assert_eq!(shown(name, mode), expected, "{name} ({mode:?})");
}

// ---------------------------------------------------------------------------------------------
// Istio's own files

#[test]
fn every_istio_example_loads_without_errors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("istio-examples"))
        .expect("examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 42, "37 Istio files and 5 seed files");
    for f in &files {
        let res = load(f, &LoadOptions::default());
        let load_errors: Vec<String> = res
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert!(load_errors.is_empty(), "{}: {load_errors:#?}", f.display());
        let count = res.virtual_services.len()
            + res.destination_rules.len()
            + res.service_entries.len()
            + res.workload_entries.len();
        assert!(count > 0, "{}: nothing loaded", f.display());
        for mode in [Mode::Analyze, Mode::Serve] {
            for d in run(&res, mode) {
                // Every finding points into the file, at a resource and a field.
                assert!(
                    d.line > 0 && !d.resource.is_empty() && !d.field_path.is_empty(),
                    "{d}"
                );
            }
        }
    }
}

#[test]
fn analyzer_conflicting_mesh_gateway_hosts() {
    let file = "analyzer-virtualservice_conflictingmeshgatewayhosts.yaml";
    let (_dir, res) = load_together(&[example(file), own("analyzer-services.yaml")]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);

    // The hosts the YAML comments say "should generate an error", and no other error.
    let expected: BTreeSet<Key> = [
        ("VirtualService/foo/productpage", "spec.hosts[0]"),
        ("VirtualService/foo/bogus-productpage", "spec.hosts[0]"),
        ("VirtualService/foo/ratings", "spec.hosts[0]"),
        ("VirtualService/bar/ratings", "spec.hosts[0]"),
        ("VirtualService/team2/ratings", "spec.hosts[1]"),
        ("VirtualService/team3/ratings", "spec.hosts[0]"),
        ("VirtualService/team4/ratings", "spec.hosts[0]"),
    ]
    .into_iter()
    .map(|(r, p)| key(codes::CONFLICTING_MESH_GATEWAY_HOSTS, r, p))
    .collect();
    let analyzed = run(&res, Mode::Analyze);
    assert_eq!(keys(&analyzed, file, Severity::Error), expected);
    assert!(keys(&analyzed, "analyzer-services.yaml", Severity::Error).is_empty());

    let bar = analyzed
        .iter()
        .find(|d| d.resource == "VirtualService/bar/ratings")
        .expect("bar/ratings reported");
    assert!(
        bar.message.contains("foo/ratings,bar/ratings")
            && bar.message.contains("ratings.foo.svc.cluster.local"),
        "{bar}"
    );

    // A sidecar serves such a config (first loaded wins): only warnings when serving.
    let served = run(&res, Mode::Serve);
    assert!(errors(&served).is_empty(), "{:#?}", errors(&served));
    assert_eq!(keys(&served, file, Severity::Warning), expected);
}

#[test]
fn analyzer_destination_rules() {
    let file = "analyzer-virtualservice_destinationrules.yaml";
    let (_dir, res) = load_together(&[example(file), own("analyzer-services.yaml")]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let diags = run(&res, Mode::Analyze);
    let expected: BTreeSet<Key> = [
        key(
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "VirtualService/default/reviews-bogussubset",
            "spec.http[0].route[0].destination.subset",
        ),
        key(
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "VirtualService/default/reviews-mirror-bogussubset",
            "spec.http[0].mirror.subset",
        ),
    ]
    .into();
    assert_eq!(keys(&diags, file, Severity::Error), expected);
    for d in diags.iter().filter(|d| d.is_error()) {
        assert_eq!(
            d.message,
            "Referenced host+subset in destinationrule not found: \"reviews.default.svc.cluster.local+bogus\""
        );
    }
}

#[test]
fn analyzer_duplicate_matches() {
    let file = "analyzer-virtualservice_dupmatches.yaml";
    let (_dir, res) = load_together(&[example(file), own("analyzer-services.yaml")]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let diags = run(&res, Mode::Analyze);
    assert!(
        keys(&diags, file, Severity::Error).is_empty(),
        "{:#?}",
        errors(&diags)
    );

    // Istio's analyzer test ("dupmatches") expects these VirtualServices, for TCP and TLS too.
    let unreachable: BTreeSet<Key> = [
        ("VirtualService/foo/sample-foo-cluster01", "spec.http[1]"),
        ("VirtualService/default/duplicate-match", "spec.http[1]"),
        ("VirtualService/default/duplicate-tcp-match", "spec.tcp[1]"),
        ("VirtualService/default/duplicate-empty-tcp", "spec.tcp[1]"),
        ("VirtualService/none/tls-routing", "spec.tls[1]"),
    ]
    .into_iter()
    .map(|(r, p)| key(codes::UNREACHABLE_RULE, r, p))
    .collect();
    let ineffective: BTreeSet<Key> = [
        (
            "VirtualService/default/duplicate-match",
            "spec.http[1].match[0]",
        ),
        (
            "VirtualService/default/almost-duplicate-match",
            "spec.http[1].match[0]",
        ),
        (
            "VirtualService/default/duplicate-tcp-match",
            "spec.tcp[1].match[0]",
        ),
        (
            "VirtualService/default/almost-duplicate-tcp-match",
            "spec.tcp[1].match[0]",
        ),
        ("VirtualService/none/tls-routing", "spec.tls[1].match[0]"),
        (
            "VirtualService/none/tls-routing-almostmatch",
            "spec.tls[1].match[0]",
        ),
    ]
    .into_iter()
    .map(|(r, p)| key(codes::INEFFECTIVE_MATCH, r, p))
    .collect();
    let warnings = keys(&diags, file, Severity::Warning);
    let found: BTreeSet<Key> = warnings
        .into_iter()
        .filter(|k| k.0 == codes::UNREACHABLE_RULE)
        .collect();
    assert_eq!(found, unreachable);
    assert_eq!(
        keys(&diags, file, Severity::Info)
            .into_iter()
            .filter(|k| k.0 == codes::INEFFECTIVE_MATCH)
            .collect::<BTreeSet<_>>(),
        ineffective
    );

    let first = diags
        .iter()
        .find(|d| d.code == codes::UNREACHABLE_RULE)
        .expect("an unreachable rule");
    assert_eq!(
        first.message,
        "VirtualService rule #1 not used (only the last rule can have no matches)."
    );
}

#[test]
fn seed_articles_with_their_services_have_no_findings() {
    let dr = example("seed-my-service-destinationrule.yaml");
    let cases: [&[&str]; 5] = [
        &["seed-frontend-canary.yaml"],
        &["seed-my-service-destinationrule.yaml"],
        &["seed-my-service-beta-header.yaml"],
        &["seed-my-service-step-100-0.yaml"],
        &["seed-my-service-step-95-5.yaml"],
    ];
    for files in cases {
        let mut paths: Vec<PathBuf> = files.iter().map(|f| example(f)).collect();
        if files[0].starts_with("seed-my-service") && !paths.contains(&dr) {
            paths.push(dr.clone());
        }
        paths.push(own("seed-services.yaml"));
        let (_dir, res) = load_together(&paths);
        assert!(
            res.diagnostics.is_empty(),
            "{files:?}: {:#?}",
            res.diagnostics
        );
        for mode in [Mode::Analyze, Mode::Serve] {
            let diags = run(&res, mode);
            let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            assert!(all.is_empty(), "{files:?} ({mode:?}): {all:#?}");
        }
    }
}

#[test]
fn virtual_services_alone_report_every_unknown_host() {
    let res = load(
        &example("bookinfo-virtual-service-all-v1.yaml"),
        &LoadOptions::default(),
    );
    let diags = run(&res, Mode::Analyze);
    let unknown: BTreeSet<(String, String)> = diags
        .iter()
        .filter(|d| d.is_error() && d.message.starts_with("Referenced host not found"))
        .map(|d| (d.resource.clone(), d.message.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = ["productpage", "reviews", "ratings", "details"]
        .iter()
        .map(|name| {
            (
                format!("VirtualService/default/{name}"),
                format!("Referenced host not found: \"{name}.default.svc.cluster.local\""),
            )
        })
        .collect();
    assert_eq!(unknown, expected);
    assert!(
        diags
            .iter()
            .all(|d| d.code == codes::REFERENCED_RESOURCE_NOT_FOUND),
        "{diags:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Our fixtures, line for line

#[test]
fn bad_yaml() {
    assert_shown(
        "bad-yaml.yaml",
        Mode::Analyze,
        &["bad-yaml.yaml:8: Error SY0001: invalid YAML: did not find expected ',' or ']'"],
    );
}

#[test]
fn unknown_subset() {
    assert_shown(
        "unknown-subset.yaml",
        Mode::Analyze,
        &[
            "unknown-subset.yaml:51: Error IST0101 VirtualService/default/reviews: spec.http[0].route[1].destination.subset: Referenced host+subset in destinationrule not found: \"reviews.default.svc.cluster.local+v3\"",
        ],
    );
}

#[test]
fn subset_without_endpoints_is_an_error_to_analyze_and_a_warning_to_serve() {
    let line = |severity: &str| {
        format!(
            "subset-no-endpoints.yaml:30: {severity} IST0173 DestinationRule/default/frontend: spec.subsets[1].name: The Subset v2 defined in the DestinationRule does not select any endpoints of \"frontend.default.svc.cluster.local\", which may lead to 503 UH (NoHealthyUpstream)."
        )
    };
    assert_eq!(
        shown("subset-no-endpoints.yaml", Mode::Analyze),
        [line("Error")]
    );
    assert_eq!(
        shown("subset-no-endpoints.yaml", Mode::Serve),
        [line("Warning")]
    );
}

#[test]
fn invalid_regex() {
    assert_shown(
        "invalid-regex.yaml",
        Mode::Analyze,
        &[
            "invalid-regex.yaml:26: Error IST0106 VirtualService/default/api: spec.http[0].match[0].headers.x-user.regex: invalid regex \"(beta|canary\": unclosed group; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)",
            "invalid-regex.yaml:28: Error IST0106 VirtualService/default/api: spec.http[0].match[1].uri.regex: invalid regex \"/v1/(?!internal).*\": lookaround is not supported by RE2; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)",
        ],
    );
}

#[test]
fn destination_host_without_service_entry() {
    assert_shown(
        "no-service-entry.yaml",
        Mode::Analyze,
        &[
            "no-service-entry.yaml:16: Error IST0101 VirtualService/shop/ratings: spec.http[0].route[0].destination.host: Referenced host not found: \"details.shop.svc.cluster.local\"",
            "no-service-entry.yaml:19: Error IST0101 VirtualService/shop/ratings: spec.http[1].route[0].destination.host: Referenced host not found: \"ratings.shop.svc.cluster.local\"",
        ],
    );
}

#[test]
fn total_weight_zero() {
    assert_shown(
        "total-weight-zero.yaml",
        Mode::Analyze,
        &[
            "total-weight-zero.yaml:44: Error IST0106 VirtualService/default/cart: spec.http[0].route: total destination weight = 0",
        ],
    );
}

#[test]
fn negative_weight() {
    assert_shown(
        "negative-weight.yaml",
        Mode::Analyze,
        &[
            "negative-weight.yaml:52: Error IST0106 VirtualService/default/cart: spec.http[0].route[1].weight: weight -5 < 0",
        ],
    );
}

#[test]
fn unknown_field() {
    assert_shown(
        "unknown-field.yaml",
        Mode::Analyze,
        &[
            "unknown-field.yaml:26: Error IST0106 VirtualService/default/web: spec.http[0].match[0].header: unknown field \"header\"",
        ],
    );
}

#[test]
fn zero_timeout() {
    assert_shown(
        "zero-timeout.yaml",
        Mode::Serve,
        &[
            "zero-timeout.yaml:28: Error IST0106 VirtualService/default/web: spec.http[0].timeout: invalid duration \"0s\": duration must be at least 1ms; leave the field out for no timeout",
        ],
    );
}

#[test]
fn two_virtual_services_for_one_host() {
    let line = |severity: &str, line: u32, name: &str| {
        format!(
            "two-virtual-services.yaml:{line}: {severity} IST0109 VirtualService/default/{name}: spec.hosts[0]: The VirtualServices default/web-team-a,default/web-team-b associated with mesh gateway define the same host web.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource. A sidecar uses the first loaded (default/web-team-a) for this host."
        )
    };
    assert_eq!(
        shown("two-virtual-services.yaml", Mode::Analyze),
        [
            line("Error", 24, "web-team-a"),
            line("Error", 39, "web-team-b")
        ]
    );
    assert_eq!(
        shown("two-virtual-services.yaml", Mode::Serve),
        [
            line("Warning", 24, "web-team-a"),
            line("Warning", 39, "web-team-b")
        ]
    );
}

#[test]
fn unreachable_rules() {
    assert_shown(
        "unreachable.yaml",
        Mode::Analyze,
        &[
            "unreachable.yaml:34: Info IST0131 VirtualService/default/web: spec.http[1].match[0]: VirtualService rule \"api-v2\" match #0 is not used (duplicate/overlapping match in rule \"api\").",
            // istioctl keeps IST0130 for exact repeats and rules after one without matches.
            "unreachable.yaml:50: Info IST0131 VirtualService/default/web: spec.http[3].match[0]: VirtualService rule \"never\" match #0 is not used (duplicate/overlapping match in rule \"everything\"). No match of rule \"never\" can apply, so the rule is never used.",
        ],
    );
}

#[test]
fn a_later_match_with_an_added_condition_is_ineffective() {
    assert_shown(
        "narrower-match.yaml",
        Mode::Analyze,
        &[
            "narrower-match.yaml:30: Info IST0131 VirtualService/default/catalog: spec.http[0].match[1]: VirtualService rule \"items\" match #1 is not used (duplicate/overlapping match in rule \"items\").",
            "narrower-match.yaml:34: Info IST0131 VirtualService/default/catalog: spec.http[0].match[2]: VirtualService rule \"items\" match #2 is not used (duplicate/overlapping match in rule \"items\").",
            "narrower-match.yaml:47: Info IST0131 VirtualService/default/catalog: spec.http[1].match[1]: VirtualService rule \"tenant\" match #1 is not used (duplicate/overlapping match in rule \"tenant\").",
        ],
    );
}

#[test]
fn a_rule_covered_by_a_shorter_prefix_is_ist0131_not_ist0130() {
    assert_shown(
        "narrower-rule.yaml",
        Mode::Analyze,
        &[
            "narrower-rule.yaml:35: Info IST0131 VirtualService/default/orders: spec.http[1].match[0]: VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0). No match of rule #1 can apply, so the rule is never used.",
            // An exact repeat, and a second rule without matches, stay IST0130 as in istioctl.
            "narrower-rule.yaml:42: Warning IST0130 VirtualService/default/orders: spec.http[2]: VirtualService rule #2 not used (all matches used by prior rules).",
            "narrower-rule.yaml:43: Info IST0131 VirtualService/default/orders: spec.http[2].match[0]: VirtualService rule #2 match #0 is not used (duplicate/overlapping match in rule #0).",
            "narrower-rule.yaml:53: Warning IST0130 VirtualService/default/orders: spec.http[4]: VirtualService rule #4 not used (only the last rule can have no matches).",
        ],
    );
}

#[test]
fn delegates() {
    assert_shown(
        "delegate.yaml",
        Mode::Analyze,
        &[
            "delegate.yaml:36: Error IST0101 VirtualService/default/bookinfo: spec.http[1].delegate.name: Referenced delegate VirtualService not found: \"team-r/ratings\"",
            "delegate.yaml:47: Error IST0106 VirtualService/default/reviews: spec.http[0].match[0].uri.regex: regex match is not supported in a delegate or a route that delegates",
        ],
    );
}

#[test]
fn not_implemented_fields_are_named() {
    let common = [
        "not-implemented.yaml:14: Warning SY0002 ServiceEntry/default/payments: spec.subjectAltNames: subjectAltNames is not implemented yet; ignored",
        "not-implemented.yaml:27: Warning SY0002 DestinationRule/default/payments: spec.trafficPolicy.connectionPool.tcp.idleTimeout: connectionPool.tcp.idleTimeout is not implemented yet; ignored",
    ];
    let rest = [
        "not-implemented.yaml:65: Warning IST0002 DestinationRule/default/orders: spec.subsets[0].trafficPolicy.outlierDetection.consecutiveErrors: Deprecated: \"outlierDetection.consecutiveErrors\" is deprecated; use \"outlierDetection.consecutive5xxErrors\" or \"outlierDetection.consecutiveGatewayErrors\"",
        "not-implemented.yaml:85: Warning IST0002 VirtualService/default/orders: spec.http[0].mirrorPercent: Deprecated: \"mirrorPercent\" is deprecated; use \"mirrorPercentage\"",
    ];
    let with = |mutual: &str| -> Vec<String> {
        common
            .iter()
            .map(|s| s.to_string())
            .chain([format!("not-implemented.yaml:58: {mutual}")])
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    let id = ProxyIdentity::default();
    assert_eq!(
        shown_as("not-implemented.yaml", &id, Mode::Serve, false),
        with(
            "Error SY0002 DestinationRule/default/orders: spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs a mesh identity switchyard does not have; use --istio-mutual-as-plaintext for local development"
        )
    );
    assert_eq!(
        shown_as("not-implemented.yaml", &id, Mode::Serve, true),
        with(
            "Warning SY0002 DestinationRule/default/orders: spec.trafficPolicy.tls.mode: ISTIO_MUTUAL is sent in plaintext (--istio-mutual-as-plaintext)"
        )
    );
}

#[test]
fn tls_ports_without_tls_origination_are_named() {
    assert_shown(
        "tls-ports.yaml",
        Mode::Serve,
        &[
            "tls-ports.yaml:15: Warning SY0002 ServiceEntry/default/api: spec.ports[1].protocol: clients speak plain HTTP to switchyard, so without a DestinationRule tls.mode SIMPLE or MUTUAL for this port requests reach it in plaintext",
            "tls-ports.yaml:45: Error SY0002 ServiceEntry/default/passthrough: spec.ports[0].protocol: a DestinationRule sets tls.mode SIMPLE or MUTUAL, but TLS is not originated to the address a request names (resolution NONE without endpoints): use resolution DNS or STATIC",
        ],
    );
}

#[test]
fn resources_that_do_not_apply_are_noted_not_checked() {
    assert_shown(
        "scope.yaml",
        Mode::Analyze,
        &[
            "scope.yaml:9: Info SY0004 VirtualService/default/edge: spec.gateways: applies to gateways only (istio-system/ingress); not served by a sidecar",
            "scope.yaml:24: Info SY0004 VirtualService/team-a/private: spec.exportTo: not exported to namespace \"default\" (exportTo: .); ignored by this proxy",
            "scope.yaml:38: Info SY0004 DestinationRule/team-a/private: spec.exportTo: not exported to namespace \"default\" (exportTo: .); ignored by this proxy",
        ],
    );
    // Seen from team-a, the private resources apply and are checked.
    let team_a = ProxyIdentity {
        namespace: "team-a".to_string(),
        ..ProxyIdentity::default()
    };
    let shown = shown_as("scope.yaml", &team_a, Mode::Analyze, false);
    assert_eq!(
        shown,
        [
            "scope.yaml:9: Info SY0004 VirtualService/default/edge: spec.gateways: applies to gateways only (istio-system/ingress); not served by a sidecar",
            "scope.yaml:29: Error IST0101 VirtualService/team-a/private: spec.http[0].route[0].destination.host: Referenced host not found: \"billing.team-a.svc.cluster.local\"",
            "scope.yaml:37: Warning IST0174 DestinationRule/team-a/private: spec.host: DestinationRule for non-existent service \"billing.team-a.svc.cluster.local\": no visible ServiceEntry or Service defines it",
        ]
    );
}

#[test]
fn webhook_rejections() {
    assert_shown(
        "webhook.yaml",
        Mode::Analyze,
        &[
            "webhook.yaml:13: Error IST0106 ServiceEntry/default/shop: spec.ports[1].number: service entry port 80 already defined",
            "webhook.yaml:14: Error IST0106 ServiceEntry/default/shop: spec.ports[1].name: service entry port name \"http\" already defined",
            "webhook.yaml:17: Error IST0106 ServiceEntry/default/shop: spec.endpoints: no endpoints should be provided for resolution type none",
            "webhook.yaml:26: Error IST0106 ServiceEntry/default/wild: spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS",
            "webhook.yaml:46: Error IST0106 ServiceEntry/default/static: spec.endpoints[0].address: endpoint address \"static-1.example.com\" is not a valid IP address",
            "webhook.yaml:48: Error IST0106 ServiceEntry/default/static: spec.endpoints[0].ports.grpc: endpoint port \"grpc\" is not defined by the service entry (ports: http)",
            "webhook.yaml:54: Error IST0106 WorkloadEntry/default/vm: spec.address: address is required",
            "webhook.yaml:66: Error IST0106 DestinationRule/default/shop: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is not in range 0..100",
            "webhook.yaml:67: Error IST0106 DestinationRule/default/shop: spec.trafficPolicy.outlierDetection.interval: invalid duration \"500us\": duration must be at least 1ms",
            "webhook.yaml:70: Error IST0106 DestinationRule/default/shop: spec.subsets[1].name: duplicate subset names: v1",
            "webhook.yaml:71: Error IST0106 DestinationRule/default/shop: spec.subsets[2].name: subset name is invalid: V_2 (must be a DNS-1123 label: letters, digits and '-', at most 63)",
            "webhook.yaml:80: Error IST0106 VirtualService/default/shop: spec.hosts[1]: duplicate hosts in virtual service: shop & shop.default.svc.cluster.local",
            "webhook.yaml:82: Error IST0106 VirtualService/default/shop: spec.http[0]: HTTP route may contain only one of route, redirect, directResponse or delegate; found route and redirect",
            "webhook.yaml:85: Error IST0106 VirtualService/default/shop: spec.http[0].match[0].headers.x-group.prefix: prefix string match should not be empty",
            "webhook.yaml:86: Error IST0106 VirtualService/default/shop: spec.http[0].match[0].method: only one of exact, prefix or regex may be set; found exact and prefix",
            "webhook.yaml:91: Error IST0112 VirtualService/default/shop: spec.http[0].route[0].destination.host: This VirtualService routes to a service \"shop.default.svc.cluster.local\" that exposes multiple ports [80 80]. Specifying a port in the destination is required to disambiguate.",
            "webhook.yaml:97: Error IST0106 VirtualService/default/shop: spec.http[1].redirect: redirect must specify URI, prefixRewrite, authority, scheme, or port",
            "webhook.yaml:98: Error IST0106 VirtualService/default/shop: spec.http[1].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx",
            "webhook.yaml:103: Error IST0106 VirtualService/default/shop: spec.http[2].directResponse.status: HTTP status 700 is not in range 200-599",
            "webhook.yaml:110: Error IST0106 VirtualService/default/shop: spec.http[3].headers.request.set.x-load: header value \"50%\": single % not allowed. Escape by doubling to %% or encase Envoy variable name in pair of %",
            "webhook.yaml:115: Error IST0106 VirtualService/default/shop: spec.http[3].route[0].destination.port.number: port number 70000 must be in the range 1..65535",
            "webhook.yaml:118: Error IST0106 VirtualService/default/shop: spec.http[3].retries.retryOn: \" reset\" is not a valid retryOn policy",
            "webhook.yaml:121: Error IST0106 VirtualService/default/shop: spec.http[3].fault.abort.httpStatus: HTTP status 600 is not in range 200-599",
            "webhook.yaml:122: Error IST0106 VirtualService/default/shop: spec.http[3].fault.abort.percentage: percentage 150 is neither 0.0, nor in range [0.0001, 100.0]",
            "webhook.yaml:126: Error IST0112 VirtualService/default/shop: spec.http[4].route[0].destination.host: This VirtualService routes to a service \"shop.default.svc.cluster.local\" that exposes multiple ports [80 80]. Specifying a port in the destination is required to disambiguate.",
            "webhook.yaml:127: Error IST0106 VirtualService/default/shop: spec.http[4].rewrite: rewrite may only contain one of URI or UriRegexRewrite",
            "webhook.yaml:139: Error IST0106 VirtualService/default/everything: spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway",
            "webhook.yaml:142: Error IST0106 VirtualService/default/everything: spec.http[0].match[0].headers.@request.auth.claims.group: JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway, found no gateways: []",
            "webhook.yaml:147: Error IST0106 VirtualService/default/everything: spec.http[0].route[0].destination.host: invalid destination host *",
        ],
    );
}

#[test]
fn our_fixtures_that_should_serve_do() {
    // The service fixtures themselves are clean; the scope notes and the canary at zero serve.
    for name in [
        "analyzer-services.yaml",
        "seed-services.yaml",
        "scope.yaml",
        "subset-no-endpoints.yaml",
        "unreachable.yaml",
    ] {
        let res = load(&own(name), &LoadOptions::default());
        let diags = run(&res, Mode::Serve);
        assert!(errors(&diags).is_empty(), "{name}: {:#?}", errors(&diags));
    }
}

#[test]
fn an_empty_destination_is_a_schema_error_and_an_unknown_host() {
    let expected = [
        "empty-destination.yaml:30: Error IST0106 VirtualService/default/cart: spec.http[0].route[0].destination.host: destination host is required",
        "empty-destination.yaml:30: Error IST0101 VirtualService/default/cart: spec.http[0].route[0].destination.host: Referenced host not found: \"\"",
    ];
    assert_shown("empty-destination.yaml", Mode::Analyze, &expected);
    // `run` refuses it for both reasons too.
    assert_shown("empty-destination.yaml", Mode::Serve, &expected);
}

#[test]
fn each_resource_is_judged_from_its_own_namespace() {
    // As istioctl: billing's private host is visible to billing's VirtualService; shop's private
    // VirtualService and the gateway's routes are checked.
    assert_shown(
        "perspective.yaml",
        Mode::AnalyzeAll,
        &[
            "perspective.yaml:48: Error IST0101 VirtualService/shop/cart: spec.http[0].route[0].destination.host: Referenced host not found: \"carts.shop.svc.cluster.local\"",
            "perspective.yaml:63: Error IST0101 VirtualService/shop/edge: spec.http[0].route[0].destination.host: Referenced host not found: \"storefront.shop.svc.cluster.local\"",
        ],
    );
    // One proxy in "default" sees it the other way round.
    assert_shown(
        "perspective.yaml",
        Mode::Analyze,
        &[
            "perspective.yaml:12: Info SY0004 ServiceEntry/billing/ledger: spec.exportTo: not exported to namespace \"default\" (exportTo: .); ignored by this proxy",
            "perspective.yaml:33: Error IST0101 VirtualService/billing/ledger: spec.http[0].route[0].destination.host: Referenced host not found: \"ledger.billing.svc.cluster.local\"",
            "perspective.yaml:43: Info SY0004 VirtualService/shop/cart: spec.exportTo: not exported to namespace \"default\" (exportTo: .); ignored by this proxy",
            "perspective.yaml:58: Info SY0004 VirtualService/shop/edge: spec.gateways: applies to gateways only (istio-system/ingress); not served by a sidecar",
        ],
    );
}

#[test]
fn a_manifests_folder_is_read_as_istioctl_reads_it() {
    let expected = [
        "manifests/routing.yaml:11: Error IST0173 DestinationRule/default/reviews: spec.subsets[1].name: The Subset v2 defined in the DestinationRule does not select any pods of \"reviews.default.svc.cluster.local\", which may lead to 503 UH (NoHealthyUpstream).",
    ];
    assert_shown("manifests", Mode::AnalyzeAll, &expected);
    assert_shown("manifests", Mode::Analyze, &expected);
    let res = load(&own("manifests"), &LoadOptions::default());
    assert_eq!((res.kube_services.len(), res.workloads.len()), (1, 1));
}

#[test]
fn run_names_hosts_known_only_from_a_kubernetes_service() {
    let note = " (a Kubernetes Service defines it, but switchyard serves only hosts with a ServiceEntry, which gives their endpoints: add one)";
    assert_eq!(
        shown("manifests", Mode::Serve),
        [
            format!(
                "manifests/routing.yaml:6: Warning IST0174 DestinationRule/default/reviews: spec.host: DestinationRule for non-existent service \"reviews.default.svc.cluster.local\": no visible ServiceEntry defines it{note}"
            ),
            format!(
                "manifests/routing.yaml:25: Error IST0101 VirtualService/default/reviews: spec.http[0].route[0].destination.host: Referenced host not found: \"reviews.default.svc.cluster.local\"{note}"
            ),
        ]
    );
}
