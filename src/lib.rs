//! switchyard: Istio VirtualService / DestinationRule canary routing in a standalone sidecar proxy.
//!
//! Data flows one way: YAML files → typed resources (`config`) → validated → compiled into an
//! immutable `route::RouteTable` → published through one `ArcSwap` (`reload`) → read lock-free
//! by every request (`proxy`), which forwards to `upstream` endpoints.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod deadline;
pub mod downstream;
pub mod explain;
pub mod live;
pub mod metrics;
pub mod names;
pub mod proxy;
pub mod ratelimit;
pub mod recycle;
pub mod reload;
pub mod rollout;
pub mod route;
pub mod serve;
pub mod simulate;
pub mod source;
pub mod upstream;
pub mod watch;
pub mod wire;

pub use config::{Diagnostic, LoadOptions, ProxyIdentity, Resources, Severity, load};
pub use reload::{ReloadContext, ReloadOutcome, Reloader};
pub use route::{Decision, OutboundPolicy, RequestView, RouteTable};
