//! The compiled, immutable routing table and the one function every request goes through.
//! `RouteTable::route` is pure and synchronous and takes its random value as an argument, so
//! the proxy, the tests, `explain`/`simulate` and the benches all run exactly the same code.

pub mod action;
pub mod compile;
pub mod host;
pub mod matcher;
pub mod path;
pub mod policy;
pub mod sticky;
pub mod weighted;

use std::sync::Arc;
use std::time::SystemTime;

use crate::metrics::RouteStats;
use crate::metrics::istio::DestMetrics;
use crate::metrics::window::Window;
use crate::upstream::Cluster;
pub use action::{DirectResponse, HeaderOps, Redirect, Rewrite};
pub use compile::{CompileError, CompileOptions, OutboundPolicy};
use host::HostIndex;
pub use matcher::{HeaderMemo, RequestMatch, RequestView};
use weighted::WeightedPick;

pub struct RouteTable {
    /// Bumped each time a table is published.
    pub version: u64,
    /// SHA-256 of the config files it was built from.
    pub source_hash: String,
    pub loaded_at: SystemTime,
    pub outbound_policy: OutboundPolicy,
    pub(crate) vhosts: Vec<VirtualHost>,
    pub(crate) index: HostIndex<usize>,
    pub clusters: Vec<Arc<Cluster>>,
    /// Keeps DNS refreshes alive exactly as long as the table.
    pub(crate) dns_task: Option<AbortOnDrop>,
}

pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("version", &self.version)
            .field("vhosts", &self.vhosts.len())
            .field("clusters", &self.clusters.len())
            .finish()
    }
}

/// The routes for one set of domains: a VirtualService, or a ServiceEntry host's default route.
pub struct VirtualHost {
    /// `VirtualService/namespace/name`, or `ServiceEntry/namespace/name` for a default route.
    pub name: String,
    /// Every name this virtual host answers to (FQDN first, then aliases).
    pub domains: Vec<String>,
    pub routes: Box<[Route]>,
    /// Series for requests answered without an endpoint (404 NR, redirects, direct responses).
    pub metrics: Arc<DestMetrics>,
}

/// One Envoy route: an Istio `http[]` rule contributes one per `match` block.
pub struct Route {
    /// `http[].name`, plus `.match[].name` when set (Envoy's route name); may be empty.
    pub name: String,
    /// Index of the rule in the VirtualService's `http` list (delegates: in the root's).
    pub rule_index: usize,
    /// Index of the match block inside the rule, when the rule has any.
    pub match_index: Option<usize>,
    pub matches: RequestMatch,
    pub action: Action,
    /// Rule-level header operations.
    pub request_headers: HeaderOps,
    /// Shared so a request can keep it past the table guard without copying.
    pub response_headers: Option<Arc<HeaderOps>>,
    pub rewrite: Option<Rewrite>,
    /// `switchyard_route_decisions_total` for this route.
    pub stats: Arc<RouteStats>,
    /// Timeout, retries and faults of the rule (shared by its match blocks).
    pub policy: Arc<policy::RoutePolicy>,
    /// A sticky key (`switchyard.io/sticky`) replaces the random draw when the request has one.
    pub sticky: Option<Box<sticky::Sticky>>,
}

pub enum Action {
    Forward(WeightedPick<Target>),
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// One weighted destination of a route.
pub struct Target {
    /// Index into `RouteTable::clusters`.
    pub cluster: usize,
    pub request_headers: HeaderOps,
    pub response_headers: Option<Arc<HeaderOps>>,
    /// A destination without `port` on a service with several: the cluster of each service
    /// port, picked by the port the request addressed (Istio builds the cluster from the
    /// listener the request arrived on). Empty otherwise; `cluster` is then the only one, and
    /// the fallback for a port the service does not have.
    pub by_port: Box<[(u16, usize)]>,
    /// The destination's own authority rewrite (a `Host`/`:authority` key in its request
    /// headers); a route-level one wins.
    pub authority: Option<http::HeaderValue>,
    /// Success and latency of this route's share to this subset (`/stats/subsets`).
    pub window: Arc<Window>,
}

/// What to do with one request.
pub enum Decision<'t> {
    Forward {
        vhost: &'t VirtualHost,
        route: &'t Route,
        target: &'t Target,
        cluster: &'t Arc<Cluster>,
    },
    Redirect {
        vhost: &'t VirtualHost,
        route: &'t Route,
        redirect: &'t Redirect,
    },
    Direct {
        vhost: &'t VirtualHost,
        route: &'t Route,
        response: &'t DirectResponse,
    },
    /// A virtual host matched but none of its routes did: 404 `NR`.
    NoRoute { vhost: &'t VirtualHost },
    /// No resource names this host: 502 under REGISTRY_ONLY, passthrough under ALLOW_ANY.
    UnknownHost,
}

impl Target {
    /// The cluster a request addressed to `port` goes to.
    pub fn cluster_at(&self, port: u16) -> usize {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(self.cluster, |&(_, c)| c)
    }
}

impl RouteTable {
    /// The virtual host for a lower-cased, port-less host name.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.index.get(host).map(|&i| &self.vhosts[i])
    }

    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }

    /// Routes one request. `host` is the request's host, lower-cased, without port; `random`
    /// is a uniform draw used only when the matched route splits traffic by weight.
    pub fn route<'t>(&'t self, host: &str, req: &RequestView<'_>, random: u64) -> Decision<'t> {
        let Some(vhost) = self.virtual_host(host) else {
            return Decision::UnknownHost;
        };
        let mut memo = HeaderMemo::default();
        let Some(route) = vhost
            .routes
            .iter()
            .find(|r| r.matches.matches_memo(req, &mut memo))
        else {
            return Decision::NoRoute { vhost };
        };
        match &route.action {
            Action::Forward(pick) => {
                let target = match route
                    .sticky
                    .as_deref()
                    .and_then(|s| s.pick(req.headers, req.query))
                {
                    Some(i) => pick.get(i),
                    None => pick.pick(random),
                };
                Decision::Forward {
                    vhost,
                    route,
                    target,
                    cluster: &self.clusters[target.cluster_at(req.port)],
                }
            }
            Action::Redirect(redirect) => Decision::Redirect {
                vhost,
                route,
                redirect,
            },
            Action::Direct(response) => Decision::Direct {
                vhost,
                route,
                response,
            },
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name == name)
    }
}
