//! Shared integration-test toolkit: real upstreams, a byte-exact client, raw
//! TCP helpers and a harness for the `switchyard` binary.
//!
//! Every test crate pulls this in with `mod support;` and uses a different
//! subset, hence the blanket allow below.
#![allow(dead_code, unused_imports)]

mod body;
pub mod chaos;
mod client;
pub mod e2e_helpers;
pub mod flaky;
pub mod kube_api;
pub mod load;
mod process;
mod proxy;
pub mod tls;
mod upstream;

pub use body::{BodySender, TestBody, body_channel, body_from_chunks, empty_body, full_body};
pub use client::{Client, Proto, Reply, error_chain, tally};
pub use process::{ProxyProcess, SIGHUP, SIGINT, SIGKILL, SIGTERM, parse_log_addr, strip_ansi};
pub use proxy::{ProxyOptions, TestProxy, service_yaml};
pub use upstream::{Upstream, closed_port, raw_exchange};
