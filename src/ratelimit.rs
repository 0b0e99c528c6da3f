//! Envoy's local rate limit (`envoy.filters.http.local_ratelimit`) as Istio users configure
//! it: through `EnvoyFilter` patches. Two shapes from Istio's task (a listener-wide bucket; a
//! route-level `typed_per_filter_config`) and the descriptor form keyed on the routed cluster
//! (`destination_cluster`), which limits only the canary of a shared weighted route. Every other
//! EnvoyFilter patch is reported, never dropped silently.
//!
//! Buckets are plain atomics shared by all workers (Envoy's default); one whose definition is
//! unchanged keeps its tokens across a reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::config::{ArgoDoc, Diagnostic, ProxyIdentity, Resources, Severity, codes};
use crate::metrics::Counter;

/// A token bucket: starts full, `per_fill` tokens every `interval`, capped at `max`.
#[derive(Debug)]
pub struct Bucket {
    max: u64,
    per_fill: u64,
    interval_ms: u64,
    tokens: AtomicU64,
    /// Milliseconds since `EPOCH` of the last refill boundary.
    filled_at: AtomicU64,
}

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl Bucket {
    pub fn new(def: &BucketDef) -> Bucket {
        Bucket {
            max: def.max_tokens,
            per_fill: def.tokens_per_fill,
            interval_ms: def.fill_interval.as_millis().max(1) as u64,
            tokens: AtomicU64::new(def.max_tokens),
            filled_at: AtomicU64::new(now_ms()),
        }
    }

    /// Takes one token if there is one (refilling first for the intervals that passed).
    pub fn take(&self) -> bool {
        let now = now_ms();
        let last = self.filled_at.load(Ordering::Acquire);
        let intervals = now.saturating_sub(last) / self.interval_ms;
        if intervals > 0
            && self
                .filled_at
                .compare_exchange(
                    last,
                    last + intervals * self.interval_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            let add = intervals.saturating_mul(self.per_fill);
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(add).min(self.max))
                });
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .is_ok()
    }

    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

/// `envoy_<stat_prefix>_http_local_rate_limit_*`.
#[derive(Debug, Default)]
pub struct LimitStats {
    pub enabled: Counter,
    pub ok: Counter,
    pub rate_limited: Counter,
    pub enforced: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketDef {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: Duration,
}

/// How a descriptor entry is built from the request (a route's `rate_limits` actions).
#[derive(Debug, Clone, PartialEq)]
pub enum RlAction {
    /// `("destination_cluster", <the cluster the weighted pick chose>)`.
    DestinationCluster,
    /// `(descriptor_key, <the header's value>)`; absent header: no descriptor.
    RequestHeader { name: HeaderName, key: String },
    /// `("header_match", descriptor_value)` when the headers match (or do not, if
    /// `expect_match: false`).
    HeaderValueMatch {
        value: String,
        expect: bool,
        headers: Vec<(HeaderName, HeaderTest)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderTest {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Present,
}

/// One `LocalRateLimit` config as read.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitDef {
    pub stat_prefix: String,
    pub bucket: Option<BucketDef>,
    pub descriptors: Vec<(Descriptor, BucketDef)>,
    pub always_consume_default: bool,
    /// Per million.
    pub enabled: u32,
    pub enforced: u32,
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub actions: Vec<RlAction>,
}

/// Where a route-level config applies: Envoy vhost `host:port`, route name.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub host: String,
    pub port: Option<u16>,
    /// `None`: every route of the vhost (`route: {action: ANY}` or no route match).
    pub route: Option<String>,
}

/// What the EnvoyFilters in a config ask of this proxy.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// A listener-wide bucket (Shape 1).
    pub listener: Option<LimitDef>,
    pub routes: Vec<(RouteTarget, LimitDef)>,
}

/// A descriptor's entries, as `(key, value)` pairs in action order.
pub type Descriptor = Vec<(String, String)>;

/// A compiled limit on one route: checked by the request path's rate-limit stage.
#[derive(Debug)]
pub struct RouteLimit {
    pub def: LimitDef,
    pub stats: Arc<LimitStats>,
    pub default_bucket: Option<Arc<Bucket>>,
    pub descriptor_buckets: Vec<(Descriptor, Arc<Bucket>)>,
    /// The request's port must be this one (the EnvoyFilter's vhost port).
    pub port: Option<u16>,
}

/// The outcome for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Out of tokens and enforced: answer locally.
    Limited,
}

impl RouteLimit {
    /// Envoy's `LocalRateLimit::decodeHeaders`: enabled? descriptors and default bucket;
    /// enforced? `draw` is a uniform draw per million for the fractional percents.
    pub fn check(
        &self,
        headers: &HeaderMap,
        cluster: Option<&str>,
        port: u16,
        draw_enabled: u32,
        draw_enforced: u32,
    ) -> Verdict {
        if self.port.is_some_and(|p| p != port) || draw_enabled >= self.def.enabled {
            return Verdict::Pass;
        }
        self.stats.enabled.inc();
        let mut allowed = true;
        let mut matched = false;
        if let Some((_, bucket)) = self
            .descriptor_buckets
            .iter()
            .find(|(want, _)| self.describes(want, headers, cluster))
        {
            matched = true;
            allowed &= bucket.take();
        }
        if (!matched || self.def.always_consume_default)
            && let Some(b) = &self.default_bucket
        {
            allowed &= b.take();
        }
        if allowed {
            self.stats.ok.inc();
            return Verdict::Pass;
        }
        self.stats.rate_limited.inc();
        if draw_enforced < self.def.enforced {
            self.stats.enforced.inc();
            Verdict::Limited
        } else {
            Verdict::Pass
        }
    }

    /// Whether the descriptor the route's actions build for this request is exactly `want`
    /// (an action that cannot produce its entry produces no descriptor at all, as in Envoy).
    /// Compared entry by entry, so nothing is built or allocated per request.
    fn describes(&self, want: &Descriptor, headers: &HeaderMap, cluster: Option<&str>) -> bool {
        want.len() == self.def.actions.len()
            && self
                .def
                .actions
                .iter()
                .zip(want)
                .all(|(a, (k, v))| match a {
                    RlAction::DestinationCluster => {
                        k == "destination_cluster" && cluster == Some(v.as_str())
                    }
                    RlAction::RequestHeader { name, key } => {
                        k == key
                            && headers
                                .get(name)
                                .is_some_and(|h| h.as_bytes() == v.as_bytes())
                    }
                    RlAction::HeaderValueMatch {
                        value,
                        expect,
                        headers: tests,
                    } => {
                        let all = tests.iter().all(|(n, t)| {
                            let h = headers.get(n).and_then(|v| v.to_str().ok());
                            match (t, h) {
                                (HeaderTest::Present, h) => h.is_some(),
                                (_, None) => false,
                                (HeaderTest::Exact(x), Some(h)) => h == x,
                                (HeaderTest::Prefix(x), Some(h)) => h.starts_with(x.as_str()),
                                (HeaderTest::Suffix(x), Some(h)) => h.ends_with(x.as_str()),
                                (HeaderTest::Contains(x), Some(h)) => h.contains(x.as_str()),
                            }
                        });
                        all == *expect && k == "header_match" && v == value
                    }
                })
    }
}

// ---------------------------------------------------------------------------------------------
// Reading EnvoyFilters
// ---------------------------------------------------------------------------------------------

const FILTER_NAMES: [&str; 2] = [
    "envoy.filters.http.local_ratelimit",
    "envoy.local_ratelimit",
];
const TYPE_URL: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

fn diag(
    doc: &ArgoDoc,
    severity: Severity,
    code: &'static str,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        file: doc.source.file.to_path_buf(),
        line: doc.source.line_of(field),
        resource: format!("EnvoyFilter/{}/{}", doc.namespace, doc.name),
        field_path: field.to_string(),
        message,
    }
}

fn json(v: &yaml_serde::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Istio's Go durations (`1s`) and protobuf JSON (`1.5s`).
fn duration(v: &Value) -> Option<Duration> {
    crate::config::duration::parse_go_duration(v.as_str()?).ok()
}

/// `{numerator, denominator: HUNDRED|TEN_THOUSAND|MILLION}` → per million.
fn percent(v: Option<&Value>) -> Result<u32, String> {
    let Some(v) = v else {
        return Ok(0);
    };
    let d = v.get("default_value").unwrap_or(v);
    let n = d.get("numerator").and_then(Value::as_u64).unwrap_or(0);
    let scale = match d
        .get("denominator")
        .and_then(Value::as_str)
        .unwrap_or("HUNDRED")
    {
        "HUNDRED" => 10_000,
        "TEN_THOUSAND" => 100,
        "MILLION" => 1,
        other => {
            return Err(format!(
                "denominator {other:?}: HUNDRED, TEN_THOUSAND or MILLION"
            ));
        }
    };
    Ok((n.saturating_mul(scale)).min(1_000_000) as u32)
}

fn bucket(v: &Value, field: &str) -> Result<BucketDef, (String, String)> {
    let max = v.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    if max == 0 {
        return Err((format!("{field}.max_tokens"), "must be at least 1".into()));
    }
    let per_fill = v
        .get("tokens_per_fill")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let interval = v.get("fill_interval").and_then(duration).ok_or_else(|| {
        (
            format!("{field}.fill_interval"),
            "required (a duration such as 1s)".to_string(),
        )
    })?;
    if interval < Duration::from_millis(50) {
        return Err((
            format!("{field}.fill_interval"),
            format!("{interval:?} is under Envoy's minimum of 50ms"),
        ));
    }
    Ok(BucketDef {
        max_tokens: max,
        tokens_per_fill: per_fill,
        fill_interval: interval,
    })
}

/// The `LocalRateLimit` message inside `typed_config`: direct (`@type`) or a TypedStruct.
fn unwrap_config(v: &Value) -> Option<&Value> {
    let ty = v.get("@type").and_then(Value::as_str).unwrap_or("");
    if ty.ends_with("udpa.type.v1.TypedStruct") || ty.ends_with("xds.type.v3.TypedStruct") {
        let url = v.get("type_url").and_then(Value::as_str).unwrap_or("");
        return url.ends_with(TYPE_URL).then(|| v.get("value")).flatten();
    }
    ty.ends_with(TYPE_URL).then_some(v)
}

fn limit_def(
    cfg: &Value,
    field: &str,
    actions: Vec<RlAction>,
) -> Result<LimitDef, (String, String)> {
    let stat_prefix = cfg
        .get("stat_prefix")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if stat_prefix.is_empty() {
        return Err((format!("{field}.stat_prefix"), "required".into()));
    }
    let b = cfg
        .get("token_bucket")
        .map(|b| bucket(b, &format!("{field}.token_bucket")))
        .transpose()?;
    let mut descriptors = Vec::new();
    for (i, d) in cfg
        .get("descriptors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("{field}.descriptors[{i}]");
        let entries = d
            .get("entries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e.get("key")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    e.get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect::<Vec<_>>();
        let tb = d
            .get("token_bucket")
            .ok_or_else(|| (format!("{f}.token_bucket"), "required".to_string()))?;
        descriptors.push((entries, bucket(tb, &format!("{f}.token_bucket"))?));
    }
    let pct = |k: &str| percent(cfg.get(k)).map_err(|e| (format!("{field}.{k}"), e));
    let status = cfg
        .get("status")
        .and_then(|s| s.get("code"))
        .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(status_name)))
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let mut headers = Vec::new();
    for h in cfg
        .get("response_headers_to_add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let hv = h.get("header").unwrap_or(h);
        let (Some(k), Some(v)) = (
            hv.get("key").and_then(Value::as_str),
            hv.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.push((k, v));
        }
    }
    Ok(LimitDef {
        stat_prefix,
        bucket: b,
        descriptors,
        always_consume_default: cfg
            .get("always_consume_default_token_bucket")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        enabled: pct("filter_enabled")?,
        enforced: pct("filter_enforced")?,
        status,
        headers,
        actions,
    })
}

fn status_name(s: &str) -> Option<u64> {
    match s {
        "TooManyRequests" => Some(429),
        "ServiceUnavailable" => Some(503),
        "Forbidden" => Some(403),
        _ => s.parse().ok(),
    }
}

fn actions(route: Option<&Value>, field: &str) -> Result<Vec<RlAction>, (String, String)> {
    let mut out = Vec::new();
    let Some(limits) = route
        .and_then(|r| r.get("rate_limits"))
        .and_then(Value::as_array)
    else {
        return Ok(out);
    };
    for (i, l) in limits.iter().enumerate() {
        for (j, a) in l
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = format!("{field}.route.rate_limits[{i}].actions[{j}]");
            let action = if a.get("destination_cluster").is_some() {
                RlAction::DestinationCluster
            } else if let Some(h) = a.get("request_headers") {
                let name = h.get("header_name").and_then(Value::as_str).unwrap_or("");
                RlAction::RequestHeader {
                    name: HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(
                        |_| {
                            (
                                f.clone(),
                                format!("header_name {name:?} is not a header name"),
                            )
                        },
                    )?,
                    key: h
                        .get("descriptor_key")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }
            } else if let Some(h) = a.get("header_value_match") {
                let mut tests = Vec::new();
                for m in h
                    .get("headers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| {
                            (f.clone(), format!("header {name:?} is not a header name"))
                        })?;
                    let sm = m.get("string_match");
                    let s = |k: &str| {
                        m.get(k)
                            .or_else(|| sm.and_then(|x| x.get(k.trim_end_matches("_match"))))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    let test = if let Some(x) = s("exact_match") {
                        HeaderTest::Exact(x)
                    } else if let Some(x) = s("prefix_match") {
                        HeaderTest::Prefix(x)
                    } else if let Some(x) = s("suffix_match") {
                        HeaderTest::Suffix(x)
                    } else if let Some(x) =
                        sm.and_then(|x| x.get("contains")).and_then(Value::as_str)
                    {
                        HeaderTest::Contains(x.to_string())
                    } else if m.get("present_match").is_some() {
                        HeaderTest::Present
                    } else {
                        return Err((
                            f,
                            "header matcher: exact, prefix, suffix, contains or present".into(),
                        ));
                    };
                    tests.push((name, test));
                }
                RlAction::HeaderValueMatch {
                    value: h
                        .get("descriptor_value")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    expect: h
                        .get("expect_match")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    headers: tests,
                }
            } else {
                return Err((
                    f,
                    "unsupported action: destination_cluster, request_headers or header_value_match".into(),
                ));
            };
            out.push(action);
        }
    }
    Ok(out)
}

/// Reads the config's EnvoyFilters as they apply to this proxy: the limits, and what it
/// reports (errors refuse the config; anything it cannot act on is `SY0002` or `SY0004`).
pub fn read(res: &Resources, me: &ProxyIdentity) -> (Limits, Vec<Diagnostic>) {
    let mut limits = Limits::default();
    let mut diags = Vec::new();
    for doc in &res.envoy_filters {
        let spec = json(doc.value.get("spec").unwrap_or(&yaml_serde::Value::Null));
        if doc.namespace != me.namespace && doc.namespace != "istio-system" {
            diags.push(diag(doc, Severity::Info, codes::NOT_APPLICABLE, "metadata.namespace", format!(
                "not applied: an EnvoyFilter applies to its own namespace ({}) or, from istio-system, to all; this proxy is in {}",
                doc.namespace, me.namespace
            )));
            continue;
        }
        if let Some(sel) = spec
            .get("workloadSelector")
            .and_then(|w| w.get("labels"))
            .and_then(Value::as_object)
            && !sel
                .iter()
                .all(|(k, v)| me.labels.get(k).map(String::as_str) == v.as_str())
        {
            diags.push(diag(
                doc,
                Severity::Info,
                codes::NOT_APPLICABLE,
                "spec.workloadSelector",
                "not applied: its workloadSelector does not select this proxy's --labels".into(),
            ));
            continue;
        }
        for (i, p) in spec
            .get("configPatches")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("spec.configPatches[{i}]");
            let apply_to = p.get("applyTo").and_then(Value::as_str).unwrap_or("");
            let m = p.get("match");
            let context = m
                .and_then(|m| m.get("context"))
                .and_then(Value::as_str)
                .unwrap_or("ANY");
            let op = p
                .get("patch")
                .and_then(|x| x.get("operation"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let value = p.get("patch").and_then(|x| x.get("value"));
            let unsupported = |why: &str| {
                diag(
                    doc,
                    Severity::Warning,
                    codes::NOT_IMPLEMENTED,
                    &field,
                    format!(
                        "not supported: {apply_to} {op} patch{why}; ignored (switchyard acts only on the local rate limit patches)"
                    ),
                )
            };
            if !matches!(context, "SIDECAR_OUTBOUND" | "ANY") {
                diags.push(diag(
                    doc,
                    Severity::Info,
                    codes::NOT_APPLICABLE,
                    &format!("{field}.match.context"),
                    format!("not applied: context {context} is not this proxy's outbound listener"),
                ));
                continue;
            }
            match apply_to {
                "HTTP_FILTER" => {
                    let name = value
                        .and_then(|v| v.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !FILTER_NAMES.contains(&name)
                        || !matches!(
                            op,
                            "INSERT_BEFORE" | "INSERT_FIRST" | "INSERT_AFTER" | "ADD"
                        )
                    {
                        diags.push(unsupported(&format!(" ({name})")));
                        continue;
                    }
                    let Some(cfg) = value
                        .and_then(|v| v.get("typed_config"))
                        .and_then(unwrap_config)
                    else {
                        diags.push(diag(
                            doc,
                            Severity::Error,
                            codes::SCHEMA_VALIDATION_ERROR,
                            &format!("{field}.patch.value.typed_config"),
                            format!("not a {TYPE_URL} (directly or in a TypedStruct)"),
                        ));
                        continue;
                    };
                    if cfg.get("token_bucket").is_none() {
                        // Shape 2's enabling insert: buckets come with the routes.
                        continue;
                    }
                    match limit_def(
                        cfg,
                        &format!("{field}.patch.value.typed_config"),
                        Vec::new(),
                    ) {
                        Ok(def) => {
                            warn_inert(doc, &def, &field, &mut diags);
                            limits.listener = Some(def);
                        }
                        Err((f, e)) => diags.push(diag(
                            doc,
                            Severity::Error,
                            codes::SCHEMA_VALIDATION_ERROR,
                            &f,
                            e,
                        )),
                    }
                }
                "HTTP_ROUTE" if op == "MERGE" => {
                    let per = value
                        .and_then(|v| v.get("typed_per_filter_config"))
                        .and_then(|t| FILTER_NAMES.iter().find_map(|n| t.get(*n)));
                    let Some(per) = per else {
                        diags.push(unsupported(" (no local_ratelimit typed_per_filter_config)"));
                        continue;
                    };
                    let f = format!("{field}.patch.value.typed_per_filter_config");
                    let Some(cfg) = unwrap_config(per) else {
                        diags.push(diag(
                            doc,
                            Severity::Error,
                            codes::SCHEMA_VALIDATION_ERROR,
                            &f,
                            format!("not a {TYPE_URL}"),
                        ));
                        continue;
                    };
                    if cfg.get("token_bucket").is_none() {
                        diags.push(diag(doc, Severity::Error, codes::SCHEMA_VALIDATION_ERROR, &format!("{f}.token_bucket"), "a per-route local rate limit needs its own token_bucket (Envoy refuses it otherwise)".into()));
                        continue;
                    }
                    let def = actions(
                        value.and_then(|v| v.get("route")),
                        &format!("{field}.patch.value"),
                    )
                    .and_then(|acts| limit_def(cfg, &f, acts));
                    let def = match def {
                        Ok(d) => d,
                        Err((f, e)) => {
                            diags.push(diag(
                                doc,
                                Severity::Error,
                                codes::SCHEMA_VALIDATION_ERROR,
                                &f,
                                e,
                            ));
                            continue;
                        }
                    };
                    let rc = m.and_then(|m| m.get("routeConfiguration"));
                    let vhost = rc.and_then(|r| r.get("vhost"));
                    let name = vhost
                        .and_then(|v| v.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let (host, port) = match name.rsplit_once(':') {
                        Some((h, p)) => (h.to_string(), p.parse().ok()),
                        None => (name.to_string(), None),
                    };
                    if host.is_empty() || host.starts_with("inbound|") {
                        diags.push(diag(
                            doc,
                            Severity::Info,
                            codes::NOT_APPLICABLE,
                            &format!("{field}.match.routeConfiguration.vhost.name"),
                            format!("not applied: vhost {name:?} is not an outbound HOST:PORT"),
                        ));
                        continue;
                    }
                    let route = vhost
                        .and_then(|v| v.get("route"))
                        .and_then(|r| r.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    warn_inert(doc, &def, &field, &mut diags);
                    limits.routes.push((RouteTarget { host, port, route }, def));
                }
                _ => diags.push(unsupported("")),
            }
        }
    }
    (limits, diags)
}

fn warn_inert(doc: &ArgoDoc, def: &LimitDef, field: &str, diags: &mut Vec<Diagnostic>) {
    if def.enabled == 0 {
        diags.push(diag(doc, Severity::Warning, codes::NOT_IMPLEMENTED, field, "rate limit configured but not enabled: filter_enabled is absent or 0% (Envoy's default), so it limits nothing".into()));
    } else if def.enforced == 0 {
        diags.push(diag(doc, Severity::Warning, codes::NOT_IMPLEMENTED, field, "rate limit enabled but not enforced: filter_enforced is absent or 0%, so limited requests are only counted".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_starts_full_refills_per_interval_and_caps() {
        let b = Bucket::new(&BucketDef {
            max_tokens: 3,
            tokens_per_fill: 2,
            fill_interval: Duration::from_millis(60),
        });
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take(), "burst = max_tokens");
        std::thread::sleep(Duration::from_millis(70));
        assert!(b.take() && b.take());
        assert!(!b.take(), "one interval gives tokens_per_fill");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            (b.take(), b.take(), b.take(), b.take()),
            (true, true, true, false),
            "capped at max"
        );
    }
}
