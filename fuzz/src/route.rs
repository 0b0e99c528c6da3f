//! `RouteTable::route` over an arbitrary table, request and random value, in the style of
//! Envoy's `route_fuzz_test`: a structured set of ServiceEntries, DestinationRules and
//! VirtualServices is rendered to YAML (JSON flow style), loaded, validated and compiled
//! through the public API; configs the validator refuses are a clean rejection.
//!
//! Oracle: no panic; equal inputs route identically; a weighted split never lands on a
//! weight-0 destination, whatever the random value.

use std::sync::Arc;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use switchyard::route::path::{normalize_path, split_path_query};
use switchyard::route::{Action, Decision, RequestView, RouteTable};
use switchyard::upstream::PoolRegistry;

/// Small name pools, so that hosts, subsets and headers in the table and in the request meet
/// often enough for matching code to run.
const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
const SUBSETS: [&str; 3] = ["v1", "v2", "v3"];
const HEADERS: [&str; 3] = ["x-user", "end-user", "cookie"];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const MAX_SERVICES: usize = 3;
const MAX_RULES: usize = 6;
const MAX_DESTS: usize = 4;
const MAX_MATCHES: usize = 3;

#[derive(Debug, Arbitrary)]
pub struct Input {
    pub services: Vec<ServiceSpec>,
    pub virtual_services: Vec<VsSpec>,
    pub request: RequestSpec,
    pub random: u64,
}

#[derive(Debug, Arbitrary)]
pub struct ServiceSpec {
    pub host: u8,
    /// Bit i: subset i is defined by the DestinationRule.
    pub subsets: u8,
    /// Bit i: an endpoint labelled version=SUBSETS[i] exists.
    pub endpoints: u8,
}

#[derive(Debug, Arbitrary)]
pub struct VsSpec {
    pub hosts: Vec<u8>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Arbitrary)]
pub struct RuleSpec {
    pub matches: Vec<MatchSpec>,
    pub action: ActionSpec,
}

#[derive(Debug, Arbitrary)]
pub enum ActionSpec {
    Route(Vec<DestSpec>),
    Redirect { uri: String, code: u8 },
    Direct { status: u16, body: String },
}

#[derive(Debug, Arbitrary)]
pub struct DestSpec {
    pub host: u8,
    pub subset: Option<u8>,
    /// Small weights make weight 0 common, which is the case worth checking.
    pub weight: Option<u8>,
}

#[derive(Debug, Arbitrary)]
pub struct MatchSpec {
    pub uri: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub headers: Vec<(u8, StrMatch)>,
    pub without_headers: Vec<(u8, StrMatch)>,
    pub query: Vec<(String, StrMatch)>,
    pub port: Option<u16>,
    pub ignore_uri_case: bool,
}

#[derive(Debug, Arbitrary)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Arbitrary)]
pub struct RequestSpec {
    pub host: u8,
    pub method: u8,
    pub path: String,
    pub port: u16,
    pub headers: Vec<(u8, String)>,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn string_match(m: &StrMatch) -> Value {
    match m {
        StrMatch::Exact(s) => json!({ "exact": s }),
        StrMatch::Prefix(s) => json!({ "prefix": s }),
        StrMatch::Regex(s) => json!({ "regex": s }),
    }
}

fn match_block(m: &MatchSpec) -> Value {
    let mut o = Map::new();
    if let Some(u) = &m.uri {
        o.insert("uri".into(), string_match(u));
    }
    if let Some(me) = &m.method {
        o.insert("method".into(), string_match(me));
    }
    let named = |list: &[(u8, StrMatch)]| -> Map<String, Value> {
        list.iter()
            .map(|(n, sm)| (pick(&HEADERS, *n).to_string(), string_match(sm)))
            .collect()
    };
    if !m.headers.is_empty() {
        o.insert("headers".into(), Value::Object(named(&m.headers)));
    }
    if !m.without_headers.is_empty() {
        o.insert(
            "withoutHeaders".into(),
            Value::Object(named(&m.without_headers)),
        );
    }
    if !m.query.is_empty() {
        let q: Map<String, Value> = m
            .query
            .iter()
            .map(|(k, sm)| (k.clone(), string_match(sm)))
            .collect();
        o.insert("queryParams".into(), Value::Object(q));
    }
    if let Some(p) = m.port {
        o.insert("port".into(), json!(p));
    }
    if m.ignore_uri_case {
        o.insert("ignoreUriCase".into(), json!(true));
    }
    Value::Object(o)
}

fn rule(r: &RuleSpec) -> Value {
    let mut o = Map::new();
    if !r.matches.is_empty() {
        let ms: Vec<Value> = r
            .matches
            .iter()
            .take(MAX_MATCHES)
            .map(match_block)
            .collect();
        o.insert("match".into(), Value::Array(ms));
    }
    match &r.action {
        ActionSpec::Route(dests) => {
            let ds: Vec<Value> = dests
                .iter()
                .take(MAX_DESTS)
                .map(|d| {
                    let mut dest = json!({ "host": pick(&HOSTS, d.host) });
                    if let Some(s) = d.subset {
                        dest["subset"] = json!(pick(&SUBSETS, s));
                    }
                    let mut rd = json!({ "destination": dest });
                    if let Some(w) = d.weight {
                        rd["weight"] = json!(w);
                    }
                    rd
                })
                .collect();
            o.insert("route".into(), Value::Array(ds));
        }
        ActionSpec::Redirect { uri, code } => {
            let code = [301, 302, 303, 307, 308][usize::from(*code) % 5];
            o.insert(
                "redirect".into(),
                json!({ "uri": uri, "redirectCode": code }),
            );
        }
        ActionSpec::Direct { status, body } => {
            o.insert(
                "directResponse".into(),
                json!({ "status": status, "body": { "string": body } }),
            );
        }
    }
    Value::Object(o)
}

/// The config as YAML text: one JSON document per resource (JSON is YAML flow style).
pub fn render(input: &Input) -> String {
    let mut docs = Vec::new();
    for (i, s) in input.services.iter().take(MAX_SERVICES).enumerate() {
        let host = pick(&HOSTS, s.host);
        let endpoints: Vec<Value> = (0..SUBSETS.len())
            .filter(|b| s.endpoints & (1 << b) != 0)
            .map(|b| json!({ "address": format!("10.0.{i}.{}", b + 1), "labels": { "version": SUBSETS[b] } }))
            .collect();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": { "name": format!("se-{i}") },
            "spec": {
                "hosts": [format!("{host}.default.svc.cluster.local")],
                "ports": [{ "number": 80, "name": "http", "protocol": "HTTP" }],
                "resolution": "STATIC",
                "endpoints": endpoints,
            }
        }));
        let subsets: Vec<Value> = (0..SUBSETS.len())
            .filter(|b| s.subsets & (1 << b) != 0)
            .map(|b| json!({ "name": SUBSETS[b], "labels": { "version": SUBSETS[b] } }))
            .collect();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": { "name": format!("dr-{i}") },
            "spec": { "host": host, "subsets": subsets }
        }));
    }
    for (i, vs) in input.virtual_services.iter().take(MAX_SERVICES).enumerate() {
        let hosts: Vec<&str> = vs.hosts.iter().take(3).map(|h| pick(&HOSTS, *h)).collect();
        let http: Vec<Value> = vs.rules.iter().take(MAX_RULES).map(rule).collect();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": format!("vs-{i}") },
            "spec": { "hosts": hosts, "http": http }
        }));
    }
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>()
}

/// A served table, or None when the validator refuses the config (a clean rejection).
pub fn build(yaml: &str) -> Option<RouteTable> {
    crate::table::served(
        yaml,
        &Arc::new(PoolRegistry::default()),
        &Arc::new(switchyard::metrics::Registry::default()),
    )
    .ok()
}

/// What a decision points at, by address: equal inputs must give the same one.
fn identity_of(d: &Decision<'_>) -> (u8, usize, usize) {
    fn addr<T>(t: &T) -> usize {
        std::ptr::from_ref(t) as usize
    }
    match d {
        Decision::Forward { route, target, .. } => (0, addr(*route), addr(*target)),
        Decision::Redirect { route, .. } => (1, addr(*route), 0),
        Decision::Direct { route, .. } => (2, addr(*route), 0),
        Decision::NoRoute { vhost } => (3, addr(*vhost), 0),
        Decision::UnknownHost => (4, 0, 0),
    }
}

/// Checks the weighted-pick invariant for one decision and a spread of random values.
fn check_weights(d: &Decision<'_>, random: u64) {
    let Decision::Forward { route, target, .. } = d else {
        return;
    };
    let Action::Forward(pick) = &route.action else {
        panic!("a Forward decision from a route whose action is not Forward");
    };
    let chosen = pick
        .iter()
        .find(|(_, t)| std::ptr::eq(*t, *target))
        .map(|(w, _)| w);
    let Some(w) = chosen else {
        panic!("the chosen target is not one of the route's destinations");
    };
    if pick.len() > 1 {
        assert!(w > 0, "weighted split picked a weight-0 destination");
        // Every interval boundary nearby, not just this draw.
        for k in 0..pick.total().min(256) {
            let i = pick.pick_index(random.wrapping_add(k));
            let (wi, _) = pick.iter().nth(i).unwrap_or((0, *target));
            assert!(
                wi > 0,
                "random {} landed on weight 0",
                random.wrapping_add(k)
            );
        }
    }
}

pub fn run(input: &Input) {
    let yaml = render(input);
    let Some(table) = build(&yaml) else {
        return;
    };
    let req = &input.request;
    let host = format!("{}.default.svc.cluster.local", pick(&HOSTS, req.host));
    let mut headers = HeaderMap::new();
    for (n, v) in req.headers.iter().take(8) {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.append(HeaderName::from_static(pick(&HEADERS, *n)), v);
        }
    }
    let raw = if req.path.starts_with('/') {
        req.path.clone()
    } else {
        format!("/{}", req.path)
    };
    let (path, query) = split_path_query(&raw);
    let Ok(path) = normalize_path(path) else {
        return;
    };
    let view = RequestView {
        method: pick(&METHODS, req.method),
        scheme: "http",
        authority: &host,
        port: req.port,
        path: &path,
        query,
        headers: &headers,
    };
    let a = table.route(&host, &view, input.random);
    let b = table.route(&host, &view, input.random);
    assert_eq!(identity_of(&a), identity_of(&b), "route() is deterministic");
    check_weights(&a, input.random);
    // The short name reaches the same virtual host as the FQDN.
    let short = pick(&HOSTS, req.host);
    let c = table.route(short, &view, input.random);
    if table.virtual_host(short).is_some() {
        assert_eq!(
            identity_of(&a),
            identity_of(&c),
            "short name and FQDN agree"
        );
    }
}
