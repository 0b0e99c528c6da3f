//! Builds a `RouteTable` from validated resources, the way istiod builds one sidecar's routes:
//! config-time conditions (`sourceLabels`, `sourceNamespace`, `gateways`, `exportTo`) are
//! decided here against the proxy's identity, so the request path only sees what applies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use super::action::{
    DirectResponse, HeaderOps, HeaderTemplate, PrefixRewrite, Redirect, RedirectPort, Rewrite,
    regex_substitution,
};
use super::host::{HostIndex, lookup_aliases, resolve_short_name};
use super::matcher::{
    HeaderMatcher, Pseudo, PseudoMatcher, QueryMatcher, RequestMatch, StringMatcher, UriMatcher,
};
use super::policy::{Cors, Fault, Mirror, RetryPolicy, RoutePolicy, per_million};
use super::weighted::WeightedPick;
use super::{Action, Route, RouteTable, Target, VirtualHost};
use crate::config::duration::parse_go_duration;
use crate::config::istio::{
    self, HttpMatchRequest, HttpRoute, RedirectPortSelection, SimpleLb, StringMatch,
};
use crate::config::registry::{Registry, Service, destination_rules_for};
use crate::config::scope::{ProxyIdentity, binds_mesh, labels_subset, visible_to};
use crate::config::{Resources, VirtualService};
use crate::metrics::Registry as Metrics;
use crate::metrics::istio::{DestLabels, DestMetrics};
use crate::metrics::render_labels;
use crate::upstream::dns::DnsTarget;
use crate::upstream::policy::ClusterPolicy;
use crate::upstream::{Cluster, ConnSettings, Discovery, Endpoint, LbPolicy, PoolRegistry};

/// What to do with a Host that no resource names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundPolicy {
    /// Answer 502, as an Istio sidecar with `outboundTrafficPolicy: REGISTRY_ONLY` does. Our
    /// default, so a proxy on 0.0.0.0 is never an open proxy.
    #[default]
    RegistryOnly,
    /// Forward to the host the request names (Istio's default), never to ourselves.
    AllowAny,
}

pub struct CompileOptions<'a> {
    pub identity: &'a ProxyIdentity,
    pub outbound_policy: OutboundPolicy,
    pub pools: &'a Arc<PoolRegistry>,
    /// Series are looked up here at compile time, so requests only touch atomics.
    pub metrics: &'a Arc<Metrics>,
    pub version: u64,
}

/// Validation refuses configs that would hit these; they exist so that compiling an
/// unvalidated config still fails cleanly instead of serving something half-built.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{resource}: destination host \"{host}\" is not defined by any ServiceEntry")]
    UnknownHost { resource: String, host: String },
    #[error(
        "{resource}: subset \"{subset}\" of host \"{host}\" is not defined by any DestinationRule"
    )]
    UnknownSubset {
        resource: String,
        host: String,
        subset: String,
    },
    #[error("{resource}: {field}: {message}")]
    Invalid {
        resource: String,
        field: String,
        message: String,
    },
}

pub fn compile(res: &Resources, opts: &CompileOptions) -> Result<RouteTable, CompileError> {
    let registry = Registry::build(res, opts.identity);
    let mut b = Builder {
        res,
        opts,
        registry: &registry,
        clusters: Vec::new(),
        cluster_index: HashMap::new(),
        vhost: String::new(),
        vhost_hosts: Vec::new(),
        limits: crate::ratelimit::read(res, opts.identity).0,
        used_buckets: std::collections::HashSet::new(),
    };
    let mut vhosts: Vec<VirtualHost> = Vec::new();
    let mut index: HostIndex<usize> = HostIndex::new();

    for vs in res
        .virtual_services
        .iter()
        .filter(|vs| applies(vs, opts.identity))
    {
        if vs.spec.hosts.is_empty() || vs.spec.http.is_empty() {
            continue;
        }
        b.vhost = vs.id();
        b.vhost_hosts = vs
            .spec
            .hosts
            .iter()
            .map(|h| resolve_short_name(h, &vs.namespace))
            .collect();
        let routes = b.routes_of(vs)?;
        let mut domains = Vec::new();
        for host in &vs.spec.hosts {
            let fqdn = resolve_short_name(host, &vs.namespace);
            let aliases = lookup_aliases(&fqdn, &opts.identity.namespace);
            domains.push(fqdn);
            domains.extend(aliases);
        }
        let service = domains.first().cloned().unwrap_or_default();
        let metrics = vhost_metrics(opts.metrics, &service, &registry);
        add_vhost(&mut vhosts, &mut index, vs.id(), domains, routes, metrics);
    }

    // A ServiceEntry host with no VirtualService gets Istio's default route: everything to
    // the whole service.
    for svc in &registry.services {
        if index.get(&svc.host).is_some() {
            continue;
        }
        b.vhost = svc.entry.id();
        b.vhost_hosts = vec![svc.host.clone()];
        let routes = b.default_routes(svc)?;
        let mut domains = vec![svc.host.clone()];
        domains.extend(lookup_aliases(&svc.host, &opts.identity.namespace));
        let metrics = vhost_metrics(opts.metrics, &svc.host, &registry);
        add_vhost(
            &mut vhosts,
            &mut index,
            svc.entry.id(),
            domains,
            routes,
            metrics,
        );
    }

    // ServiceEntry VIPs answer for their service, as a sidecar's listener on the VIP does.
    for svc in &registry.services {
        let Some(&vh) = index.get(&svc.host) else {
            continue;
        };
        for addr in &svc.entry.spec.addresses {
            if addr.parse::<IpAddr>().is_ok() {
                let _ = index.insert(&addr.to_ascii_lowercase(), vh);
            }
        }
    }

    opts.metrics.retain_rate_buckets(&b.used_buckets);
    Ok(RouteTable {
        version: opts.version,
        source_hash: res.content_hash.clone(),
        loaded_at: SystemTime::now(),
        outbound_policy: opts.outbound_policy,
        vhosts,
        index,
        clusters: b.clusters,
        dns_task: None,
    })
}

/// The series of a virtual host's own answers (NR, redirects, direct responses).
fn vhost_metrics(
    metrics: &Arc<Metrics>,
    service: &str,
    registry: &Registry<'_>,
) -> Arc<DestMetrics> {
    let ns = registry.service(service).map(|s| s.namespace.clone());
    Arc::new(DestMetrics::new(
        metrics.clone(),
        DestLabels::service_only(service, ns.as_deref()),
    ))
}

/// First VirtualService wins a domain (Istio sidecars do not merge; IST0109 reports it).
fn add_vhost(
    vhosts: &mut Vec<VirtualHost>,
    index: &mut HostIndex<usize>,
    name: String,
    domains: Vec<String>,
    mut routes: Vec<Route>,
    metrics: Arc<DestMetrics>,
) {
    RequestMatch::assign_memo_slots(
        &mut routes
            .iter_mut()
            .map(|r| &mut r.matches)
            .collect::<Vec<_>>(),
    );
    let i = vhosts.len();
    let mut kept = Vec::new();
    for d in domains {
        if index.insert(&d, i).is_ok() {
            kept.push(d);
        }
    }
    if kept.is_empty() {
        return;
    }
    vhosts.push(VirtualHost {
        name,
        domains: kept,
        routes: routes.into_boxed_slice(),
        metrics,
    });
}

/// A VirtualService serves this sidecar when bound to `mesh` and exported to our namespace.
pub fn applies(vs: &VirtualService, me: &ProxyIdentity) -> bool {
    binds_mesh(&vs.spec.gateways) && visible_to(&vs.spec.export_to, &vs.namespace, &me.namespace)
}

struct Builder<'a> {
    res: &'a Resources,
    opts: &'a CompileOptions<'a>,
    registry: &'a Registry<'a>,
    clusters: Vec<Arc<Cluster>>,
    cluster_index: HashMap<String, usize>,
    /// Name of the virtual host being compiled (labels route metrics).
    vhost: String,
    /// Its hosts, fully qualified (EnvoyFilter vhost names match them).
    vhost_hosts: Vec<String>,
    /// The EnvoyFilters' local rate limits.
    limits: crate::ratelimit::Limits,
    /// Rate-limit buckets this table uses; the others are forgotten once it is built.
    used_buckets: std::collections::HashSet<String>,
}

/// A rule ready to compile: delegates are expanded into these, carrying the root's matches.
struct Rule<'a> {
    rule: std::borrow::Cow<'a, HttpRoute>,
    /// Namespace that short destination names resolve in (the delegate's own, for delegates).
    namespace: &'a str,
    resource: String,
    rule_index: usize,
}

impl<'a> Builder<'a> {
    fn routes_of(&mut self, vs: &'a VirtualService) -> Result<Vec<Route>, CompileError> {
        let mut rules = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            match &rule.delegate {
                None => rules.push(Rule {
                    rule: std::borrow::Cow::Borrowed(rule),
                    namespace: &vs.namespace,
                    resource: vs.id(),
                    rule_index: i,
                }),
                Some(d) => {
                    let ns = d.namespace.as_deref().unwrap_or(&vs.namespace);
                    let Some(delegate) = self.res.virtual_services.iter().find(|x| {
                        x.meta.name == d.name
                            && x.namespace == ns
                            && x.spec.hosts.is_empty()
                            && visible_to(&x.spec.export_to, &x.namespace, &vs.namespace)
                    }) else {
                        return Err(CompileError::Invalid {
                            resource: vs.id(),
                            field: format!("spec.http[{i}].delegate"),
                            message: format!("delegate VirtualService {ns}/{} not found", d.name),
                        });
                    };
                    for child in &delegate.spec.http {
                        if child.delegate.is_some() {
                            // Istio allows one level of delegation only.
                            continue;
                        }
                        if let Some(merged) = merge_delegate(rule, child) {
                            rules.push(Rule {
                                rule: std::borrow::Cow::Owned(merged),
                                namespace: &delegate.namespace,
                                resource: delegate.id(),
                                rule_index: i,
                            });
                        }
                    }
                }
            }
        }
        let mut routes = Vec::new();
        for r in rules {
            self.compile_rule(&r, &mut routes)?;
        }
        Ok(routes)
    }

    fn compile_rule(&mut self, r: &Rule<'_>, out: &mut Vec<Route>) -> Result<(), CompileError> {
        let rule = r.rule.as_ref();
        let me = self.opts.identity;
        // Match blocks whose config-time conditions fail this proxy are not generated at all;
        // a rule whose every block fails matches nothing (it does not become a catch-all).
        let blocks: Vec<(Option<usize>, Option<&HttpMatchRequest>)> = if rule.matches.is_empty() {
            vec![(None, None)]
        } else {
            let kept: Vec<_> = rule
                .matches
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    labels_subset(&m.source_labels, &me.labels)
                        && m.source_namespace
                            .as_deref()
                            .is_none_or(|ns| ns == me.namespace)
                        && (m.gateways.is_empty() || binds_mesh(&m.gateways))
                })
                .map(|(i, m)| (Some(i), Some(m)))
                .collect();
            if kept.is_empty() {
                return Ok(());
            }
            kept
        };
        let field = |s: &str| format!("spec.http[{}].{s}", r.rule_index);
        let invalid = |field: String, message: String| CompileError::Invalid {
            resource: r.resource.clone(),
            field,
            message,
        };
        let Ops {
            request: req_ops,
            response: resp_ops,
            authority: rule_authority,
        } = header_ops(rule.headers.as_ref()).map_err(|m| invalid(field("headers"), m))?;
        let policy = Arc::new(RoutePolicy {
            timeout: match rule.timeout.as_deref() {
                Some(t) => Some(
                    parse_go_duration(t).map_err(|e| invalid(field("timeout"), e.to_string()))?,
                ),
                None => None,
            },
            retry: RetryPolicy::from_istio(rule.retries.as_ref()),
            fault: Fault::from_istio(rule.fault.as_ref()),
            mirrors: self.mirrors_of(rule, r)?,
            cors: match &rule.cors_policy {
                Some(c) => Some(Cors::from_istio(c).map_err(|m| invalid(field("corsPolicy"), m))?),
                None => None,
            },
            rate_limit: None,
        });
        for (match_index, block) in blocks {
            let matches = match block {
                Some(m) => request_match(m).map_err(|m| invalid(field("match"), m))?,
                None => RequestMatch::default(),
            };
            let name = match (&rule.name, block.and_then(|b| b.name.as_ref())) {
                (Some(a), Some(b)) => format!("{a}.{b}"),
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => String::new(),
            };
            let action = self.action(rule, r, &name).map_err(|e| match e {
                ActionError::Compile(c) => c,
                ActionError::Msg(f, m) => invalid(field(&f), m),
            })?;
            let mut rewrite = rewrite_of(rule, block).map_err(|m| invalid(field("rewrite"), m))?;
            // The rule's `Host`/`:authority` header is a route-level authority rewrite, as
            // `rewrite.authority` is (Istio validation lets only one of them be set).
            if let Some(a) = &rule_authority
                && rewrite.as_ref().is_none_or(|rw| rw.authority.is_none())
            {
                rewrite
                    .get_or_insert_with(|| Rewrite {
                        uri: None,
                        regex: None,
                        authority: None,
                    })
                    .authority = Some(a.clone());
            }
            let action = match action {
                Action::Redirect(mut redirect) => {
                    if let Some(pr) = &mut redirect.prefix_rewrite {
                        pr.matched_prefix_len = matched_prefix_len(block);
                    }
                    Action::Redirect(redirect)
                }
                a => a,
            };
            let stats = self.route_stats(&name);
            let sticky = self.sticky_for(r, &name, &action);
            let route_policy = match self.rate_limit_for(&name) {
                Some(limit) => Arc::new(RoutePolicy {
                    rate_limit: Some(limit),
                    ..(*policy).clone()
                }),
                None => policy.clone(),
            };
            out.push(Route {
                name,
                stats,
                policy: route_policy,
                sticky,
                rule_index: r.rule_index,
                match_index,
                matches,
                action,
                request_headers: req_ops.clone(),
                response_headers: resp_ops.clone(),
                rewrite,
            });
        }
        Ok(())
    }

    /// The sticky layout of a route whose VirtualService asks for one (`switchyard.io/sticky`);
    /// the salt defaults to the route's identity.
    fn sticky_for(
        &self,
        r: &Rule<'_>,
        route: &str,
        action: &Action,
    ) -> Option<Box<super::sticky::Sticky>> {
        use super::sticky::{ANNOTATION, CANARY, SALT, Sticky, StickyKey};
        let Action::Forward(pick) = action else {
            return None;
        };
        let vs = self
            .res
            .virtual_services
            .iter()
            .find(|v| v.id() == r.resource)?;
        let key = StickyKey::parse(vs.meta.annotations.get(ANNOTATION)?).ok()?;
        let salt = vs
            .meta
            .annotations
            .get(SALT)
            .cloned()
            .unwrap_or_else(|| format!("{}/{route}", r.resource));
        let weights: Vec<u32> = pick.iter().map(|(w, _)| w).collect();
        let canary = vs.meta.annotations.get(CANARY).and_then(|c| {
            pick.iter().position(|(_, t)| {
                self.clusters
                    .get(t.cluster)
                    .is_some_and(|cl| cl.subset == *c)
            })
        });
        Some(Box::new(Sticky::new(key, &salt, &weights, canary)))
    }

    /// The local rate limit an EnvoyFilter puts on the route named `route` of the current
    /// virtual host: its own (`HTTP_ROUTE` MERGE on `HOST:PORT` and this route's name, or every
    /// route of the vhost), else the listener-wide one. Buckets come from the registry, so an
    /// unchanged one keeps its tokens across reloads.
    fn rate_limit_for(&mut self, route: &str) -> Option<Arc<crate::ratelimit::RouteLimit>> {
        let own = self.limits.routes.iter().find(|(t, _)| {
            self.vhost_hosts.contains(&t.host)
                && t.route.as_deref().is_none_or(|r| {
                    route == r
                        || route
                            .strip_prefix(r)
                            .is_some_and(|rest| rest.starts_with('.'))
                })
        });
        let (scope, port, def) = match own {
            Some((t, d)) => (format!("{}|{route}", self.vhost), t.port, d.clone()),
            None => ("listener".to_string(), None, self.limits.listener.clone()?),
        };
        let metrics = self.opts.metrics;
        let mut bucket = |name: &str, b: &crate::ratelimit::BucketDef| {
            let key = format!("{scope}|{}|{name}|{b:?}", def.stat_prefix);
            self.used_buckets.insert(key.clone());
            metrics.rate_bucket(key, b)
        };
        let default_bucket = def.bucket.as_ref().map(|b| bucket("default", b));
        let descriptor_buckets = def
            .descriptors
            .iter()
            .map(|(entries, b)| (entries.clone(), bucket(&format!("{entries:?}"), b)))
            .collect();
        Some(Arc::new(crate::ratelimit::RouteLimit {
            stats: metrics.rate_stats(&def.stat_prefix),
            def,
            default_bucket,
            descriptor_buckets,
            port,
        }))
    }

    /// Shadow destinations: `mirror` with `mirrorPercentage` (100% when absent, Istio's
    /// default) or the deprecated integer `mirrorPercent`, or `mirrors[]`.
    fn mirrors_of(&mut self, rule: &HttpRoute, r: &Rule<'_>) -> Result<Vec<Mirror>, CompileError> {
        let mut targets: Vec<(&istio::Destination, u32)> = Vec::new();
        if let Some(m) = &rule.mirror {
            let share = match (rule.mirror_percentage, rule.mirror_percent) {
                (Some(p), _) => per_million(Some(p)),
                (None, Some(p)) => u32::try_from(p.0.clamp(0, 100)).unwrap_or(0) * 10_000,
                (None, None) => 1_000_000,
            };
            targets.push((m, share));
        }
        for m in &rule.mirrors {
            let share = m.percentage.map_or(1_000_000, |p| per_million(Some(p)));
            targets.push((&m.destination, share));
        }
        let mut out = Vec::new();
        for (d, share) in targets {
            if share == 0 {
                continue;
            }
            let port = d
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n.0).ok());
            let cluster =
                self.cluster_for(&d.host, r.namespace, d.subset.as_deref(), port, &r.resource)?;
            out.push(Mirror {
                cluster,
                per_million: share,
            });
        }
        Ok(out)
    }

    fn route_stats(&self, route: &str) -> Arc<crate::metrics::RouteStats> {
        self.opts.metrics.route(render_labels(&[
            ("virtual_host", &self.vhost),
            ("route", route),
        ]))
    }

    fn window(&self, route: &str, cluster: usize) -> Arc<crate::metrics::window::Window> {
        let c = &self.clusters[cluster];
        self.opts.metrics.window((
            self.vhost.clone(),
            route.to_string(),
            c.subset.clone(),
            c.name.clone(),
        ))
    }

    fn action(
        &mut self,
        rule: &HttpRoute,
        r: &Rule<'_>,
        route_name: &str,
    ) -> Result<Action, ActionError> {
        if let Some(red) = &rule.redirect {
            return Ok(Action::Redirect(
                redirect_of(red).map_err(|m| ActionError::Msg("redirect".into(), m))?,
            ));
        }
        if let Some(dr) = &rule.direct_response {
            return Ok(Action::Direct(
                direct_of(dr).map_err(|m| ActionError::Msg("directResponse".into(), m))?,
            ));
        }
        if rule.route.is_empty() {
            return Err(ActionError::Msg(
                "route".into(),
                "a rule needs route, redirect or directResponse".into(),
            ));
        }
        let mut entries = Vec::with_capacity(rule.route.len());
        for (i, d) in rule.route.iter().enumerate() {
            let port = d
                .destination
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n.0).ok());
            let cluster = self
                .cluster_for(
                    &d.destination.host,
                    r.namespace,
                    d.destination.subset.as_deref(),
                    port,
                    &r.resource,
                )
                .map_err(ActionError::Compile)?;
            // No port on a service with several (IST0112 in `validate`): a sidecar serves it
            // with the port the request arrived on, so every service port gets its cluster.
            let service_ports: Vec<u16> = match port {
                Some(_) => Vec::new(),
                None => self
                    .registry
                    .service(&resolve_short_name(&d.destination.host, r.namespace))
                    .map(|svc| svc.ports.iter().map(|p| p.number).collect())
                    .unwrap_or_default(),
            };
            let mut by_port = Vec::new();
            if service_ports.len() > 1 {
                for p in service_ports {
                    let c = self
                        .cluster_for(
                            &d.destination.host,
                            r.namespace,
                            d.destination.subset.as_deref(),
                            Some(p),
                            &r.resource,
                        )
                        .map_err(ActionError::Compile)?;
                    by_port.push((p, c));
                }
            }
            let Ops {
                request: request_headers,
                response: response_headers,
                authority,
            } = header_ops(d.headers.as_ref())
                .map_err(|m| ActionError::Msg(format!("route[{i}].headers"), m))?;
            let weight = d
                .weight
                .map_or(0, |w| u32::try_from(w.0.max(0)).unwrap_or(u32::MAX));
            entries.push((
                weight,
                Target {
                    cluster,
                    request_headers,
                    response_headers,
                    authority,
                    by_port: by_port.into(),
                    window: self.window(route_name, cluster),
                },
            ));
        }
        WeightedPick::new(entries)
            .map(Action::Forward)
            .map_err(|e| ActionError::Msg("route".into(), e.to_string()))
    }

    /// The cluster for a destination, created on first use.
    fn cluster_for(
        &mut self,
        host: &str,
        namespace: &str,
        subset: Option<&str>,
        port: Option<u16>,
        resource: &str,
    ) -> Result<usize, CompileError> {
        let fqdn = resolve_short_name(host, namespace);
        let Some(svc) = self.registry.service(&fqdn) else {
            return Err(CompileError::UnknownHost {
                resource: resource.to_string(),
                host: fqdn,
            });
        };
        let port = port
            .or_else(|| svc.ports.first().map(|p| p.number))
            .unwrap_or(80);
        let subset_name = subset.unwrap_or("");
        let name = format!("outbound|{port}|{subset_name}|{fqdn}");
        if let Some(&i) = self.cluster_index.get(&name) {
            return Ok(i);
        }
        let drs = destination_rules_for(self.res, &fqdn, Some(&svc.namespace), self.opts.identity);
        let top_policy = drs.iter().find_map(|dr| dr.spec.traffic_policy.as_ref());
        let (labels, lb, subset_policy) = match subset {
            None => (istio::Labels::new(), top_level_simple(&drs), None),
            Some(s) => {
                let found = drs
                    .iter()
                    .flat_map(|dr| dr.spec.subsets.iter())
                    .find(|x| x.name == s);
                let Some(found) = found else {
                    return Err(CompileError::UnknownSubset {
                        resource: resource.to_string(),
                        host: fqdn,
                        subset: s.to_string(),
                    });
                };
                // A subset's loadBalancer block replaces the top-level one as a whole.
                let lb = found
                    .traffic_policy
                    .as_ref()
                    .and_then(|tp| tp.load_balancer.as_ref())
                    .and_then(|lb| lb.simple)
                    .or_else(|| top_level_simple(&drs));
                (found.labels.clone(), lb, found.traffic_policy.as_ref())
            }
        };
        let policy = ClusterPolicy::resolve(top_policy, subset_policy, port);
        let h2 = svc.port(port).is_some_and(|p| p.protocol.is_h2());
        let conn = conn_settings(&policy, &fqdn, h2).map_err(|e| CompileError::Invalid {
            resource: drs
                .first()
                .map_or_else(|| resource.to_string(), |dr| dr.id()),
            field: format!("trafficPolicy.tls.{}", e.field),
            message: e.error.to_string(),
        })?;
        let cluster = self.build_cluster(
            svc,
            &fqdn,
            name.clone(),
            subset_name,
            port,
            labels,
            (lb, policy, conn),
        );
        let i = self.clusters.len();
        self.clusters.push(Arc::new(cluster));
        self.cluster_index.insert(name, i);
        Ok(i)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_cluster(
        &self,
        svc: &Service<'_>,
        fqdn: &str,
        name: String,
        subset: &str,
        port: u16,
        labels: istio::Labels,
        (simple, policy, conn): (Option<SimpleLb>, ClusterPolicy, Arc<ConnSettings>),
    ) -> Cluster {
        let lb = simple.map(lb_policy).unwrap_or_default();
        // PASSTHROUGH is Envoy's ORIGINAL_DST: the address the client asked for. With no
        // iptables redirect here, that is the address the request's authority names.
        let passthrough = simple == Some(SimpleLb::Passthrough);
        let svc_port = svc.port(port).cloned();
        let h2 = svc_port.as_ref().is_some_and(|p| p.protocol.is_h2());
        let endpoint_port = |e: &crate::config::registry::EndpointInfo| {
            svc_port.as_ref().map_or(port, |p| e.port_for(p))
        };
        let selected: Vec<_> = svc.subset_endpoints(&labels).collect();
        let pools = self.opts.pools;
        let (discovery, endpoints) = match svc.resolution {
            _ if passthrough => (Discovery::OriginalDst, Vec::new()),
            istio::Resolution::Dns
            | istio::Resolution::DnsRoundRobin
            | istio::Resolution::DynamicDns => {
                let first_only = svc.resolution == istio::Resolution::DnsRoundRobin;
                let targets: Vec<DnsTarget> = if svc.endpoints.is_empty() {
                    // No endpoints listed: the host itself is resolved.
                    vec![DnsTarget {
                        hostname: fqdn.to_string(),
                        port,
                        labels: istio::Labels::new(),
                        weight: 1,
                        workload_name: None,
                        first_only,
                    }]
                } else {
                    selected
                        .iter()
                        .map(|e| DnsTarget {
                            hostname: e.address.clone(),
                            port: endpoint_port(e),
                            labels: e.labels.clone(),
                            weight: e.weight,
                            workload_name: e.workload_name.clone(),
                            first_only,
                        })
                        .collect()
                };
                (Discovery::Dns(targets), Vec::new())
            }
            istio::Resolution::None if svc.endpoints.is_empty() => {
                (Discovery::OriginalDst, Vec::new())
            }
            _ => (Discovery::Static, selected),
        };
        let limiter = pools.limiter(&name, &policy, h2);
        let cluster = Cluster::new(
            name,
            fqdn.to_string(),
            svc.namespace.clone(),
            subset.to_string(),
            port,
            h2,
            lb,
            discovery,
            labels.clone(),
            Vec::new(),
            self.opts.metrics.clone(),
            policy,
            conn.clone(),
            limiter,
        );
        let eps: Vec<Arc<Endpoint>> = endpoints
            .iter()
            .filter_map(|e| {
                let ip: IpAddr = e.address.parse().ok()?;
                let addr = SocketAddr::new(ip, endpoint_port(e));
                Some(cluster.new_endpoint(
                    addr,
                    e.weight,
                    e.labels.clone(),
                    e.workload_name.clone(),
                    pools.get_with(addr, h2, &conn),
                ))
            })
            .collect();
        cluster.set_endpoints(eps);
        cluster
    }

    /// Istio's default route for a host without a VirtualService: prefix `/` to the whole
    /// service. With several ports, the port the client addressed picks the cluster.
    fn default_routes(&mut self, svc: &Service<'_>) -> Result<Vec<Route>, CompileError> {
        let resource = svc.entry.id();
        let mut routes = Vec::new();
        let ports: Vec<u16> = svc.ports.iter().map(|p| p.number).collect();
        let mut push = |b: &mut Self, port: u16, by_port: bool| -> Result<(), CompileError> {
            let cluster = b.cluster_for(&svc.host, &svc.namespace, None, Some(port), &resource)?;
            let pick = WeightedPick::new(vec![(
                100,
                Target {
                    cluster,
                    request_headers: HeaderOps::default(),
                    response_headers: None,
                    authority: None,
                    by_port: Box::default(),
                    window: b.window("default", cluster),
                },
            )])
            .map_err(|e| CompileError::Invalid {
                resource: resource.clone(),
                field: "spec.ports".into(),
                message: e.to_string(),
            })?;
            routes.push(Route {
                name: "default".to_string(),
                rule_index: 0,
                match_index: None,
                matches: RequestMatch {
                    port: by_port.then_some(port),
                    ..RequestMatch::default()
                },
                action: Action::Forward(pick),
                request_headers: HeaderOps::default(),
                response_headers: None,
                rewrite: None,
                stats: b.route_stats("default"),
                policy: Arc::new(RoutePolicy {
                    rate_limit: b.rate_limit_for("default"),
                    ..RoutePolicy::default()
                }),
                sticky: None,
            });
            Ok(())
        };
        if ports.len() > 1 {
            for &p in &ports {
                push(self, p, true)?;
            }
        }
        push(self, ports.first().copied().unwrap_or(80), false)?;
        Ok(routes)
    }
}

/// A cluster's connection settings: its TLS client (built here, once, and cached in the
/// pools) and the connection lifetime limits of its policy.
fn conn_settings(
    policy: &ClusterPolicy,
    fqdn: &str,
    h2: bool,
) -> Result<Arc<ConnSettings>, crate::upstream::tls::FieldError> {
    let tls = match &policy.tls {
        Some(t) => crate::upstream::tls::TlsOrigin::build(t, fqdn, h2)?,
        None => None,
    };
    Ok(Arc::new(ConnSettings {
        tls,
        max_requests_per_connection: policy.max_requests_per_connection.unwrap_or(0),
        idle_timeout: policy
            .idle_timeout
            .unwrap_or(crate::upstream::pool::DEFAULT_IDLE_TIMEOUT),
    }))
}

enum ActionError {
    Compile(CompileError),
    Msg(String, String),
}

fn top_level_simple(drs: &[&crate::config::DestinationRule]) -> Option<SimpleLb> {
    drs.iter()
        .find_map(|dr| dr.spec.traffic_policy.as_ref())
        .and_then(|tp| tp.load_balancer.as_ref())
        .and_then(|lb| lb.simple)
}

fn lb_policy(s: SimpleLb) -> LbPolicy {
    match s {
        SimpleLb::RoundRobin => LbPolicy::RoundRobin,
        SimpleLb::Random => LbPolicy::Random,
        // PASSTHROUGH picks no endpoint (see build_cluster); UNSPECIFIED means the default.
        SimpleLb::LeastConn
        | SimpleLb::LeastRequest
        | SimpleLb::Unspecified
        | SimpleLb::Passthrough => LbPolicy::LeastRequest,
    }
}

fn string_matcher(sm: &StringMatch) -> Result<StringMatcher, String> {
    StringMatcher::from_istio(
        sm.exact.as_deref(),
        sm.prefix.as_deref(),
        sm.regex.as_deref(),
    )
    .map_err(|e| e.to_string())
}

fn request_match(m: &HttpMatchRequest) -> Result<RequestMatch, String> {
    let ignore_case = m.ignore_uri_case.is_some_and(|b| b.0);
    let uri = match &m.uri {
        Some(u) => Some(
            UriMatcher::from_istio(
                u.exact.as_deref(),
                u.prefix.as_deref(),
                u.regex.as_deref(),
                ignore_case,
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let opt = |s: &Option<StringMatch>| s.as_ref().map(string_matcher).transpose();
    let mut headers = Vec::new();
    let mut without_headers = Vec::new();
    let mut pseudo = Vec::new();
    for (list, invert) in [(&m.headers, false), (&m.without_headers, true)] {
        for (name, sm) in list {
            let matcher = string_matcher(sm)?;
            if let Some(which) = Pseudo::from_name(&name.to_ascii_lowercase()) {
                pseudo.push(PseudoMatcher {
                    which,
                    matcher,
                    invert,
                });
                continue;
            }
            let h = HeaderMatcher::new(name, matcher, invert).map_err(|e| e.to_string())?;
            if invert {
                without_headers.push(h);
            } else {
                headers.push(h);
            }
        }
    }
    let mut query = Vec::new();
    for (name, sm) in &m.query_params {
        query.push(QueryMatcher {
            name: name.as_str().into(),
            matcher: string_matcher(sm)?,
        });
    }
    Ok(RequestMatch {
        uri,
        scheme: opt(&m.scheme)?,
        method: opt(&m.method)?,
        authority: opt(&m.authority)?,
        headers,
        without_headers,
        pseudo,
        query,
        port: m.port.and_then(|p| u16::try_from(p.0).ok()),
    })
}

/// The bytes of the path a match block's uri condition covers, for prefix rewrites: its
/// prefix, the whole path for exact and regex, `/` when it has no uri condition.
fn matched_prefix_len(block: Option<&HttpMatchRequest>) -> Option<usize> {
    match block.and_then(|b| b.uri.as_ref()) {
        None => Some(1),
        Some(u) => u.prefix.as_ref().map(String::len),
    }
}

fn rewrite_of(
    rule: &HttpRoute,
    block: Option<&HttpMatchRequest>,
) -> Result<Option<Rewrite>, String> {
    let Some(rw) = &rule.rewrite else {
        return Ok(None);
    };
    let uri = rw.uri.as_ref().map(|u| PrefixRewrite {
        matched_prefix_len: matched_prefix_len(block),
        replacement: u.clone(),
    });
    let regex = match &rw.uri_regex_rewrite {
        Some(rr) => {
            let pattern = rr.pattern.as_deref().unwrap_or_default();
            let re =
                regex::Regex::new(pattern).map_err(|e| format!("uriRegexRewrite.match: {e}"))?;
            Some((
                re,
                regex_substitution(rr.rewrite.as_deref().unwrap_or_default()),
            ))
        }
        None => None,
    };
    let authority = match &rw.authority {
        Some(a) => Some(HeaderValue::from_str(a).map_err(|_| format!("invalid authority {a:?}"))?),
        None => None,
    };
    if uri.is_none() && regex.is_none() && authority.is_none() {
        return Ok(None);
    }
    Ok(Some(Rewrite {
        uri,
        regex,
        authority,
    }))
}

fn redirect_of(r: &istio::HttpRedirect) -> Result<Redirect, String> {
    let code = match r.redirect_code {
        None => StatusCode::MOVED_PERMANENTLY,
        Some(c) => u16::try_from(c.0)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|c| c.is_redirection())
            .ok_or_else(|| format!("redirectCode {} is not a 3xx status", c.0))?,
    };
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => Some(RedirectPort::Explicit(
            u16::try_from(p.0).map_err(|_| format!("port {} out of range", p.0))?,
        )),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
            Some(RedirectPort::ProtocolDefault)
        }
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(RedirectPort::RequestPort),
        (None, None) => None,
    };
    Ok(Redirect {
        scheme: r.scheme.clone(),
        authority: r.authority.clone(),
        port,
        path: r.uri.clone(),
        prefix_rewrite: r.prefix_rewrite.as_ref().map(|p| PrefixRewrite {
            matched_prefix_len: Some(1),
            replacement: p.clone(),
        }),
        code,
    })
}

fn direct_of(d: &istio::HttpDirectResponse) -> Result<DirectResponse, String> {
    let status = d
        .status
        .and_then(|s| u16::try_from(s.0).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("directResponse.status must be an HTTP status 200..599")?;
    let body = match &d.body {
        None => None,
        Some(b) => match (&b.string, &b.bytes) {
            (Some(s), _) => Some(Bytes::from(s.clone())),
            (None, Some(b64)) => Some(Bytes::from(
                decode_base64(b64).ok_or("directResponse.body.bytes is not valid base64")?,
            )),
            (None, None) => None,
        },
    };
    Ok(DirectResponse { status, body })
}

/// Standard base64 (what protobuf's JSON mapping uses for `bytes`), padding optional.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A rule's or a destination's `headers`, as Envoy applies them.
#[derive(Default)]
struct Ops {
    request: HeaderOps,
    response: Option<Arc<HeaderOps>>,
    /// A `Host` or `:authority` key in `request.set`/`add`: Istio turns it into an authority
    /// rewrite (`host_rewrite_literal`) instead of a header operation.
    authority: Option<HeaderValue>,
}

fn header_ops(h: Option<&istio::Headers>) -> Result<Ops, String> {
    let Some(h) = h else {
        return Ok(Ops::default());
    };
    let response = ops_of(h.response.as_ref())?;
    let response = (!response.is_empty()).then(|| Arc::new(response));
    let mut authority = None;
    if let Some(req) = &h.request {
        // `set` then `add`, as Istio reads them; a later one wins.
        for (k, v) in req.set.iter().chain(req.add.iter()) {
            if k == ":authority" || k.eq_ignore_ascii_case("host") {
                authority = Some(
                    HeaderValue::from_str(v)
                        .map_err(|_| format!("request {k}: invalid authority {v:?}"))?,
                );
            }
        }
    }
    Ok(Ops {
        request: ops_of(h.request.as_ref())?,
        response,
        authority,
    })
}

fn ops_of(o: Option<&istio::HeaderOperations>) -> Result<HeaderOps, String> {
    let mut ops = HeaderOps::default();
    let Some(o) = o else {
        return Ok(ops);
    };
    // Istio drops pseudo-headers and Host from header operations (the authority is a
    // rewrite, see `header_ops`).
    let usable = |k: &str| !k.starts_with(':') && !k.eq_ignore_ascii_case("host");
    let name = |k: &str| {
        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))
    };
    for (k, v) in o.set.iter().filter(|(k, _)| usable(k)) {
        ops.set.push((name(k)?, HeaderTemplate::parse(v)?));
    }
    for (k, v) in o.add.iter().filter(|(k, _)| usable(k)) {
        ops.add.push((name(k)?, HeaderTemplate::parse(v)?));
    }
    for k in o.remove.iter().filter(|k| usable(k)) {
        ops.remove.push(name(k)?);
    }
    Ok(ops)
}

/// Splices a delegate rule under its root rule (Istio `mergeHTTPRoute`): each delegate match
/// must sit inside one of the root's, and fields the delegate leaves unset come from the root.
/// `None` when no combination of matches is consistent, which drops the rule as Istio does.
fn merge_delegate(root: &HttpRoute, child: &HttpRoute) -> Option<HttpRoute> {
    let mut merged = child.clone();
    if !root.matches.is_empty() {
        let mut out = Vec::new();
        if child.matches.is_empty() {
            out = root.matches.clone();
        } else {
            for r in &root.matches {
                for c in &child.matches {
                    if let Some(m) = merge_match(r, c) {
                        out.push(m);
                    }
                }
            }
            if out.is_empty() {
                return None;
            }
        }
        merged.matches = out;
    }
    if merged.rewrite.is_none() {
        merged.rewrite = root.rewrite.clone();
    }
    if merged.timeout.is_none() {
        merged.timeout = root.timeout.clone();
    }
    if merged.retries.is_none() {
        merged.retries = root.retries.clone();
    }
    if merged.fault.is_none() {
        merged.fault = root.fault.clone();
    }
    if merged.mirror.is_none() && merged.mirrors.is_empty() {
        merged.mirror = root.mirror.clone();
        merged.mirrors = root.mirrors.clone();
        merged.mirror_percentage = root.mirror_percentage;
    }
    if merged.cors_policy.is_none() {
        merged.cors_policy = root.cors_policy.clone();
    }
    if merged.headers.is_none() {
        merged.headers = root.headers.clone();
    }
    if merged.name.is_none() {
        merged.name = root.name.clone();
    }
    Some(merged)
}

fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let mut m = child.clone();
    m.uri = match (&root.uri, &child.uri) {
        (None, c) => c.clone(),
        (r, None) => r.clone(),
        (Some(r), Some(c)) => {
            // The delegate's uri must be inside the root's: same exact, or a longer prefix.
            let inside = match (&r.prefix, &r.exact, &c.prefix, &c.exact) {
                (Some(rp), _, Some(cp), _) => cp.starts_with(rp.as_str()),
                (Some(rp), _, _, Some(ce)) => ce.starts_with(rp.as_str()),
                (_, Some(re), _, Some(ce)) => re == ce,
                _ => r == c,
            };
            if !inside {
                return None;
            }
            Some(c.clone())
        }
    };
    for (field_r, field_c) in [
        (&root.scheme, &mut m.scheme),
        (&root.method, &mut m.method),
        (&root.authority, &mut m.authority),
    ] {
        match (field_r, field_c.as_ref()) {
            (Some(r), Some(c)) if r != c => return None,
            (Some(r), None) => *field_c = Some(r.clone()),
            _ => {}
        }
    }
    for (rm, cm) in [
        (&root.headers, &mut m.headers),
        (&root.query_params, &mut m.query_params),
        (&root.without_headers, &mut m.without_headers),
    ] {
        for (k, v) in rm {
            match cm.get(k) {
                Some(existing) if existing != v => return None,
                _ => {
                    cm.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if root.port.is_some() {
        if m.port.is_some() && m.port != root.port {
            return None;
        }
        m.port = root.port;
    }
    for (k, v) in &root.source_labels {
        m.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    if m.source_namespace.is_none() {
        m.source_namespace = root.source_namespace.clone();
    }
    if m.gateways.is_empty() {
        m.gateways = root.gateways.clone();
    }
    if m.ignore_uri_case.is_none() {
        m.ignore_uri_case = root.ignore_uri_case;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_standard_and_url_alphabets() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert!(decode_base64("a$b").is_none());
    }

    #[test]
    fn delegate_match_must_sit_inside_root() {
        let prefix = |p: &str| HttpMatchRequest {
            uri: Some(StringMatch {
                prefix: Some(p.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(merge_match(&prefix("/api"), &prefix("/api/v1")).is_some());
        assert!(merge_match(&prefix("/api"), &prefix("/web")).is_none());
    }
}
