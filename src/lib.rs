//! switchyard: Istio VirtualService / DestinationRule canary routing in a standalone sidecar proxy.
#![forbid(unsafe_code)]

pub mod config;
pub mod route;
pub mod upstream;
