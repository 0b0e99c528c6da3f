//! The route decision: the table's answer for this request, taken under the table guard and
//! turned into an owned [`Plan`] (the guard is dropped before anything awaits), or a reply of
//! the proxy's own: blocked host, no route, redirect, direct response. The matched route's and
//! destination's request header operations are applied here, while the route is at hand.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use rand::RngExt;

use super::authority::Addressed;
use super::error::LocalReply;
use super::{Ctx, Stop, local};
use crate::route::action::HeaderOps;
use crate::route::policy::RoutePolicy;
use crate::route::{Decision, OutboundPolicy, RequestView};
use crate::upstream::Cluster;

/// What routing decided, owned, so the table guard can be released before any await.
pub(super) struct Plan {
    pub cluster: Option<Arc<Cluster>>,
    pub new_path: Option<String>,
    pub new_authority: Option<HeaderValue>,
    pub response_ops: Option<ResponseOps>,
    /// The matched route's timeout, retries and faults; `None`: Istio's defaults.
    policy: Option<Arc<RoutePolicy>>,
    /// Shadow clusters with their share per million (empty almost always).
    pub mirrors: Vec<(Arc<Cluster>, u32)>,
}

/// Response header operations of the matched route and destination, applied once the
/// upstream answers.
pub(super) struct ResponseOps {
    pub target: Option<Arc<HeaderOps>>,
    pub route: Option<Arc<HeaderOps>>,
    /// Several weighted destinations: Envoy applies the destination's ops first.
    pub weighted: bool,
}

/// Routes the request: a plan to forward it, or the reply that ends it here.
#[inline]
pub(super) fn decide(
    cx: &Ctx<'_>,
    method: &Method,
    headers: &mut HeaderMap,
    to: &Addressed,
) -> Result<Plan, Stop> {
    let (proxy, record) = (cx.proxy, cx.record);
    let table = proxy.table.load();
    let host = to.host();
    let view = RequestView {
        method: method.as_str(),
        scheme: "http",
        authority: to.authority.as_str(),
        port: to.port,
        path: to.path(),
        query: to.query(),
        headers,
    };
    let random: u64 = rand::rng().random();
    match table.route(&host, &view, random) {
        Decision::UnknownHost => match table.outbound_policy {
            OutboundPolicy::RegistryOnly => {
                record.set_dest(&proxy.blackhole);
                record.access(|a| a.upstream_cluster = "BlackHoleCluster".into());
                Err(LocalReply::blocked_host().into())
            }
            OutboundPolicy::AllowAny => {
                record.set_dest(&proxy.passthrough);
                record.access(|a| a.upstream_cluster = "PassthroughCluster".into());
                Ok(Plan::passthrough())
            }
        },
        Decision::NoRoute { vhost } => {
            record.set_dest(&vhost.metrics);
            Err(LocalReply::no_route().into())
        }
        Decision::Redirect {
            vhost,
            route,
            redirect,
        } => {
            record.set_dest(&vhost.metrics);
            Err(Stop::Reply(Box::new(local::redirect(
                cx, route, redirect, to,
            ))))
        }
        Decision::Direct {
            vhost,
            route,
            response,
        } => {
            record.set_dest(&vhost.metrics);
            Err(Stop::Reply(Box::new(local::direct(cx, route, response))))
        }
        Decision::Forward {
            route,
            target,
            cluster,
            ..
        } => {
            route.stats.decisions.inc();
            record.set_route_target(&cluster.stats, &target.window, &cluster.no_endpoint);
            record.access(|a| {
                a.route_name = route.name.clone();
                a.upstream_cluster = cluster.name.clone();
            });
            let several = matches!(&route.action, crate::route::Action::Forward(p) if p.len() > 1);
            // Envoy applies weighted-cluster ops before route ops, and a lone
            // destination's after them (reference §4.5).
            if several {
                target.request_headers.apply(headers, &cx.fmt);
                route.request_headers.apply(headers, &cx.fmt);
            } else {
                route.request_headers.apply(headers, &cx.fmt);
                target.request_headers.apply(headers, &cx.fmt);
            }
            let mut new_path = None;
            let mut new_authority = None;
            if let Some(rw) = &route.rewrite {
                new_path = rw.rewrite_path(to.path());
                new_authority = rw.authority.clone();
            }
            if new_authority.is_none() {
                new_authority = target.authority.clone();
            }
            let response_ops = match (&target.response_headers, &route.response_headers) {
                (None, None) => None,
                (t, r) => Some(ResponseOps {
                    target: t.clone(),
                    route: r.clone(),
                    weighted: several,
                }),
            };
            Ok(Plan {
                cluster: Some(cluster.clone()),
                new_path,
                new_authority,
                response_ops,
                policy: Some(route.policy.clone()),
                mirrors: route
                    .policy
                    .mirrors
                    .iter()
                    .map(|m| (table.clusters[m.cluster].clone(), m.per_million))
                    .collect(),
            })
        }
    }
}

// === impl Plan ===

impl Plan {
    fn passthrough() -> Plan {
        Plan {
            cluster: None,
            new_path: None,
            new_authority: None,
            response_ops: None,
            policy: None,
            mirrors: Vec::new(),
        }
    }

    /// The matched route's policy, or Istio's defaults.
    pub fn policy(&self) -> &RoutePolicy {
        self.policy.as_deref().unwrap_or(&DEFAULT_ROUTE_POLICY)
    }
}

/// The policy of a route that sets none (Istio's defaults), shared instead of built per
/// request.
static DEFAULT_ROUTE_POLICY: std::sync::LazyLock<RoutePolicy> =
    std::sync::LazyLock::new(RoutePolicy::default);
