//! Argo Rollouts' `Rollout` and `AnalysisTemplate` as the controller uses them: the canary
//! strategy's steps, its Istio traffic routing, and analysis metrics compiled (conditions
//! parsed, durations read, args substituted) once, with every error naming file:line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::expr::{self, Expr};
use crate::config::ArgoDoc;
use crate::config::duration::parse_go_duration;

/// A problem in one Argo document: it refuses that rollout, never the proxy's routing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {resource}: {field}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub resource: String,
    pub field: String,
    pub message: String,
}

fn err(doc: &ArgoDoc, field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        file: doc.source.file.display().to_string(),
        line: doc.source.line_of(field),
        resource: format!("{}/{}/{}", doc.kind, doc.namespace, doc.name),
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawRollout {
    strategy: RawStrategy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawStrategy {
    canary: Option<RawCanary>,
    blue_green: Option<yaml_serde::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawCanary {
    steps: Vec<yaml_serde::Value>,
    traffic_routing: Option<RawTrafficRouting>,
    analysis: Option<RawAnalysis>,
    canary_service: Option<String>,
    stable_service: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawTrafficRouting {
    istio: Option<RawIstio>,
    managed_routes: Vec<Named>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Named {
    name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawIstio {
    virtual_service: Option<RawVsRef>,
    virtual_services: Vec<RawVsRef>,
    destination_rule: Option<RawDrRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawVsRef {
    name: String,
    routes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawDrRef {
    name: String,
    canary_subset_name: String,
    stable_subset_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct RawAnalysis {
    pub templates: Vec<TemplateRef>,
    pub args: Vec<ArgValue>,
    pub starting_step: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct TemplateRef {
    pub template_name: String,
    pub cluster_scope: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ArgValue {
    pub name: String,
    pub value: Option<String>,
}

/// How the canary and stable destinations of a route are told apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Sides {
    /// `destinationRule {canarySubsetName, stableSubsetName}`: by subset name.
    Subsets { canary: String, stable: String },
    /// `canaryService` / `stableService`: by host, up to its first dot (Argo's `getHost`).
    Hosts { canary: String, stable: String },
}

impl Sides {
    /// Whether a destination is the canary (`Some(true)`), the stable (`Some(false)`) or
    /// neither.
    pub fn side_of(&self, host: &str, subset: Option<&str>) -> Option<bool> {
        match self {
            Sides::Subsets { canary, stable } => match subset {
                Some(s) if s == canary => Some(true),
                Some(s) if s == stable => Some(false),
                _ => None,
            },
            Sides::Hosts { canary, stable } => {
                let short = host.split('.').next().unwrap_or(host);
                if short == canary {
                    Some(true)
                } else if short == stable {
                    Some(false)
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    SetWeight(u32),
    /// `None`: until promoted.
    Pause(Option<Duration>),
    Analysis(RawAnalysis),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub name: String,
    pub namespace: String,
    /// The managed VirtualService's `metadata.name` (`name.namespace` is split).
    pub virtual_service: String,
    pub vs_namespace: String,
    /// Named HTTP routes to manage; empty: the VS's only route.
    pub routes: Vec<String>,
    pub sides: Sides,
    pub steps: Vec<Step>,
    pub background: Option<RawAnalysis>,
    /// A canonical text of the spec: a change begins a new revision.
    pub spec_hash: String,
    pub file: String,
    pub line: usize,
}

fn step_err(doc: &ArgoDoc, i: usize, message: impl Into<String>) -> SpecError {
    err(doc, &format!("spec.strategy.canary.steps[{i}]"), message)
}

/// Argo's pause duration: an integer is seconds; a string takes `s`, `m` or `h`.
fn pause_duration(v: &yaml_serde::Value) -> Result<Duration, String> {
    if let Some(n) = v.as_u64() {
        return Ok(Duration::from_secs(n));
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("duration {v:?} is neither seconds nor a string"))?;
    if let Ok(n) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    parse_go_duration(s).map_err(|e| e.to_string())
}

fn parse_steps(doc: &ArgoDoc, raw: &[yaml_serde::Value]) -> Result<Vec<Step>, SpecError> {
    let mut steps = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        let Some(m) = v.as_mapping().filter(|m| m.len() == 1) else {
            return Err(step_err(doc, i, "a step is a mapping with exactly one key"));
        };
        let Some((k, body)) = m.iter().next() else {
            return Err(step_err(doc, i, "empty step"));
        };
        let key = k.as_str().unwrap_or("");
        let step = match key {
            "setWeight" => {
                let w = body
                    .as_u64()
                    .filter(|w| *w <= 100)
                    .ok_or_else(|| step_err(doc, i, "setWeight must be an integer 0-100"))?;
                Step::SetWeight(w as u32)
            }
            "pause" => match body.get("duration") {
                None => Step::Pause(None),
                Some(d) => Step::Pause(Some(
                    pause_duration(d).map_err(|e| step_err(doc, i, format!("pause: {e}")))?,
                )),
            },
            "analysis" => {
                let a: RawAnalysis = yaml_serde::from_value(body.clone())
                    .map_err(|e| step_err(doc, i, format!("analysis: {e}")))?;
                if a.templates.is_empty() {
                    return Err(step_err(doc, i, "analysis: no templates"));
                }
                Step::Analysis(a)
            }
            "setHeaderRoute" | "setMirrorRoute" => {
                return Err(step_err(
                    doc,
                    i,
                    format!(
                        "{key} is not supported by switchyard's controller yet; remove the step or drive this rollout with Argo Rollouts"
                    ),
                ));
            }
            "experiment" | "setCanaryScale" | "plugin" => {
                return Err(step_err(
                    doc,
                    i,
                    format!(
                        "{key} steps manage pods or plugins, which a proxy cannot do; refused rather than skipped"
                    ),
                ));
            }
            other => {
                return Err(step_err(doc, i, format!("unknown step {other:?}")));
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// Reads one `Rollout` document.
pub fn rollout(doc: &ArgoDoc) -> Result<Rollout, SpecError> {
    let spec = doc
        .value
        .get("spec")
        .cloned()
        .unwrap_or(yaml_serde::Value::Null);
    let raw: RawRollout =
        yaml_serde::from_value(spec.clone()).map_err(|e| err(doc, "spec", e.to_string()))?;
    if raw.strategy.blue_green.is_some() {
        return Err(err(
            doc,
            "spec.strategy.blueGreen",
            "blueGreen switches Services, not VirtualService weights; only canary is driven",
        ));
    }
    let Some(canary) = raw.strategy.canary else {
        return Err(err(doc, "spec.strategy", "no canary strategy"));
    };
    let field = "spec.strategy.canary.trafficRouting.istio";
    let Some(istio) = canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.istio.clone())
    else {
        return Err(err(
            doc,
            "spec.strategy.canary.trafficRouting",
            "trafficRouting.istio is required: switchyard moves VirtualService weights",
        ));
    };
    let mut vss = istio.virtual_services.clone();
    if let Some(v) = istio.virtual_service.clone() {
        vss.insert(0, v);
    }
    let vs = match vss.as_slice() {
        [one] => one.clone(),
        [] => return Err(err(doc, field, "virtualService is required")),
        _ => {
            return Err(err(
                doc,
                &format!("{field}.virtualServices"),
                "several VirtualServices are not supported yet; name one",
            ));
        }
    };
    let (vs_name, vs_namespace) = match vs.name.split_once('.') {
        Some((n, ns)) => (n.to_string(), ns.to_string()),
        None => (vs.name.clone(), doc.namespace.clone()),
    };
    if vs_name.is_empty() {
        return Err(err(
            doc,
            &format!("{field}.virtualService.name"),
            "empty name",
        ));
    }
    let sides = match (
        &istio.destination_rule,
        &canary.canary_service,
        &canary.stable_service,
    ) {
        (Some(dr), _, _) => {
            if dr.canary_subset_name.is_empty() || dr.stable_subset_name.is_empty() {
                return Err(err(
                    doc,
                    &format!("{field}.destinationRule"),
                    "canarySubsetName and stableSubsetName are required",
                ));
            }
            Sides::Subsets {
                canary: dr.canary_subset_name.clone(),
                stable: dr.stable_subset_name.clone(),
            }
        }
        (None, Some(c), Some(s)) => Sides::Hosts {
            canary: c.clone(),
            stable: s.clone(),
        },
        _ => {
            return Err(err(
                doc,
                "spec.strategy.canary",
                "set trafficRouting.istio.destinationRule (subset-level) or canaryService and stableService (host-level)",
            ));
        }
    };
    if canary
        .traffic_routing
        .as_ref()
        .is_some_and(|t| !t.managed_routes.is_empty())
    {
        // Only header and mirror routes use them, and those steps are refused above.
    }
    let steps = parse_steps(doc, &canary.steps)?;
    Ok(Rollout {
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        virtual_service: vs_name,
        vs_namespace,
        routes: vs.routes,
        sides,
        steps,
        background: canary.analysis.clone(),
        spec_hash: canonical_hash(&without_paused(spec)),
        file: doc.source.file.display().to_string(),
        line: doc.source.line,
    })
}

/// `spec.paused` is how a person pauses a rollout (`kubectl argo rollouts pause`), not a new
/// revision: it must not restart the steps.
fn without_paused(mut spec: yaml_serde::Value) -> yaml_serde::Value {
    if let Some(map) = spec.as_mapping_mut() {
        map.remove("paused");
    }
    spec
}

/// The spec's canonical form (keys sorted, comments and formatting gone), hashed.
fn canonical_hash(spec: &yaml_serde::Value) -> String {
    use sha2::Digest as _;
    let json = serde_json::to_value(spec).unwrap_or_default();
    let text = serde_json::to_string(&json).unwrap_or_default();
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// AnalysisTemplate
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawTemplate {
    args: Vec<ArgValue>,
    metrics: Vec<RawMetric>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawMetric {
    name: String,
    interval: Option<String>,
    count: Option<yaml_serde::Value>,
    initial_delay: Option<String>,
    success_condition: Option<String>,
    failure_condition: Option<String>,
    failure_limit: Option<yaml_serde::Value>,
    inconclusive_limit: Option<yaml_serde::Value>,
    consecutive_error_limit: Option<yaml_serde::Value>,
    consecutive_success_limit: Option<yaml_serde::Value>,
    provider: BTreeMap<String, yaml_serde::Value>,
}

/// Where a metric's `result` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// Built in (`provider: {plugin: {switchyard/subsets: {...}}}`): this proxy's own counters
    /// for the managed route's canary and stable subsets over `window`.
    Subsets { window: Duration, min_requests: u64 },
    /// Argo's `web`: GET/POST a URL, non-2xx is an Error, `jsonPath` picks the result.
    Web {
        url: String,
        method: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        json_path: String,
        timeout: Duration,
    },
    /// Argo's `prometheus`: an instant query against the HTTP API.
    Prometheus {
        address: String,
        query: String,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub interval: Option<Duration>,
    /// `None`: until the analysis is stopped (background with an interval).
    pub count: Option<u32>,
    pub initial_delay: Duration,
    pub success: Option<(String, Expr)>,
    pub failure: Option<(String, Expr)>,
    /// `-1` disables, as in Argo.
    pub failure_limit: i64,
    pub inconclusive_limit: i64,
    pub consecutive_error_limit: i64,
    pub consecutive_success_limit: i64,
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub metrics: Vec<Metric>,
}

fn int_or_string(v: &Option<yaml_serde::Value>, default: i64) -> Result<i64, String> {
    match v {
        None => Ok(default),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("{v:?} is not an integer")),
    }
}

/// `{{args.NAME}}` replaced by the value the rollout passes, else the template's default.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(format!("unterminated {{{{ in {text:?}"));
        };
        let key = after[..j].trim();
        let name = key
            .strip_prefix("args.")
            .ok_or_else(|| format!("only {{{{args.NAME}}}} can be substituted, not {key:?}"))?;
        let v = args
            .get(name)
            .ok_or_else(|| format!("argument {name:?} has no value"))?;
        out.push_str(v);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads one `AnalysisTemplate` with the arguments a rollout passes to it.
pub fn template(doc: &ArgoDoc, passed: &[ArgValue]) -> Result<Template, SpecError> {
    let spec = doc
        .value
        .get("spec")
        .cloned()
        .unwrap_or(yaml_serde::Value::Null);
    let raw: RawTemplate =
        yaml_serde::from_value(spec).map_err(|e| err(doc, "spec", e.to_string()))?;
    let mut args = BTreeMap::new();
    for a in &raw.args {
        if let Some(v) = &a.value {
            args.insert(a.name.clone(), v.clone());
        }
    }
    for a in passed {
        if let Some(v) = &a.value {
            args.insert(a.name.clone(), v.clone());
        }
    }
    if raw.metrics.is_empty() {
        return Err(err(doc, "spec.metrics", "no metrics"));
    }
    let mut metrics = Vec::new();
    for (i, m) in raw.metrics.iter().enumerate() {
        let f = |k: &str| format!("spec.metrics[{i}].{k}");
        let dur = |k: &str, v: &Option<String>| -> Result<Option<Duration>, SpecError> {
            v.as_deref()
                .map(|s| parse_go_duration(s).map_err(|e| err(doc, &f(k), e.to_string())))
                .transpose()
        };
        let interval = dur("interval", &m.interval)?;
        let count = match &m.count {
            None if interval.is_none() => Some(1),
            None => None,
            Some(_) => {
                let n = int_or_string(&m.count, 1).map_err(|e| err(doc, &f("count"), e))?;
                if n > 1 && interval.is_none() {
                    return Err(err(doc, &f("count"), "count > 1 requires interval"));
                }
                (n > 0).then_some(n as u32)
            }
        };
        let cond = |k: &str, v: &Option<String>| -> Result<Option<(String, Expr)>, SpecError> {
            v.as_deref()
                .map(|s| {
                    let s = substitute(s, &args).map_err(|e| err(doc, &f(k), e))?;
                    let e = expr::parse(&s).map_err(|e| err(doc, &f(k), format!("{s:?}: {e}")))?;
                    Ok((s, e))
                })
                .transpose()
        };
        let limit = |k: &str, v: &Option<yaml_serde::Value>, d: i64| {
            int_or_string(v, d).map_err(|e| err(doc, &f(k), e))
        };
        let provider = provider(doc, i, &m.provider, &args)?;
        metrics.push(Metric {
            name: m.name.clone(),
            interval,
            count,
            initial_delay: dur("initialDelay", &m.initial_delay)?.unwrap_or_default(),
            success: cond("successCondition", &m.success_condition)?,
            failure: cond("failureCondition", &m.failure_condition)?,
            failure_limit: limit("failureLimit", &m.failure_limit, 0)?,
            inconclusive_limit: limit("inconclusiveLimit", &m.inconclusive_limit, 0)?,
            consecutive_error_limit: limit("consecutiveErrorLimit", &m.consecutive_error_limit, 4)?,
            consecutive_success_limit: limit(
                "consecutiveSuccessLimit",
                &m.consecutive_success_limit,
                0,
            )?,
            provider,
        });
    }
    Ok(Template {
        name: doc.name.clone(),
        metrics,
    })
}

/// The built-in provider's name in Argo's `plugin` block.
pub const SUBSETS_PLUGIN: &str = "switchyard/subsets";

fn provider(
    doc: &ArgoDoc,
    i: usize,
    raw: &BTreeMap<String, yaml_serde::Value>,
    args: &BTreeMap<String, String>,
) -> Result<Provider, SpecError> {
    let field = format!("spec.metrics[{i}].provider");
    let e = |m: String| err(doc, &field, m);
    let (kind, body) = match raw.iter().collect::<Vec<_>>().as_slice() {
        [(k, v)] => (k.as_str(), *v),
        [] => return Err(e("a metric needs one provider".into())),
        _ => return Err(e("a metric takes exactly one provider".into())),
    };
    let text = |k: &str| -> Result<Option<String>, SpecError> {
        body.get(k)
            .map(|v| match v {
                yaml_serde::Value::String(s) => substitute(s, args).map_err(e),
                other => Ok(format!(
                    "{}",
                    serde_json::to_value(other).unwrap_or_default()
                )),
            })
            .transpose()
    };
    let seconds = |k: &str, d: u64| -> Duration {
        Duration::from_secs(body.get(k).and_then(|v| v.as_u64()).unwrap_or(d))
    };
    match kind {
        "plugin" => {
            let inner = body.get(SUBSETS_PLUGIN).ok_or_else(|| {
                e(format!(
                    "the only plugin provider is {SUBSETS_PLUGIN:?} (built in)"
                ))
            })?;
            let window = match inner.get("window").and_then(|v| v.as_str()) {
                Some(w) => parse_go_duration(w).map_err(|x| e(format!("window: {x}")))?,
                None => Duration::from_secs(10),
            };
            let min_requests = inner
                .get("minRequests")
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| e("minRequests must be a non-negative integer".into()))
                })
                .transpose()?
                .unwrap_or(1);
            Ok(Provider::Subsets {
                window,
                min_requests,
            })
        }
        "web" => {
            let url = text("url")?.ok_or_else(|| e("web.url is required".into()))?;
            let method = text("method")?
                .unwrap_or_else(|| "GET".into())
                .to_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT") {
                return Err(e(format!("web.method {method:?}: GET, POST or PUT")));
            }
            let headers = body
                .get("headers")
                .and_then(|h| h.as_sequence())
                .map(|seq| {
                    seq.iter()
                        .filter_map(|h| {
                            Some((
                                h.get("key")?.as_str()?.to_string(),
                                h.get("value")?.as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body_text = match body.get("jsonBody") {
                Some(j) => Some(
                    serde_json::to_string(&serde_json::to_value(j).unwrap_or_default())
                        .unwrap_or_default(),
                ),
                None => text("body")?,
            };
            Ok(Provider::Web {
                url,
                method,
                headers,
                body: body_text,
                json_path: text("jsonPath")?.unwrap_or_else(|| "{$}".into()),
                timeout: seconds("timeoutSeconds", 10),
            })
        }
        "prometheus" => Ok(Provider::Prometheus {
            address: text("address")?.ok_or_else(|| e("prometheus.address is required".into()))?,
            query: text("query")?.ok_or_else(|| e("prometheus.query is required".into()))?,
            timeout: seconds("timeout", 30),
        }),
        other => Err(e(format!(
            "provider {other:?} is not available: use prometheus, web, or plugin {SUBSETS_PLUGIN}"
        ))),
    }
}
