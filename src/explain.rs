//! `switchyard explain`: what the proxy would do with one request, and why. Everything here
//! runs the same code the proxy runs: the config is loaded, validated as `run` validates it and
//! compiled into a `RouteTable`, and the request goes through `RouteTable::route`. Only the
//! reasons an earlier route did not match (`RequestMatch::first_mismatch`) and the raw policy
//! fields read back from the YAML are extra.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::istio::Labels;
use crate::config::registry::destination_rules_for;
use crate::config::scope::{binds_mesh, labels_subset};
use crate::config::validate::{Mode, ValidateOptions, validate};
use crate::config::{
    Diagnostic, LoadOptions, ProxyIdentity, Resources, VirtualService, codes, load,
};
use crate::route::compile::{CompileOptions, OutboundPolicy, compile};
use crate::route::host::split_authority;
use crate::route::path::{normalize_path, split_path_query};
use crate::route::{Action, Decision, RequestView, Route, RouteTable, VirtualHost};
use crate::upstream::{Cluster, Discovery, PoolRegistry};

/// Printed after a policy switchyard reads but does not act on yet (validate's `SY0002`).
pub const NOT_ENFORCED: &str = "[not enforced yet]";

/// A request as `explain` and `simulate` take it on the command line.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// Host[:port] as the client sends it (the URL's, or a `Host:` header's).
    pub authority: String,
    /// Lower-cased, without port or trailing dot: what virtual-host lookup sees.
    pub host: String,
    /// The port the request is addressed to; 80 when none is given.
    pub port: u16,
    /// The path as given, without the query.
    pub raw_path: String,
    /// The path after Envoy's normalisation: what route matching sees.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0:?} is not a URL like http://frontend/path?q=1: {1}")]
    Url(String, String),
    #[error(
        "{0:?}: only http:// URLs (a sidecar receives plaintext HTTP; TLS is the app's business)"
    )]
    Scheme(String),
    #[error("header {0:?}: expected `Name: value`")]
    HeaderSyntax(String),
    #[error("header {0:?}: invalid name or value")]
    HeaderInvalid(String),
    #[error("method {0:?} is not a valid HTTP method")]
    Method(String),
    #[error("{0} (the proxy answers 400)")]
    Path(String),
}

impl RequestSpec {
    /// `url` is `http://host[:port][/path][?query]` (the scheme may be left out). A `Host:`
    /// header replaces the URL's authority, as with curl, so `-H 'Host: frontend'
    /// http://localhost:15001/` explains what that curl command would get.
    pub fn parse(url: &str, method: &str, headers: &[String]) -> Result<RequestSpec, RequestError> {
        let full: Cow<str> = if url.contains("://") {
            Cow::Borrowed(url)
        } else {
            Cow::Owned(format!("http://{url}"))
        };
        let uri: http::Uri = full.parse().map_err(|e: http::uri::InvalidUri| {
            RequestError::Url(url.to_string(), e.to_string())
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(RequestError::Scheme(url.to_string()));
        }
        let Some(url_authority) = uri.authority() else {
            return Err(RequestError::Url(url.to_string(), "no host".to_string()));
        };
        if url_authority.as_str().contains('@') {
            return Err(RequestError::Url(
                url.to_string(),
                "user information is not supported".to_string(),
            ));
        }
        http::Method::from_bytes(method.as_bytes())
            .map_err(|_| RequestError::Method(method.to_string()))?;

        let mut map = HeaderMap::new();
        let mut authority = url_authority.as_str().to_string();
        for h in headers {
            let Some((name, value)) = h.split_once(':') else {
                return Err(RequestError::HeaderSyntax(h.clone()));
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| RequestError::HeaderInvalid(h.clone()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| RequestError::HeaderInvalid(h.clone()))?;
            if name == http::header::HOST {
                authority = value
                    .to_str()
                    .map_err(|_| RequestError::HeaderInvalid(h.clone()))?
                    .to_string();
                continue;
            }
            map.append(name, value);
        }

        let (raw_host, port) = split_authority(&authority);
        let host = raw_host.trim_end_matches('.').to_ascii_lowercase();
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let (raw_path, query) = split_path_query(pq);
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        let path = normalize_path(raw_path)
            .map_err(|e| RequestError::Path(e.to_string()))?
            .into_owned();
        Ok(RequestSpec {
            method: method.to_string(),
            host,
            port: port.unwrap_or(80),
            raw_path: raw_path.to_string(),
            path,
            query: query.map(str::to_string),
            headers: map,
            authority,
        })
    }

    /// What the matchers see, built exactly as the proxy builds it.
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: "http",
            authority: &self.authority,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }

    /// `GET http://frontend/path?q=1`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} http://{}{}", self.method, self.authority, self.raw_path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// A config loaded, validated and compiled as `run` would serve it, without starting DNS
/// resolution or any listener.
pub struct Loaded {
    pub resources: Resources,
    pub table: RouteTable,
    pub identity: ProxyIdentity,
    /// Warnings and notices (`run` would log these and serve).
    pub diagnostics: Vec<Diagnostic>,
}

/// What `run` needs to know about the config beyond its path.
#[derive(Debug, Clone, Default)]
pub struct LoadSettings {
    pub identity: ProxyIdentity,
    pub outbound_policy: OutboundPolicy,
    pub istio_mutual_as_plaintext: bool,
}

/// Loads `path` the way `run` does. `Err` carries every diagnostic when `run` would refuse
/// the config.
pub fn load_config(path: &Path, settings: &LoadSettings) -> Result<Loaded, Vec<Diagnostic>> {
    let res = load(
        path,
        &LoadOptions {
            default_namespace: settings.identity.namespace.clone(),
        },
    );
    let mut diags = res.diagnostics.clone();
    diags.extend(validate(
        &res,
        &ValidateOptions {
            identity: &settings.identity,
            mode: Mode::Serve,
            istio_mutual_as_plaintext: settings.istio_mutual_as_plaintext,
        },
    ));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let table = compile(
        &res,
        &CompileOptions {
            identity: &settings.identity,
            outbound_policy: settings.outbound_policy,
            pools: &Arc::new(PoolRegistry::default()),
            metrics: &Arc::new(crate::metrics::Registry::default()),
            version: 1,
        },
    )
    .map_err(|e| {
        let mut d = diags.clone();
        d.push(Diagnostic {
            severity: crate::config::Severity::Error,
            code: crate::config::codes::PARSE_ERROR,
            file: path.to_path_buf(),
            line: 0,
            resource: String::new(),
            field_path: String::new(),
            message: e.to_string(),
        });
        d
    })?;
    Ok(Loaded {
        resources: res,
        table,
        identity: settings.identity.clone(),
        diagnostics: diags,
    })
}

/// `http[1]`, `http[1].match[0]`, plus the route's name when it has one.
pub fn route_label(route: &Route) -> String {
    let mut s = format!("http[{}]", route.rule_index);
    if let Some(m) = route.match_index {
        let _ = write!(s, ".match[{m}]");
    }
    if !route.name.is_empty() {
        let _ = write!(s, " {:?}", route.name);
    }
    s
}

/// The short name a destination goes by in tables: its subset, else its host.
pub fn destination_label(cluster: &Cluster) -> String {
    if cluster.subset.is_empty() {
        cluster.service_host.clone()
    } else {
        cluster.subset.clone()
    }
}

/// A share as a percentage with one decimal: `95.0%`.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The virtual host a decision came from and the VirtualService behind it (None for a host
/// nothing serves).
fn served_by<'t>(
    loaded: &'t Loaded,
    decision: &Decision<'t>,
) -> Option<(&'t VirtualHost, Option<&'t VirtualService>)> {
    let vhost = match decision {
        Decision::UnknownHost => return None,
        Decision::Forward { vhost, .. }
        | Decision::Redirect { vhost, .. }
        | Decision::Direct { vhost, .. }
        | Decision::NoRoute { vhost } => *vhost,
    };
    let vs = loaded
        .resources
        .virtual_services
        .iter()
        .find(|vs| vs.id() == vhost.name);
    Some((vhost, vs))
}

/// The full explanation, as `switchyard explain` prints it.
pub fn explain(loaded: &Loaded, req: &RequestSpec) -> String {
    let table = &loaded.table;
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "request:  {}", req.summary());
    if req.path != req.raw_path {
        let _ = writeln!(
            o,
            "          path normalised to {} before matching",
            req.path
        );
    }
    let _ = writeln!(o, "host:     {} (port {})", req.host, req.port);

    let view = req.view();
    // The random draw only picks among weighted destinations, which are all listed below.
    let decision = table.route(&req.host, &view, 0);
    let Some((vhost, vs)) = served_by(loaded, &decision) else {
        explain_unknown_host(o, table, req);
        return out;
    };
    let _ = write!(o, "served by {}", vhost.name);
    if let Some(vs) = vs {
        let _ = write!(
            o,
            " ({}:{})",
            vs.source.file.display(),
            vs.source.line_of("metadata.name")
        );
    } else if vhost.name.starts_with("ServiceEntry/") {
        let _ = write!(o, " (no VirtualService: Istio's default route)");
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "          domains: {}", vhost.domains.join(", "));
    let _ = writeln!(o);

    let matched = walk_routes(o, vhost, vs, &loaded.identity, req);

    match decision {
        Decision::UnknownHost => {}
        Decision::NoRoute { .. } => {
            let _ = writeln!(
                o,
                "result:   no route matched: 404, response flag NR (empty body)"
            );
        }
        Decision::Redirect {
            route, redirect, ..
        } => {
            let location =
                redirect.location("http", &req.authority, &req.path, req.query.as_deref());
            let _ = writeln!(
                o,
                "result:   route [{}] redirects: {}, Location: {location}",
                matched.unwrap_or(0),
                redirect.code
            );
            header_ops_lines(o, route);
        }
        Decision::Direct {
            route, response, ..
        } => {
            let _ = write!(
                o,
                "result:   route [{}] answers directly: {}",
                matched.unwrap_or(0),
                response.status
            );
            match &response.body {
                Some(b) => {
                    let body = String::from_utf8_lossy(b);
                    let _ = writeln!(o, ", body {body:?}");
                }
                None => {
                    let _ = writeln!(o, ", no body");
                }
            }
            header_ops_lines(o, route);
        }
        Decision::Forward { route, .. } => {
            explain_forward(o, table, vs, route, matched.unwrap_or(0), req);
            policies(o, loaded, vs, route);
        }
    }
    out
}

/// `explain --output json`: the same walk as a document. `text` holds the text explanation
/// line by line, for what the fields leave out (policies, header operations, rewrites).
pub fn explain_json(loaded: &Loaded, req: &RequestSpec) -> serde_json::Value {
    use serde_json::{Value, json};
    let table = &loaded.table;
    let view = req.view();
    let decision = table.route(&req.host, &view, 0);
    let text: Vec<String> = explain(loaded, req).lines().map(str::to_string).collect();
    let request = json!({
        "method": req.method,
        "url": req.summary(),
        "host": req.host,
        "port": req.port,
        "path": req.path,
        "raw_path": req.raw_path,
        "query": req.query,
    });
    let Some((vhost, vs)) = served_by(loaded, &decision) else {
        let action = match table.outbound_policy {
            OutboundPolicy::RegistryOnly => json!({"action": "reject", "status": 502}),
            OutboundPolicy::AllowAny => json!({"action": "passthrough"}),
        };
        return json!({
            "request": request,
            "served_by": Value::Null,
            "routes": [],
            "result": action,
            "text": text,
        });
    };
    let (steps, matched) = route_walk(vhost, vs, &loaded.identity, req);
    let routes: Vec<Value> = steps
        .iter()
        .map(|step| match step {
            WalkStep::Skipped { rule, block, why } => json!({
                "index": Value::Null,
                "rule": format!("http[{rule}].match[{block}]"),
                "outcome": "not generated",
                "reason": why,
            }),
            WalkStep::Route {
                index,
                label,
                outcome,
            } => {
                let (outcome, reason) = match outcome {
                    RouteOutcome::Match => ("match", None),
                    RouteOutcome::NoMatch(why) => ("no match", Some(why.as_str())),
                    RouteOutcome::NotEvaluated => ("not evaluated", None),
                };
                json!({"index": index, "rule": label, "outcome": outcome, "reason": reason})
            }
        })
        .collect();
    let result = match &decision {
        Decision::UnknownHost => Value::Null,
        Decision::NoRoute { .. } => json!({"action": "no_route", "status": 404, "flag": "NR"}),
        Decision::Redirect { redirect, .. } => json!({
            "action": "redirect",
            "route": matched,
            "status": redirect.code.as_u16(),
            "location": redirect.location("http", &req.authority, &req.path, req.query.as_deref()),
        }),
        Decision::Direct { response, .. } => json!({
            "action": "direct_response",
            "route": matched,
            "status": response.status.as_u16(),
            "body": response.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        }),
        Decision::Forward { route, .. } => {
            let mut destinations = Vec::new();
            if let Action::Forward(pick) = &route.action {
                for (i, (weight, target)) in pick.iter().enumerate() {
                    let Some(cluster) = table.clusters.get(target.cluster) else {
                        continue;
                    };
                    let endpoints: Vec<Value> = match &cluster.discovery {
                        Discovery::OriginalDst => Vec::new(),
                        Discovery::Dns(targets) => targets
                            .iter()
                            .map(|t| {
                                json!({"dns": format!("{}:{}", t.hostname, t.port), "labels": t.labels})
                            })
                            .collect(),
                        Discovery::Static => cluster
                            .endpoints()
                            .iter()
                            .map(|e| {
                                json!({"address": e.addr.to_string(), "labels": e.labels, "weight": e.weight})
                            })
                            .collect(),
                    };
                    destinations.push(json!({
                        "weight": weight,
                        "share": pick.share(i),
                        "subset": (!cluster.subset.is_empty()).then(|| cluster.subset.clone()),
                        "cluster": cluster.name,
                        "lb": cluster.lb.as_str(),
                        "endpoints": endpoints,
                    }));
                }
            }
            json!({"action": "forward", "route": matched, "destinations": destinations})
        }
    };
    json!({
        "request": request,
        "served_by": {
            "name": vhost.name,
            "file": vs.map(|vs| vs.source.file.display().to_string()),
            "line": vs.map(|vs| vs.source.line_of("metadata.name")),
            "domains": vhost.domains,
        },
        "routes": routes,
        "result": result,
        "text": text,
    })
}

fn explain_unknown_host(o: &mut String, table: &RouteTable, req: &RequestSpec) {
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "no VirtualService or ServiceEntry serves host {:?}",
        req.host
    );
    match table.outbound_policy {
        OutboundPolicy::RegistryOnly => {
            let _ = writeln!(
                o,
                "result:   502 (outbound traffic policy REGISTRY_ONLY; Envoy logs no response flag, `-`)"
            );
        }
        OutboundPolicy::AllowAny => {
            let _ = writeln!(
                o,
                "result:   forwarded as is to {}:{} (outbound traffic policy ALLOW_ANY, passthrough)",
                req.host, req.port
            );
        }
    }
    let mut known: Vec<&str> = table
        .virtual_hosts()
        .iter()
        .filter_map(|v| v.domains.first().map(String::as_str))
        .collect();
    known.sort_unstable();
    if !known.is_empty() {
        let _ = writeln!(o, "known hosts: {}", known.join(", "));
    }
}

/// One line of the route walk: a match block the compiler left out for this proxy, or a
/// route of the table with whether it matched.
enum WalkStep {
    Skipped {
        rule: usize,
        block: usize,
        why: String,
    },
    Route {
        index: usize,
        label: String,
        outcome: RouteOutcome,
    },
}

enum RouteOutcome {
    Match,
    NoMatch(String),
    NotEvaluated,
}

/// Every route in order with why it did or did not match, and the index of the first route
/// that matched.
fn route_walk(
    vhost: &VirtualHost,
    vs: Option<&VirtualService>,
    me: &ProxyIdentity,
    req: &RequestSpec,
) -> (Vec<WalkStep>, Option<usize>) {
    let view = req.view();
    let skipped = vs
        .map(|vs| skipped_blocks(vs, vhost, me))
        .unwrap_or_default();
    let mut skipped = skipped.into_iter().peekable();
    let mut steps = Vec::new();
    let mut matched = None;
    for (i, route) in vhost.routes.iter().enumerate() {
        while let Some(s) = skipped
            .next_if(|s| matches!(s, WalkStep::Skipped { rule, .. } if *rule <= route.rule_index))
        {
            steps.push(s);
        }
        let outcome = if matched.is_some() {
            RouteOutcome::NotEvaluated
        } else {
            match route.matches.first_mismatch(&view) {
                Some(why) => RouteOutcome::NoMatch(why.to_string()),
                None => {
                    matched = Some(i);
                    RouteOutcome::Match
                }
            }
        };
        steps.push(WalkStep::Route {
            index: i,
            label: route_label(route),
            outcome,
        });
    }
    steps.extend(skipped);
    (steps, matched)
}

/// Prints every route in order with why it did or did not match; returns the index of the
/// first route that matched.
fn walk_routes(
    o: &mut String,
    vhost: &VirtualHost,
    vs: Option<&VirtualService>,
    me: &ProxyIdentity,
    req: &RequestSpec,
) -> Option<usize> {
    let _ = writeln!(o, "routes, in order (the first match wins):");
    let (steps, matched) = route_walk(vhost, vs, me, req);
    for step in &steps {
        match step {
            WalkStep::Skipped { rule, block, why } => {
                let _ = writeln!(
                    o,
                    "  [-] http[{rule}].match[{block}]: not generated for this proxy: {why}"
                );
            }
            WalkStep::Route {
                index,
                label,
                outcome,
            } => {
                let status = match outcome {
                    RouteOutcome::Match => "MATCH".to_string(),
                    RouteOutcome::NoMatch(why) => format!("no match: {why}"),
                    RouteOutcome::NotEvaluated => {
                        "not evaluated (an earlier route matched)".to_string()
                    }
                };
                let _ = writeln!(o, "  [{index}] {label}: {status}");
            }
        }
    }
    if vhost.routes.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    let _ = writeln!(o);
    matched
}

/// Match blocks the compiler left out because a config-time condition (`sourceLabels`,
/// `sourceNamespace`, `gateways`) excludes this proxy.
fn skipped_blocks(vs: &VirtualService, vhost: &VirtualHost, me: &ProxyIdentity) -> Vec<WalkStep> {
    let mut out = Vec::new();
    for (r, rule) in vs.spec.http.iter().enumerate() {
        if rule.delegate.is_some() {
            continue;
        }
        for (m, block) in rule.matches.iter().enumerate() {
            let present = vhost
                .routes
                .iter()
                .any(|x| x.rule_index == r && x.match_index == Some(m));
            if present {
                continue;
            }
            let why = if !labels_subset(&block.source_labels, &me.labels) {
                format!(
                    "sourceLabels {{{}}} are not all among this proxy's --labels {{{}}}",
                    labels_text(&block.source_labels),
                    labels_text(&me.labels)
                )
            } else if let Some(ns) = block
                .source_namespace
                .as_deref()
                .filter(|ns| *ns != me.namespace)
            {
                format!(
                    "sourceNamespace {ns:?} is not this proxy's --namespace {:?}",
                    me.namespace
                )
            } else if !block.gateways.is_empty() && !binds_mesh(&block.gateways) {
                format!("gateways {:?} do not include mesh", block.gateways)
            } else {
                "not in the table".to_string()
            };
            out.push(WalkStep::Skipped {
                rule: r,
                block: m,
                why,
            });
        }
    }
    out
}

fn explain_forward(
    o: &mut String,
    table: &RouteTable,
    vs: Option<&VirtualService>,
    route: &Route,
    index: usize,
    req: &RequestSpec,
) {
    // Destinations Istio dropped for weight 0 are not in the table; the YAML still has them.
    let dropped: Vec<(String, Option<String>)> = vs
        .and_then(|vs| vs.spec.http.get(route.rule_index))
        .filter(|rule| rule.delegate.is_none() && rule.route.len() > 1)
        .map(|rule| {
            rule.route
                .iter()
                .filter(|d| d.weight.is_none_or(|w| w.0 <= 0))
                .map(|d| (d.destination.host.clone(), d.destination.subset.clone()))
                .collect()
        })
        .unwrap_or_default();
    let Action::Forward(pick) = &route.action else {
        return;
    };
    if pick.len() > 1 {
        let weights: Vec<String> = pick.iter().map(|(w, _)| w.to_string()).collect();
        let _ = writeln!(
            o,
            "result:   route [{index}] forwards; each request is an independent weighted draw (weights {} = {}):",
            weights.join(" + "),
            pick.total()
        );
    } else {
        let _ = writeln!(o, "result:   route [{index}] forwards every request to:");
    }
    for (i, (_, target)) in pick.iter().enumerate() {
        let Some(cluster) = table.clusters.get(target.cluster_at(req.port)) else {
            continue;
        };
        let what = if cluster.subset.is_empty() {
            "the whole service".to_string()
        } else {
            format!("subset {}", cluster.subset)
        };
        let _ = writeln!(
            o,
            "  {:>6}  {what} → {} ({})",
            percent(pick.share(i)),
            cluster.name,
            cluster.lb.as_str()
        );
        endpoint_lines(o, cluster);
        // What the upstream sees as Host/:authority when something rewrites it: the route's
        // rewrite wins over this destination's own `Host`/`:authority` header.
        let route_authority = route.rewrite.as_ref().and_then(|rw| rw.authority.as_ref());
        let rewritten = match (route_authority, &target.authority) {
            (Some(a), _) => Some((a, "the route's authority rewrite")),
            (None, Some(a)) => Some((a, "this destination's request headers")),
            (None, None) => None,
        };
        if let Some((a, from)) = rewritten {
            let _ = writeln!(
                o,
                "          upstream authority: {} (was {}; from {from})",
                String::from_utf8_lossy(a.as_bytes()),
                req.authority
            );
        }
        let ops = &target.request_headers;
        if !ops.is_empty() {
            let _ = writeln!(o, "          request headers: {}", ops_text(ops));
        }
    }
    for (host, subset) in &dropped {
        let what = subset
            .as_ref()
            .map_or_else(|| format!("host {host}"), |s| format!("subset {s}"));
        let _ = writeln!(
            o,
            "  {:>6}  {what}: weight 0, dropped (Istio sends it nothing)",
            percent(0.0)
        );
    }
    if let Some(sticky) = &route.sticky {
        let key = match &sticky.key {
            crate::route::sticky::StickyKey::Header(h) => format!("header {h}"),
            crate::route::sticky::StickyKey::Cookie(c) => format!("cookie {c}"),
            crate::route::sticky::StickyKey::Query(q) => format!("query parameter {q}"),
        };
        match sticky.pick(&req.headers, req.query.as_deref()) {
            Some(i) => {
                let owner = pick
                    .iter()
                    .nth(i)
                    .and_then(|(_, t)| table.clusters.get(t.cluster))
                    .map_or_else(|| format!("#{i}"), |c| c.name.clone());
                let _ = writeln!(
                    o,
                    "sticky:   {key} is present: this request always goes to {owner} while the weights stand"
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "sticky:   {key} is absent: an independent weighted draw, as in Istio"
                );
            }
        }
    }
    if let Some(limit) = route.policy.rate_limit.as_deref() {
        let _ = writeln!(
            o,
            "limit:    local rate limit {:?} ({}% enabled, {}% enforced): {}",
            limit.def.stat_prefix,
            f64::from(limit.def.enabled) / 10_000.0,
            f64::from(limit.def.enforced) / 10_000.0,
            if limit.descriptor_buckets.is_empty() {
                "every request charges the route's bucket".to_string()
            } else {
                format!(
                    "{} descriptor bucket(s), charged when the request's descriptor matches (destination_cluster = the subset drawn)",
                    limit.descriptor_buckets.len()
                )
            }
        );
    }
    if let Some(rw) = &route.rewrite {
        if let Some(p) = rw.rewrite_path(&req.path) {
            let _ = writeln!(o, "rewrite:  path {} → {p}", req.path);
        }
        if let Some(a) = &rw.authority {
            let _ = writeln!(
                o,
                "rewrite:  authority → {}",
                String::from_utf8_lossy(a.as_bytes())
            );
        }
    }
    header_ops_lines(o, route);
}

fn endpoint_lines(o: &mut String, cluster: &Cluster) {
    match &cluster.discovery {
        Discovery::OriginalDst => {
            let _ = writeln!(
                o,
                "          resolution NONE: forwarded to the address the request names"
            );
        }
        Discovery::Dns(targets) => {
            if targets.is_empty() {
                let _ = writeln!(
                    o,
                    "          no endpoints: requests get 503 no healthy upstream (UH)"
                );
            }
            for t in targets {
                let _ = write!(o, "          dns {}:{}", t.hostname, t.port);
                if !t.labels.is_empty() {
                    let _ = write!(o, " {}", labels_text(&t.labels));
                }
                let _ = writeln!(o, " (resolved every 5 s while serving)");
            }
        }
        Discovery::Static => {
            let eps = cluster.endpoints();
            if eps.is_empty() {
                let _ = writeln!(
                    o,
                    "          no endpoints: requests get 503 no healthy upstream (UH)"
                );
            }
            for e in eps.iter() {
                let _ = write!(o, "          {} {}", e.addr, labels_text(&e.labels));
                if e.weight != 1 {
                    let _ = write!(o, " weight {}", e.weight);
                }
                let _ = writeln!(o);
            }
        }
    }
}

fn ops_text(ops: &crate::route::HeaderOps) -> String {
    let mut parts = Vec::new();
    let names = |v: &mut Vec<String>, what: &str, names: Vec<&str>| {
        if !names.is_empty() {
            v.push(format!("{what} {}", names.join(", ")));
        }
    };
    names(
        &mut parts,
        "set",
        ops.set.iter().map(|(n, _)| n.as_str()).collect(),
    );
    names(
        &mut parts,
        "add",
        ops.add.iter().map(|(n, _)| n.as_str()).collect(),
    );
    names(
        &mut parts,
        "remove",
        ops.remove.iter().map(|n| n.as_str()).collect(),
    );
    parts.join("; ")
}

fn header_ops_lines(o: &mut String, route: &Route) {
    if !route.request_headers.is_empty() {
        let _ = writeln!(o, "headers:  request: {}", ops_text(&route.request_headers));
    }
    if let Some(ops) = route.response_headers.as_deref().filter(|x| !x.is_empty()) {
        let _ = writeln!(o, "headers:  response: {}", ops_text(ops));
    }
}

// ---------------------------------------------------------------------------------------------
// Policies, read back from the YAML as written
// ---------------------------------------------------------------------------------------------

/// `spec.http[r]` and `spec...` keys accept camelCase and snake_case, as the loader does.
fn get<'v>(v: &'v yaml_serde::Value, keys: &[&str]) -> Option<&'v yaml_serde::Value> {
    let map = v.as_mapping()?;
    keys.iter()
        .find_map(|k| map.get(*k))
        .filter(|v| !v.is_null())
}

fn snake(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// Follows `path` (camelCase keys and list indexes) through a document.
fn at<'v>(doc: &'v yaml_serde::Value, path: &[PathStep]) -> Option<&'v yaml_serde::Value> {
    let mut cur = doc;
    for step in path {
        cur = match step {
            PathStep::Key(k) => get(cur, &[k, &snake(k)])?,
            PathStep::Index(i) => cur.as_sequence()?.get(*i)?,
        };
    }
    Some(cur)
}

enum PathStep {
    Key(&'static str),
    Index(usize),
}

/// A YAML value on one line, in flow style: `{attempts: 3, perTryTimeout: 2s}`.
pub fn flow(v: &yaml_serde::Value) -> String {
    use yaml_serde::Value;
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./%".contains(c));
            if plain { s.clone() } else { format!("{s:?}") }
        }
        Value::Sequence(items) => {
            format!(
                "[{}]",
                items.iter().map(flow).collect::<Vec<_>>().join(", ")
            )
        }
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => flow(&t.value),
    }
}

fn parse_doc(text: &str) -> Option<yaml_serde::Value> {
    yaml_serde::from_str(text).ok()
}

/// Whether validation reported `field_path` of `resource` as read but not acted on (`SY0002`).
/// Asking the validator keeps `explain` right as policies get implemented.
fn not_enforced(loaded: &Loaded, resource: &str, field_path: &str) -> bool {
    loaded.diagnostics.iter().any(|d| {
        d.code == codes::NOT_IMPLEMENTED && d.resource == resource && d.field_path == field_path
    })
}

fn marked(value: &yaml_serde::Value, gap: bool) -> String {
    if gap {
        format!("{} {NOT_ENFORCED}", flow(value))
    } else {
        flow(value)
    }
}

fn policies(o: &mut String, loaded: &Loaded, vs: Option<&VirtualService>, route: &Route) {
    let _ = writeln!(o);
    let Some(vs) = vs else {
        let _ = writeln!(
            o,
            "policies: none set (no VirtualService); Istio's default retry policy applies"
        );
        destination_policies(o, loaded, route);
        return;
    };
    let r = route.rule_index;
    let id = vs.id();
    let _ = writeln!(o, "policies of {id} spec.http[{r}]:");
    let doc = parse_doc(&vs.source.text);
    let rule = doc.as_ref().and_then(|d| {
        at(
            d,
            &[
                PathStep::Key("spec"),
                PathStep::Key("http"),
                PathStep::Index(r),
            ],
        )
    });
    if let Some(d) = vs.spec.http.get(r).and_then(|h| h.delegate.as_ref()) {
        let _ = writeln!(
            o,
            "  (delegates to VirtualService {}/{}: a delegate rule's own fields replace these)",
            d.namespace.as_deref().unwrap_or(&vs.namespace),
            d.name
        );
    }
    let field = |key: &'static str| rule.and_then(|r| at(r, &[PathStep::Key(key)]));
    let gap = |key: &str| not_enforced(loaded, &id, &format!("spec.http[{r}].{key}"));
    let show = |o: &mut String, key: &'static str, unset: Option<&str>| match field(key) {
        Some(v) => {
            let _ = writeln!(o, "  {key:<16} {}", marked(v, gap(key)));
        }
        None => {
            if let Some(unset) = unset {
                let _ = writeln!(o, "  {key:<16} {unset}");
            }
        }
    };
    show(o, "timeout", Some("- (none: no route timeout)"));
    match field("retries") {
        Some(v) if gap("retries") => {
            let _ = writeln!(
                o,
                "  {:<16} {}: Istio's default retry policy applies instead",
                "retries",
                marked(v, true)
            );
        }
        _ => show(
            o,
            "retries",
            Some("- (Istio's default retry policy applies)"),
        ),
    }
    show(o, "fault", Some("-"));
    show(o, "mirror", Some("-"));
    for key in ["mirrors", "mirrorPercentage", "mirrorPercent", "corsPolicy"] {
        show(o, key, None);
    }
    destination_policies(o, loaded, route);
}

/// Each destination's DestinationRule `connectionPool` and `outlierDetection`: a subset's
/// block replaces the top-level one as a whole, and only the first DestinationRule's
/// top-level `trafficPolicy` counts (Istio's merge rules).
fn destination_policies(o: &mut String, loaded: &Loaded, route: &Route) {
    let Action::Forward(pick) = &route.action else {
        return;
    };
    let res = &loaded.resources;
    let mut lines = Vec::new();
    for (_, target) in pick.iter() {
        let Some(cluster) = loaded.table.clusters.get(target.cluster) else {
            continue;
        };
        let drs = destination_rules_for(
            res,
            &cluster.service_host,
            Some(&cluster.service_namespace),
            &loaded.identity,
        );
        let label = destination_label(cluster);
        for block in ["connectionPool", "outlierDetection"] {
            let mut found: Option<(String, String)> = None;
            // The first DestinationRule defining the subset decides (first definition wins).
            let subset_dr = drs.iter().find_map(|dr| {
                dr.spec
                    .subsets
                    .iter()
                    .position(|s| !cluster.subset.is_empty() && s.name == cluster.subset)
                    .map(|j| (dr, j))
            });
            if let Some((dr, j)) = subset_dr {
                let doc = parse_doc(&dr.source.text);
                let path = [
                    PathStep::Key("spec"),
                    PathStep::Key("subsets"),
                    PathStep::Index(j),
                    PathStep::Key("trafficPolicy"),
                    PathStep::Key(block),
                ];
                if let Some(v) = doc.as_ref().and_then(|d| at(d, &path)) {
                    let gap = not_enforced(
                        loaded,
                        &dr.id(),
                        &format!("spec.subsets[{j}].trafficPolicy.{block}"),
                    );
                    found = Some((
                        marked(v, gap),
                        format!("{} subset {}", dr.id(), cluster.subset),
                    ));
                }
            }
            if found.is_none()
                && let Some(dr) = drs.iter().find(|dr| dr.spec.traffic_policy.is_some())
            {
                let doc = parse_doc(&dr.source.text);
                let path = [
                    PathStep::Key("spec"),
                    PathStep::Key("trafficPolicy"),
                    PathStep::Key(block),
                ];
                if let Some(v) = doc.as_ref().and_then(|d| at(d, &path)) {
                    let gap =
                        not_enforced(loaded, &dr.id(), &format!("spec.trafficPolicy.{block}"));
                    found = Some((marked(v, gap), dr.id()));
                }
            }
            if let Some((value, from)) = found {
                lines.push(format!("  {block:<16} {label}: {value} ({from})"));
            }
        }
    }
    if lines.is_empty() {
        let _ = writeln!(o, "  {:<16} -", "connectionPool");
        let _ = writeln!(o, "  {:<16} -", "outlierDetection");
    }
    for line in lines {
        let _ = writeln!(o, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_like_curl() {
        let r = RequestSpec::parse("http://Frontend.:8080/a/../b?x=1", "GET", &[]).unwrap();
        assert_eq!(r.host, "frontend");
        assert_eq!(r.port, 8080);
        assert_eq!(r.authority, "Frontend.:8080");
        assert_eq!(r.raw_path, "/a/../b");
        assert_eq!(r.path, "/b");
        assert_eq!(r.query.as_deref(), Some("x=1"));

        let r = RequestSpec::parse(
            "localhost:15001",
            "POST",
            &["Host: frontend".into(), "X-A: 1".into(), "x-a: 2".into()],
        )
        .unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str()),
            ("frontend", 80, "/")
        );
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(r.summary(), "POST http://frontend/");

        assert!(matches!(
            RequestSpec::parse("https://a/", "GET", &[]),
            Err(RequestError::Scheme(_))
        ));
        assert!(matches!(
            RequestSpec::parse("http://a/", "GET", &["nocolon".into()]),
            Err(RequestError::HeaderSyntax(_))
        ));
        assert!(matches!(
            RequestSpec::parse("http://a/", "G ET", &[]),
            Err(RequestError::Method(_))
        ));
    }

    #[test]
    fn flow_style_is_one_line() {
        let v: yaml_serde::Value = yaml_serde::from_str(
            "attempts: 3\nperTryTimeout: 2s\nretryOn: 'gateway-error,connect-failure'\n",
        )
        .unwrap();
        assert_eq!(
            flow(&v),
            "{attempts: 3, perTryTimeout: 2s, retryOn: \"gateway-error,connect-failure\"}"
        );
    }
}
