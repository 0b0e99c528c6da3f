//! The admin listener, following Envoy's conventions: `/ready`, `/server_info`,
//! `/config_dump`, and POST-only mutations. It binds 127.0.0.1 by default: it can reload and
//! stop the proxy, so it must not face the network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::downstream::DrainState;
use crate::reload::{ReloadOutcome, Reloader};
use crate::route::{Action, RouteTable};

pub struct Admin {
    pub reloader: Arc<Reloader>,
    pub state: Arc<DrainState>,
    /// Notified by POST /quitquitquit: the binary runs its drain sequence.
    pub quit: Arc<Notify>,
    pub started: Instant,
    pub metrics: Arc<crate::metrics::Registry>,
    /// Changes the log filter (`POST /logging?level=debug`); `None` when logging is not ours.
    pub set_log_level: Option<LogControl>,
}

/// Applies a `tracing` filter directive such as `debug` or `switchyard=trace`.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

impl Admin {
    pub fn spawn(self: Arc<Self>, listener: TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let live = crate::live::Live::start(self.reloader.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let admin = self.clone();
                let live = live.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let admin = admin.clone();
                        let live = live.clone();
                        async move { Ok::<_, Infallible>(admin.serve(req, &live).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(addr)
    }

    /// The live page and its JSON, then everything else; a cross-site POST is refused first.
    async fn serve(
        &self,
        req: Request<Incoming>,
        live: &crate::live::Live,
    ) -> Response<Full<Bytes>> {
        if req.method() == Method::POST && cross_site(&req) {
            // A page on another site can make a browser on this machine post to localhost.
            return text(
                StatusCode::FORBIDDEN,
                "cross-site request refused: admin actions come from this listener's own page, curl or the CLI\n",
            );
        }
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match req.uri().path() {
            "/" if get => crate::metrics::server::respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                LIVE_PAGE.as_bytes().to_vec(),
            ),
            "/live.json" if get => json_response(StatusCode::OK, live.json()),
            _ => self.handle(req).await,
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if let Some(r) =
            crate::metrics::server::read_only(req.uri(), req.method(), &self.metrics, &self.state)
        {
            return r;
        }
        if path == "/clusters" && req.method() == Method::GET {
            let json = req.uri().query().is_some_and(|q| q.contains("format=json"));
            return self.clusters(json);
        }
        if path == "/logging" {
            return self.logging(&req);
        }
        if path == "/rollouts" || path.starts_with("/rollouts/") {
            return self.rollouts(path, req.method());
        }
        let post_only = matches!(
            path,
            "/reload"
                | "/quitquitquit"
                | "/healthcheck/fail"
                | "/healthcheck/ok"
                | "/drain_listeners"
        );
        if post_only && req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST\n",
            );
        }
        match path {
            "/help" => help(),
            "/ready" | "/healthz/ready" => {
                if self.state.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
                } else {
                    text(StatusCode::OK, "LIVE\n")
                }
            }
            "/server_info" => json_response(
                StatusCode::OK,
                json!({
                    "version": concat!("switchyard/", env!("CARGO_PKG_VERSION")),
                    "state": if self.state.is_draining() { "DRAINING" } else { "LIVE" },
                    "uptime_current_epoch": format!("{}s", self.started.elapsed().as_secs()),
                    "config_version": self.reloader.version(),
                }),
            ),
            "/config_dump" => json_response(StatusCode::OK, self.config_dump()),
            "/reload" => match self.reloader.reload().await {
                Ok(ReloadOutcome::Applied { version, warnings }) => json_response(
                    StatusCode::OK,
                    json!({"result": "accepted", "version": version,
                           "diagnostics": warnings.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
                ),
                Ok(ReloadOutcome::Unchanged) => json_response(
                    StatusCode::OK,
                    json!({"result": "unchanged", "version": self.reloader.version()}),
                ),
                Err(diags) => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"result": "refused", "version": self.reloader.version(),
                           "diagnostics": diags.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
                ),
            },
            "/quitquitquit" => {
                self.quit.notify_one();
                text(StatusCode::OK, "OK\n")
            }
            "/healthcheck/fail" | "/drain_listeners" => {
                self.state
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                text(StatusCode::OK, "OK\n")
            }
            "/healthcheck/ok" => {
                self.state
                    .draining
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                text(StatusCode::OK, "OK\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Envoy's `/clusters`: per endpoint, active requests, health, weight.
    fn clusters(&self, json: bool) -> Response<Full<Bytes>> {
        let table = self.reloader.table.load_full();
        if json {
            let statuses: Vec<Value> = table
                .clusters
                .iter()
                .map(|c| {
                    let hosts: Vec<Value> = c
                        .endpoints()
                        .iter()
                        .map(|e| {
                            json!({
                                "address": {"socket_address": {"address": e.addr.ip().to_string(), "port_value": e.addr.port()}},
                                "stats": [
                                    {"name": "rq_active", "value": e.active.load(std::sync::atomic::Ordering::Relaxed)},
                                    {"name": "cx_idle", "value": e.pool.idle_connections()},
                                ],
                                "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": e.outlier.is_ejected()},
                                "weight": e.weight,
                                "labels": e.labels,
                            })
                        })
                        .collect();
                    json!({"name": c.name, "added_via_api": true, "host_statuses": hosts})
                })
                .collect();
            return json_response(StatusCode::OK, json!({ "cluster_statuses": statuses }));
        }
        let mut out = String::new();
        for c in &table.clusters {
            use std::fmt::Write as _;
            let _ = writeln!(out, "{}::added_via_api::true", c.name);
            let _ = writeln!(
                out,
                "{}::default_priority::max_connections::4294967295",
                c.name
            );
            for e in c.endpoints().iter() {
                let p = format!("{}::{}", c.name, e.addr);
                let _ = writeln!(out, "{p}::cx_active::{}", c.stats.upstream_cx_active.get());
                let _ = writeln!(out, "{p}::cx_idle::{}", e.pool.idle_connections());
                let _ = writeln!(
                    out,
                    "{p}::rq_active::{}",
                    e.active.load(std::sync::atomic::Ordering::Relaxed)
                );
                let flags = if e.outlier.is_ejected() {
                    "/failed_outlier_check"
                } else {
                    "healthy"
                };
                let _ = writeln!(out, "{p}::health_flags::{flags}");
                let _ = writeln!(out, "{p}::weight::{}", e.weight);
            }
        }
        crate::metrics::server::respond(StatusCode::OK, "text/plain", out.into_bytes())
    }

    /// `GET /rollouts`: every rollout's state in the config folder (what `rollout get` reads);
    /// `POST /rollouts/NAME/{promote,promote-full,abort,retry,pause}` (namespace: ours, or
    /// `NAMESPACE.NAME`): the CLI's requests, left for the controller the same way.
    fn rollouts(&self, path: &str, method: &Method) -> Response<Full<Bytes>> {
        use crate::rollout::state;
        let dir = &self.reloader.ctx.path;
        if path == "/rollouts" {
            if method != Method::GET {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed: use GET\n",
                );
            }
            return json_response(StatusCode::OK, json!({ "rollouts": state::list(dir) }));
        }
        if method != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST\n",
            );
        }
        let rest = &path["/rollouts/".len()..];
        let Some((target, verb)) = rest.rsplit_once('/') else {
            return text(StatusCode::NOT_FOUND, "use POST /rollouts/NAME/ACTION\n");
        };
        let action = match verb {
            "promote" => state::Action::Promote,
            "promote-full" => state::Action::PromoteFull,
            "abort" => state::Action::Abort,
            "retry" => state::Action::Retry,
            "pause" => state::Action::Pause,
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    "actions: promote, promote-full, abort, retry, pause\n",
                );
            }
        };
        let namespace = self.reloader.ctx.identity.namespace.clone();
        let (ns, name) = match target.split_once('.') {
            Some((ns, name)) => (ns.to_string(), name),
            None => (namespace, target),
        };
        if state::read(dir, &ns, name).is_none() {
            return text(
                StatusCode::NOT_FOUND,
                "no such rollout in the config folder\n",
            );
        }
        match state::request(dir, &ns, name, action) {
            Ok(()) => json_response(StatusCode::OK, json!({"rollout": name, "requested": verb})),
            Err(e) => crate::metrics::server::respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot leave the request: {e}\n").into_bytes(),
            ),
        }
    }

    /// `POST /logging?level=debug` (Envoy's admin convention); `GET` lists how to use it.
    fn logging(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST /logging?level=LEVEL\n",
            );
        }
        let asked = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")))
            .unwrap_or("");
        // Envoy's level names. Anything else would reach the filter as a directive naming a
        // log target ("bogus" = everything from target `bogus`), muting every other log.
        let Some(level) = envoy_log_level(asked) else {
            return crate::metrics::server::respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!(
                    "invalid level {asked:?}: use one of {}\n",
                    ENVOY_LOG_LEVELS.join(", ")
                )
                .into_bytes(),
            );
        };
        let Some(set) = &self.set_log_level else {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "log level control is not available\n",
            );
        };
        match set(level) {
            Ok(()) => text(StatusCode::OK, "OK\n"),
            Err(e) => crate::metrics::server::respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("invalid level {level:?}: {e}\n").into_bytes(),
            ),
        }
    }

    fn config_dump(&self) -> Value {
        let table = self.reloader.table.load_full();
        let mut dump = table_json(&table);
        if let Some(r) = self.reloader.last_report() {
            dump["last_reload"] = json!({
                "time": epoch_secs(r.at),
                "result": if r.accepted { "accepted" } else { "refused" },
                // False for an accepted reload whose files matched the serving table.
                "changed": r.changed,
                "trigger": r.trigger.as_str(),
                "version": r.version,
                "source_hash": r.source_hash,
                "diagnostics": r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            });
        }
        // Which object versions (a file's line, or a Kubernetes resourceVersion) are serving.
        dump["resources"] = json!(self.reloader.serving());
        dump["rate_limit_buckets"] = self
            .metrics
            .rate_bucket_tokens()
            .into_iter()
            .map(|(k, tokens)| json!({"bucket": k, "tokens": tokens}))
            .collect::<Vec<_>>()
            .into();
        dump["reloads"] = json!({
            "accepted": self.reloader.reloads_accepted(),
            "refused": self.reloader.reloads_refused(),
            "unchanged": self.reloader.reloads_unchanged(),
        });
        dump
    }
}

/// The levels `POST /logging?level=` takes, as Envoy names them.
const ENVOY_LOG_LEVELS: [&str; 7] = [
    "trace", "debug", "info", "warning", "error", "critical", "off",
];

/// An Envoy level name as the log filter names it.
fn envoy_log_level(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// What `GET /` and `/help` list, as Envoy's admin does.
const ENDPOINTS: &[(&str, &str)] = &[
    (
        "/",
        "the live page: weights, shares, success and latency per subset, rollouts",
    ),
    (
        "/live.json",
        "the live page's data (also what `switchyard top` reads)",
    ),
    ("/help", "this list"),
    ("/ready", "LIVE, or 503 DRAINING (also /healthz/ready)"),
    ("/server_info", "version, state, uptime, config version"),
    (
        "/config_dump",
        "the serving table as JSON, and the last reload with its diagnostics",
    ),
    (
        "/clusters",
        "endpoints per cluster with active requests and health (?format=json)",
    ),
    (
        "/stats/prometheus",
        "Istio and Envoy metrics in Prometheus text format (also /metrics)",
    ),
    (
        "/stats/subsets",
        "per-subset requests, success rate and latency windows (JSON)",
    ),
    (
        "/reload",
        "POST: read the config again; accepted, unchanged or refused with diagnostics",
    ),
    (
        "/logging",
        "POST ?level=trace|debug|info|warning|error|critical|off",
    ),
    ("/healthcheck/fail", "POST: fail /ready (start draining)"),
    ("/healthcheck/ok", "POST: pass /ready again"),
    ("/drain_listeners", "POST: as /healthcheck/fail"),
    ("/quitquitquit", "POST: drain and exit"),
    (
        "/rollouts",
        "the config folder's rollouts (JSON); POST /rollouts/NAME/promote|promote-full|abort|retry|pause",
    ),
];

/// The live page, compiled in: no CDN, nothing fetched but `/live.json`.
const LIVE_PAGE: &str = include_str!("live_page.html");

/// A request a browser sent from another site: its `Origin` names another host than the one
/// it was sent to, or `Sec-Fetch-Site` says cross-site. curl and the CLI send neither.
fn cross_site(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match (
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map_or(origin, |(_, rest)| rest)
                .trim_end_matches('/');
            !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        _ => false,
    }
}

fn help() -> Response<Full<Bytes>> {
    let mut out = String::from("admin commands are:\n");
    for (path, what) in ENDPOINTS {
        out.push_str(&format!("  {path}: {what}\n"));
    }
    crate::metrics::server::respond(StatusCode::OK, "text/plain", out.into_bytes())
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The active table as JSON: hosts, routes with their destinations and shares, clusters with
/// their endpoints.
pub fn table_json(table: &RouteTable) -> Value {
    let vhosts: Vec<Value> = table
        .virtual_hosts()
        .iter()
        .map(|vh| {
            let routes: Vec<Value> = vh
                .routes
                .iter()
                .map(|r| {
                    let action = match &r.action {
                        Action::Forward(pick) => {
                            let lone = pick.iter().count() == 1;
                            json!({"route": pick.iter().enumerate().map(|(i, (w, t))| {
                                let mut d = json!({
                                    "cluster": table.clusters[t.cluster].name,
                                    // A lone destination takes all traffic whatever the YAML
                                    // says (Istio emits it as a plain cluster route).
                                    "weight": if lone { 100 } else { w },
                                    "share": pick.share(i),
                                });
                                if lone && w != 100 {
                                    d["configured_weight"] = json!(w);
                                }
                                d
                            }).collect::<Vec<_>>()})
                        }
                        Action::Redirect(rd) => json!({"redirect": {"code": rd.code.as_u16()}}),
                        Action::Direct(d) => {
                            json!({"direct_response": {"status": d.status.as_u16()}})
                        }
                    };
                    json!({
                        "name": r.name,
                        "rule_index": r.rule_index,
                        "match_index": r.match_index,
                        "action": action,
                    })
                })
                .collect();
            json!({"name": vh.name, "domains": vh.domains, "routes": routes})
        })
        .collect();
    let clusters: Vec<Value> = table
        .clusters
        .iter()
        .map(|c| {
            let eps: Vec<Value> = c
                .endpoints()
                .iter()
                .map(|e| json!({"address": e.addr.to_string(), "weight": e.weight, "labels": e.labels}))
                .collect();
            json!({"name": c.name, "lb_policy": c.lb.as_str(), "http2": c.h2, "endpoints": eps})
        })
        .collect();
    json!({
        "version": table.version,
        "source_hash": table.source_hash,
        "loaded_at": epoch_secs(table.loaded_at),
        "virtual_hosts": vhosts,
        "clusters": clusters,
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
