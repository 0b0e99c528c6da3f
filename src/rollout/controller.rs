//! The rollout controller: what Argo Rollouts' controller does in a cluster. Every tick it
//! reads its documents, takes people's requests, runs the current step and any analysis, and
//! writes the managed VirtualService's weights when they must change. Where documents come
//! from and results go is a [`Backend`]: a config folder, or the Kubernetes API. In a proxy
//! (`run --rollouts`) it reads that proxy's own per-subset counters for the built-in provider
//! and, over a folder, reloads the proxy at once.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::analysis::{self, Measurement, MetricRun, Outcome, Phase};
use super::backend::{Backend, Folder};
use super::spec::{self, Metric, Provider, Rollout, Sides, Step, Template};
use super::state::{Action, RunState, State};
use super::vsedit::WeightEdit;
use crate::config::{ArgoDoc, Resources, VirtualService};
use crate::metrics::Registry;
use crate::metrics::window::Totals;

/// How often the controller looks at the folder and its clocks.
pub const TICK: Duration = Duration::from_millis(100);

pub struct Controller<B: Backend = Folder> {
    pub backend: B,
    /// This proxy's counters, for the built-in provider.
    pub metrics: Option<Arc<Registry>>,
    /// This proxy's reloader: a weight change is served before the step goes on.
    pub reloader: Option<Arc<crate::Reloader>>,
    samples: HashMap<String, VecDeque<Sample>>,
    /// Last error logged per rollout, so a bad spec is logged once, not every tick.
    reported: HashMap<String, String>,
}

struct Sample {
    at: Instant,
    canary: Totals,
    stable: Totals,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Controller<Folder> {
    /// A controller over a config folder.
    pub fn new(
        dir: PathBuf,
        namespace: String,
        metrics: Option<Arc<Registry>>,
        reloader: Option<Arc<crate::Reloader>>,
    ) -> Controller<Folder> {
        Controller::with_backend(Folder { dir, namespace }, metrics, reloader)
    }
}

impl<B: Backend> Controller<B> {
    pub fn with_backend(
        backend: B,
        metrics: Option<Arc<Registry>>,
        reloader: Option<Arc<crate::Reloader>>,
    ) -> Controller<B> {
        Controller {
            backend,
            metrics,
            reloader,
            samples: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// Runs until the task is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    /// One pass over every Rollout.
    pub async fn tick(&mut self) {
        let res = self.backend.load();
        let docs: Vec<_> = res
            .argo
            .iter()
            .filter(|d| d.kind == "Rollout")
            .cloned()
            .collect();
        for doc in docs {
            let key = format!("{}/{}", doc.namespace, doc.name);
            match spec::rollout(&doc) {
                Ok(r) => {
                    if let Err(e) = self.step_rollout(&res, &doc, &r).await {
                        self.report(&key, &e);
                        let mut st = self
                            .backend
                            .state(&r.namespace, &r.name)
                            .unwrap_or_else(|| fresh(&r));
                        if st.message != e {
                            st.message = e;
                            st.updated_ms = now_ms();
                            let _ = self.backend.write_state(&st).await;
                        }
                    } else {
                        self.reported.remove(&key);
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    self.report(&key, &text);
                    let mut st = self
                        .backend
                        .state(&doc.namespace, &doc.name)
                        .unwrap_or(State {
                            name: doc.name.clone(),
                            namespace: doc.namespace.clone(),
                            ..State::default()
                        });
                    let msg = format!("InvalidSpec: {text}");
                    if st.message != msg {
                        st.phase = "Degraded".into();
                        st.message = msg;
                        st.updated_ms = now_ms();
                        let _ = self.backend.write_state(&st).await;
                    }
                }
            }
        }
        self.backend.flush().await;
    }

    fn report(&mut self, key: &str, e: &str) {
        if self.reported.get(key).map(String::as_str) != Some(e) {
            tracing::error!(rollout = key, "{e}");
            self.reported.insert(key.to_string(), e.to_string());
        }
    }

    async fn step_rollout(
        &mut self,
        res: &Resources,
        doc: &ArgoDoc,
        r: &Rollout,
    ) -> Result<(), String> {
        let vs = res
            .virtual_services
            .iter()
            .find(|v| v.meta.name == r.virtual_service && v.namespace == r.vs_namespace)
            .ok_or_else(|| {
                format!(
                    "VirtualService {}/{} (trafficRouting.istio.virtualService) is not in {}",
                    r.vs_namespace,
                    r.virtual_service,
                    self.backend.place()
                )
            })?;
        let routes = managed_routes(vs, r)?;
        let templates = templates(res, r)?;
        let before = self.backend.state(&r.namespace, &r.name);
        let mut st = before.clone().unwrap_or_else(|| fresh(r));
        if st.spec_hash != r.spec_hash {
            if before.is_some() {
                tracing::info!(rollout = %r.name, revision = st.revision + 1, "new revision: starting at step 0");
            }
            st = State {
                revision: st.revision + 1,
                ..fresh(r)
            };
        }
        st.steps = r.steps.len();
        if let Some(a) = self.backend.take_request(doc, &st) {
            apply_action(&mut st, r, a);
            tracing::info!(rollout = %r.name, action = ?a, "requested from the CLI");
        }
        self.sample(r, vs);
        st.actual_weight = self
            .subsets_result(r, Duration::from_secs(10))
            .and_then(|(v, c)| {
                let s = v["stable"]["requests"].as_u64().unwrap_or(0);
                (c + s > 0).then(|| ((c as f64 * 1000.0 / (c + s) as f64).round()) / 10.0)
            });
        self.advance(r, &templates, &mut st).await;
        // The weights the state asks for, on disk and served.
        let canary = if st.aborted { 0 } else { st.set_weight };
        let changed = self.write_weights(vs, &routes, r, canary).await?;
        if changed
            && self.backend.reload_after_write()
            && let Some(reloader) = &self.reloader
        {
            match reloader.reload().await {
                Ok(_) => st.served_version = Some(reloader.version()),
                Err(diags) => {
                    return Err(format!(
                        "the weights were written but the proxy refused the config: {}",
                        diags
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
            }
        }
        if let Some(reg) = &self.metrics {
            reg.rollout_status(&r.name, &st.phase, st.step, canary);
        }
        if before.as_ref() != Some(&st) {
            st.updated_ms = now_ms();
            self.backend.write_state(&st).await?;
        }
        Ok(())
    }

    /// Runs steps and analyses as far as they can go this tick.
    async fn advance(&mut self, r: &Rollout, templates: &TemplateSet, st: &mut State) {
        if st.aborted {
            st.phase = "Degraded".into();
            if !st.message.starts_with("RolloutAborted") {
                st.message = format!(
                    "RolloutAborted: Rollout aborted update to revision {}",
                    st.revision
                );
            }
            return;
        }
        // Background analysis, from its starting step until the steps end.
        if let Some(bg) = &r.background
            && st.step < r.steps.len()
            && st.step >= bg.starting_step.unwrap_or(0)
        {
            let run = st.background.get_or_insert_with(|| new_run(&bg.templates));
            let phase = self.measure(r, &templates.background, run).await;
            let message = run.message.clone();
            if gate(st, "Background", phase, &message) {
                return;
            }
        }
        // At most one pass over the steps per tick; a setWeight step is done once written.
        let mut guard = 0;
        while st.step < r.steps.len() && guard <= r.steps.len() {
            guard += 1;
            if st.paused {
                st.phase = "Paused".into();
                st.message = "manually paused".into();
                return;
            }
            match &r.steps[st.step] {
                Step::SetWeight(w) => {
                    st.set_weight = *w;
                    st.step += 1;
                    st.phase = "Progressing".into();
                    st.message = String::new();
                    // The write happens after this pass; the next step starts on the next tick,
                    // once the weight is served.
                    return;
                }
                Step::Pause(d) => {
                    let started = *st.pause_started_ms.get_or_insert_with(now_ms);
                    match d {
                        Some(d) if now_ms().saturating_sub(started) >= d.as_millis() as u64 => {
                            st.pause_started_ms = None;
                            st.step += 1;
                        }
                        _ => {
                            st.phase = "Paused".into();
                            st.message = "CanaryPauseStep".into();
                            return;
                        }
                    }
                }
                Step::Analysis(a) => {
                    let run = st
                        .step_analysis
                        .get_or_insert_with(|| new_run(&a.templates));
                    let set = templates.steps.get(&st.step).cloned().unwrap_or_default();
                    let phase = self.measure(r, &set, run).await;
                    let message = run.message.clone();
                    if gate(st, "Step-based", phase, &message) {
                        return;
                    }
                    match phase {
                        Phase::Successful => {
                            st.step_analysis = None;
                            st.step += 1;
                        }
                        _ => {
                            st.phase = "Progressing".into();
                            return;
                        }
                    }
                }
            }
        }
        if st.step >= r.steps.len() {
            st.set_weight = 100;
            st.phase = "Healthy".into();
            st.message = String::new();
            st.background = None;
        }
    }

    /// Takes the measurements that are due; returns the run's status.
    async fn measure(&mut self, r: &Rollout, templates: &[Template], run: &mut RunState) -> Phase {
        if let Some(p) = run.phase
            && p != Phase::Running
            && p != Phase::Pending
        {
            return p;
        }
        let metrics: Vec<&Metric> = templates.iter().flat_map(|t| t.metrics.iter()).collect();
        if run.metrics.len() != metrics.len() {
            run.metrics = metrics
                .iter()
                .map(|m| MetricRun {
                    name: m.name.clone(),
                    ..MetricRun::default()
                })
                .collect();
        }
        let now = now_ms();
        let mut statuses = Vec::new();
        for (m, mr) in metrics.iter().zip(run.metrics.iter_mut()) {
            let status = mr.status(m);
            if matches!(status, Phase::Pending | Phase::Running) {
                let delay = m.initial_delay.as_millis() as u64;
                let every = m.interval.map_or(0, |d| d.as_millis() as u64);
                let due = run.started_ms + delay + every * u64::from(mr.taken());
                if now >= due {
                    let measurement = self.take(r, m).await;
                    tracing::info!(
                        rollout = %r.name,
                        metric = %m.name,
                        phase = ?measurement.phase,
                        value = %measurement.value,
                        condition = %measurement.condition,
                        samples = ?measurement.samples,
                        "analysis measurement"
                    );
                    if let Some(reg) = &self.metrics {
                        reg.rollout_measurement(&r.name, &m.name, measurement.phase);
                    }
                    mr.record(measurement);
                }
            }
            statuses.push(mr.status(m));
        }
        let phase = analysis::run_status(&statuses);
        run.phase = Some(phase);
        run.message = metrics
            .iter()
            .zip(&run.metrics)
            .filter(|(m, mr)| mr.status(m).is_terminal_bad())
            .map(|(m, mr)| {
                let last = mr.measurements.last().map_or(String::new(), |x| {
                    format!(" (last value {} for {})", x.value, x.condition)
                });
                format!("Metric \"{}\" assessed {:?}{last}", m.name, mr.status(m))
            })
            .collect::<Vec<_>>()
            .join("; ");
        phase
    }

    async fn take(&mut self, r: &Rollout, m: &Metric) -> Measurement {
        let condition = [&m.success, &m.failure]
            .iter()
            .filter_map(|c| c.as_ref().map(|(t, _)| t.clone()))
            .collect::<Vec<_>>()
            .join(" / ");
        let mut samples = None;
        let mut window = None;
        let outcome = match &m.provider {
            Provider::Subsets {
                window: w,
                min_requests,
            } => {
                window = Some(format!("{}s", w.as_secs_f64()));
                match self.subsets_result(r, *w) {
                    None => Outcome::Error(
                        "the built-in provider reads this proxy's counters: run the controller with `switchyard run --rollouts`".into(),
                    ),
                    Some((value, canary_requests)) => {
                        samples = Some(canary_requests);
                        if canary_requests < *min_requests {
                            Outcome::Inconclusive(format!(
                                "canary received {canary_requests} < {min_requests} requests in {}s",
                                w.as_secs_f64()
                            ))
                        } else {
                            Outcome::Value(value)
                        }
                    }
                }
            }
            Provider::Web {
                url,
                method,
                headers,
                body,
                json_path,
                timeout,
            } => {
                super::provider::web(url, method, headers, body.as_deref(), json_path, *timeout)
                    .await
            }
            Provider::Prometheus {
                address,
                query,
                timeout,
            } => super::provider::prometheus(address, query, *timeout).await,
        };
        let (phase, value) = match outcome {
            Outcome::Value(v) => match analysis::judge(m, &v) {
                Ok(p) => (p, v.to_string()),
                Err(e) => (Phase::Error, format!("{v} ({e})")),
            },
            Outcome::Inconclusive(why) => (Phase::Inconclusive, why),
            Outcome::Error(e) => (Phase::Error, e),
        };
        Measurement {
            phase,
            value,
            condition,
            samples,
            window,
            at: now_ms(),
        }
    }

    /// Records this proxy's canary and stable totals for the rollout's route.
    fn sample(&mut self, r: &Rollout, vs: &VirtualService) {
        let Some(reg) = &self.metrics else {
            return;
        };
        let vhost = vs.id();
        let route = r.routes.first().cloned().unwrap_or_default();
        let side = |canary: bool| {
            let vhost = vhost.clone();
            let route = route.clone();
            let sides = r.sides.clone();
            move |k: &crate::metrics::WindowKey| {
                k.0 == vhost
                    && (k.1 == route || k.1.starts_with(&format!("{route}.")))
                    && match &sides {
                        Sides::Subsets {
                            canary: c,
                            stable: s,
                        } => k.2 == if canary { c.as_str() } else { s.as_str() },
                        Sides::Hosts {
                            canary: c,
                            stable: s,
                        } => k.3.contains(&format!("|{}.", if canary { c } else { s })),
                    }
            }
        };
        let sample = Sample {
            at: Instant::now(),
            canary: reg.window_totals(side(true)),
            stable: reg.window_totals(side(false)),
        };
        let ring = self
            .samples
            .entry(format!("{}/{}", r.namespace, r.name))
            .or_default();
        ring.push_back(sample);
        // Ten minutes at the tick rate bounds any window a template asks for.
        while ring.len() > 6000 {
            ring.pop_front();
        }
    }

    /// `{canary: {...}, stable: {...}}` over the last `window`, and the canary's request count.
    fn subsets_result(&self, r: &Rollout, window: Duration) -> Option<(serde_json::Value, u64)> {
        let ring = self.samples.get(&format!("{}/{}", r.namespace, r.name))?;
        let last = ring.back()?;
        let since = last.at.checked_sub(window);
        let first = ring
            .iter()
            .find(|s| since.is_none_or(|t| s.at >= t))
            .unwrap_or(last);
        let c = last.canary.since(&first.canary);
        let s = last.stable.since(&first.stable);
        let side = |x: &crate::metrics::window::Summary, errors: u64| {
            serde_json::json!({
                "requests": x.requests,
                "successes": x.requests.saturating_sub(errors),
                "success_rate": x.success_rate,
                "p50_ms": x.p50_ms,
                "p90_ms": x.p90_ms,
                "p99_ms": x.p99_ms,
            })
        };
        let value = serde_json::json!({
            "canary": side(&c, last.canary.errors.saturating_sub(first.canary.errors)),
            "stable": side(&s, last.stable.errors.saturating_sub(first.stable.errors)),
        });
        Some((value, c.requests))
    }

    /// Writes `canary` / `100 - canary` into the managed routes; true if anything changed.
    async fn write_weights(
        &mut self,
        vs: &VirtualService,
        routes: &[(usize, usize, usize)],
        r: &Rollout,
        canary: u32,
    ) -> Result<bool, String> {
        let edits = weight_edits(vs, routes, canary);
        if edits.is_empty() {
            return Ok(false);
        }
        let written = self.backend.write_weights(vs, r, edits, canary).await?;
        if written {
            tracing::info!(
                rollout = %r.name,
                virtual_service = %vs.meta.name,
                "VirtualService `{}` set to desiredWeight '{canary}'",
                vs.meta.name
            );
        }
        Ok(written)
    }
}

/// The edits that give the managed routes `canary` / `100 - canary` (none if they have them).
pub(crate) fn weight_edits(
    vs: &VirtualService,
    routes: &[(usize, usize, usize)],
    canary: u32,
) -> Vec<WeightEdit> {
    let mut edits = Vec::new();
    for &(i, c, s) in routes {
        let dests = &vs.spec.http[i].route;
        let current = |j: usize| dests[j].weight.map_or(0, |w| w.0.max(0) as u32);
        if current(c) != canary || dests[c].weight.is_none() {
            edits.push(WeightEdit {
                route: i,
                dest: c,
                weight: canary,
            });
        }
        if current(s) != 100 - canary || dests[s].weight.is_none() {
            edits.push(WeightEdit {
                route: i,
                dest: s,
                weight: 100 - canary,
            });
        }
    }
    edits
}

/// `validate`'s view of the folder's Rollouts, as the controller would find them: the spec,
/// its templates, the VirtualService and Argo's rules for managed routes (`SY0006` errors),
/// and a warning for any other destination with a weight (Argo would delete it).
pub fn check(res: &Resources) -> Vec<crate::config::Diagnostic> {
    use crate::config::{Diagnostic, Severity, codes};
    let mut out = Vec::new();
    for doc in res.argo.iter().filter(|d| d.kind == "Rollout") {
        let diag = |severity, message: String| Diagnostic {
            severity,
            code: codes::ROLLOUT,
            file: doc.source.file.to_path_buf(),
            line: doc.source.line_of("spec"),
            resource: format!("Rollout/{}/{}", doc.namespace, doc.name),
            field_path: String::new(),
            message,
        };
        let r = match spec::rollout(doc) {
            Ok(r) => r,
            Err(e) => {
                out.push(Diagnostic {
                    line: e.line,
                    field_path: e.field.clone(),
                    ..diag(Severity::Error, e.message)
                });
                continue;
            }
        };
        if let Err(e) = templates(res, &r) {
            out.push(diag(Severity::Error, e));
        }
        let Some(vs) = res
            .virtual_services
            .iter()
            .find(|v| v.meta.name == r.virtual_service && v.namespace == r.vs_namespace)
        else {
            out.push(diag(
                Severity::Error,
                format!(
                    "VirtualService {}/{} (trafficRouting.istio.virtualService) is not in the config",
                    r.vs_namespace, r.virtual_service
                ),
            ));
            continue;
        };
        match managed_routes(vs, &r) {
            Err(e) => out.push(diag(Severity::Error, e)),
            Ok(routes) => {
                for (i, c, s) in routes {
                    for (j, d) in vs.spec.http[i].route.iter().enumerate() {
                        if j != c && j != s && d.weight.is_some_and(|w| w.0 > 0) {
                            out.push(diag(
                                Severity::Warning,
                                format!(
                                    "VirtualService/{}/{}: spec.http[{i}].route[{j}] ({}) is neither canary nor stable but has weight {}: Argo Rollouts would delete it; switchyard leaves it and writes canary + stable = 100",
                                    vs.namespace,
                                    vs.meta.name,
                                    d.destination.host,
                                    d.weight.map_or(0, |w| w.0)
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Templates by step index, and the background ones.
#[derive(Default)]
struct TemplateSet {
    steps: HashMap<usize, Vec<Template>>,
    background: Vec<Template>,
}

fn templates(res: &Resources, r: &Rollout) -> Result<TemplateSet, String> {
    let find =
        |refs: &[spec::TemplateRef], args: &[spec::ArgValue]| -> Result<Vec<Template>, String> {
            refs.iter()
                .map(|t| {
                    let kind = if t.cluster_scope {
                        "ClusterAnalysisTemplate"
                    } else {
                        "AnalysisTemplate"
                    };
                    let doc = res
                        .argo
                        .iter()
                        .find(|d| {
                            d.kind == kind
                                && d.name == t.template_name
                                && (t.cluster_scope || d.namespace == r.namespace)
                        })
                        .ok_or_else(|| {
                            format!(
                                "{}:{}: Rollout/{}/{}: {kind} {:?} is not in the folder",
                                r.file, r.line, r.namespace, r.name, t.template_name
                            )
                        })?;
                    spec::template(doc, args).map_err(|e| e.to_string())
                })
                .collect()
        };
    let mut set = TemplateSet::default();
    for (i, s) in r.steps.iter().enumerate() {
        if let Step::Analysis(a) = s {
            set.steps.insert(i, find(&a.templates, &a.args)?);
        }
    }
    if let Some(bg) = &r.background {
        set.background = find(&bg.templates, &bg.args)?;
    }
    Ok(set)
}

/// (route index, canary destination, stable destination) of each managed route, checked as
/// Argo checks them.
pub(crate) fn managed_routes(
    vs: &VirtualService,
    r: &Rollout,
) -> Result<Vec<(usize, usize, usize)>, String> {
    let at = format!(
        "{}:{}: VirtualService/{}/{}",
        vs.source.file.display(),
        vs.source.line,
        vs.namespace,
        vs.meta.name
    );
    let indexes: Vec<usize> = if r.routes.is_empty() {
        match vs.spec.http.len() {
            1 => vec![0],
            n => {
                return Err(format!(
                    "{at}: spec.http must have exactly 1 route when trafficRouting.istio.virtualService.routes is omitted, found {n}"
                ));
            }
        }
    } else {
        r.routes
            .iter()
            .map(|name| {
                vs.spec
                    .http
                    .iter()
                    .position(|h| h.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| {
                        format!(
                            "{at}: HTTP Route '{name}' is not found in the defined Virtual Service."
                        )
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for i in indexes {
        let dests = &vs.spec.http[i].route;
        let find = |canary: bool| {
            dests.iter().position(|d| {
                r.sides
                    .side_of(&d.destination.host, d.destination.subset.as_deref())
                    == Some(canary)
            })
        };
        let (what, c_name, s_name) = match &r.sides {
            Sides::Subsets { canary, stable } => ("DestinationRule subset", canary, stable),
            Sides::Hosts { canary, stable } => ("Service", canary, stable),
        };
        let c = find(true).ok_or_else(|| {
            format!("{at}: spec.http[{i}]: Canary {what} '{c_name}' not found in route")
        })?;
        let s = find(false).ok_or_else(|| {
            format!("{at}: spec.http[{i}]: Stable {what} '{s_name}' not found in route")
        })?;
        out.push((i, c, s));
    }
    Ok(out)
}

fn fresh(r: &Rollout) -> State {
    State {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        revision: 1,
        spec_hash: r.spec_hash.clone(),
        step: 0,
        steps: r.steps.len(),
        phase: "Progressing".into(),
        ..State::default()
    }
}

fn new_run(refs: &[spec::TemplateRef]) -> RunState {
    RunState {
        templates: refs.iter().map(|t| t.template_name.clone()).collect(),
        started_ms: now_ms(),
        ..RunState::default()
    }
}

/// What an analysis run's status does to the rollout (`rollout/analysis.go`): Failed or Error
/// aborts, Inconclusive pauses for a human. True when the rollout stops there.
fn gate(st: &mut State, kind: &str, phase: Phase, message: &str) -> bool {
    match phase {
        Phase::Failed | Phase::Error => {
            let word = if phase == Phase::Failed {
                "failed"
            } else {
                "error"
            };
            abort(st, &format!("{kind} analysis phase {word}: {message}"));
            true
        }
        Phase::Inconclusive => {
            st.phase = "Paused".into();
            st.message = "InconclusiveAnalysisRun".into();
            true
        }
        _ => false,
    }
}

fn abort(st: &mut State, why: &str) {
    tracing::warn!(rollout = %st.name, "{why}; aborting");
    st.aborted = true;
    st.phase = "Degraded".into();
    st.message = format!(
        "RolloutAborted: Rollout aborted update to revision {}: {why}",
        st.revision
    );
    st.step_analysis = None;
    st.background = None;
    st.pause_started_ms = None;
}

fn apply_action(st: &mut State, r: &Rollout, a: Action) {
    match a {
        Action::Abort => {
            if !st.aborted {
                abort(st, "aborted from the CLI");
            }
        }
        Action::Retry => {
            st.aborted = false;
            st.step = 0;
            st.set_weight = 0;
            st.step_analysis = None;
            st.background = None;
            st.pause_started_ms = None;
            st.phase = "Progressing".into();
            st.message = String::new();
        }
        Action::Pause => st.paused = true,
        Action::Promote => {
            st.paused = false;
            let inconclusive = st
                .step_analysis
                .as_ref()
                .is_some_and(|a| a.phase == Some(Phase::Inconclusive));
            let at_pause = matches!(r.steps.get(st.step), Some(Step::Pause(_)));
            if inconclusive || at_pause {
                st.step_analysis = None;
                st.pause_started_ms = None;
                st.step += 1;
            }
            if st
                .background
                .as_ref()
                .is_some_and(|a| a.phase == Some(Phase::Inconclusive))
            {
                st.background = None;
            }
        }
        Action::PromoteFull => {
            st.paused = false;
            st.step = r.steps.len();
            st.step_analysis = None;
            st.background = None;
            st.pause_started_ms = None;
        }
    }
}
