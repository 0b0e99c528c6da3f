//! One request's telemetry, shared by the request body, the response body and the request
//! path. When the last of them lets go — the exchange is over in both directions — it records
//! the Istio metrics and writes the access-log line. One allocation per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::metrics::istio::{DestMetrics, FLAG_TEXTS, ResponseKey};
use crate::metrics::window::Window;
use crate::metrics::{ClusterStats, Registry};

use super::InFlight;
use super::error::Flag;

/// Fields only the access log needs, captured only when it is on.
#[derive(Debug, Default)]
pub struct AccessInfo {
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub authority: String,
    pub forwarded_for: String,
    pub user_agent: String,
    pub request_id: String,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: String,
    pub route_name: String,
    pub service_time_ms: Option<u64>,
    pub details: std::borrow::Cow<'static, str>,
    pub transport_failure: String,
}

pub struct RequestRecord {
    pub start: Instant,
    pub grpc: bool,
    pub request_bytes: AtomicU64,
    pub response_bytes: AtomicU64,
    status: AtomicU32,
    flags: AtomicU8,
    downstream_body_failed: std::sync::atomic::AtomicBool,
    /// gRPC status + 1; 0 when none was seen.
    grpc_status: AtomicU16,
    /// Where the request's metrics go, each set once (the first setting wins). One lock, taken
    /// once or twice per request and never contended, costs a quarter of four `OnceLock`s.
    targets: Mutex<Targets>,
    /// Boxed: the access log is off by default (Istio's too), and inline its fields made the
    /// record ~350 bytes larger, copied on every request as the record is built and moved
    /// into its `Arc`.
    pub access: Option<Box<Mutex<AccessInfo>>>,
    registry: Arc<Registry>,
    sink: Option<Arc<crate::access_log::AccessLog>>,
    _in_flight: InFlight,
}

impl RequestRecord {
    /// Wall-clock time of the request's start, for the access log: derived when a line is
    /// written instead of read from the clock for every request.
    pub fn start_time(&self) -> SystemTime {
        let now = SystemTime::now();
        now.checked_sub(self.start.elapsed()).unwrap_or(now)
    }

    pub(crate) fn new(
        registry: Arc<Registry>,
        sink: Option<Arc<crate::access_log::AccessLog>>,
        grpc: bool,
        in_flight: InFlight,
    ) -> RequestRecord {
        registry.proxy.requests_in_flight.inc();
        RequestRecord {
            start: Instant::now(),
            grpc,
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            status: AtomicU32::new(0),
            flags: AtomicU8::new(0),
            downstream_body_failed: std::sync::atomic::AtomicBool::new(false),
            grpc_status: AtomicU16::new(0),
            targets: Mutex::new(Targets::default()),
            access: sink
                .is_some()
                .then(|| Box::new(Mutex::new(AccessInfo::default()))),
            registry,
            sink,
            _in_flight: in_flight,
        }
    }

    fn targets(&self) -> MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_dest(&self, dest: &Arc<DestMetrics>) {
        self.targets().dest.get_or_insert_with(|| dest.clone());
    }

    /// The route's target: its cluster's stats, its (route, subset) window, and where the
    /// metrics go if no endpoint answers.
    pub fn set_route_target(
        &self,
        stats: &Arc<ClusterStats>,
        window: &Arc<Window>,
        fallback_dest: &Arc<DestMetrics>,
    ) {
        let mut t = self.targets();
        t.cluster.get_or_insert_with(|| stats.clone());
        t.window.get_or_insert_with(|| window.clone());
        t.fallback_dest.get_or_insert_with(|| fallback_dest.clone());
    }

    /// The downstream request body failed mid-stream (malformed chunking, a reset).
    pub fn set_downstream_body_failed(&self) {
        self.downstream_body_failed.store(true, Ordering::Relaxed);
    }

    pub fn downstream_body_failed(&self) -> bool {
        self.downstream_body_failed.load(Ordering::Relaxed)
    }

    /// The response status recorded so far (0 before any).
    pub fn status(&self) -> u16 {
        u16::try_from(self.status.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn set_status(&self, status: u16, flag: Option<Flag>) {
        self.status.store(u32::from(status), Ordering::Relaxed);
        if let Some(f) = flag {
            let mut idx = flag_index(f);
            // An injected delay stays visible next to a timeout, as Envoy logs `DI,UT`.
            if self.flags.load(Ordering::Relaxed) == DELAY_INJECTED && idx == 9 {
                idx = 13;
            }
            self.flags.store(idx, Ordering::Relaxed);
        }
    }

    /// A fault-injection delay was applied (flag `DI` unless a later flag replaces it).
    pub fn set_delay_injected(&self) {
        self.flags.store(DELAY_INJECTED, Ordering::Relaxed);
    }

    /// Istio's `grpc_response_status` is for gRPC requests only: a `grpc-status` on the
    /// answer to any other request is not recorded.
    pub fn set_grpc_status(&self, status: u8) {
        if self.grpc {
            self.grpc_status
                .store(u16::from(status) + 1, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the access-log fields when the access log is on.
    pub fn access(&self, f: impl FnOnce(&mut AccessInfo)) {
        if let Some(a) = &self.access {
            f(&mut a.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn flags_text(&self) -> &'static str {
        FLAG_TEXTS[usize::from(self.flags.load(Ordering::Relaxed)).min(FLAG_TEXTS.len() - 1)]
    }
}

#[derive(Default)]
struct Targets {
    dest: Option<Arc<DestMetrics>>,
    /// The route's cluster when no endpoint answered (fault aborts, timeouts).
    fallback_dest: Option<Arc<DestMetrics>>,
    cluster: Option<Arc<ClusterStats>>,
    window: Option<Arc<Window>>,
}

const DELAY_INJECTED: u8 = 11;

fn flag_index(f: Flag) -> u8 {
    match f {
        Flag::BlockedHost => 0,
        Flag::NoRoute => 1,
        Flag::NoHealthyUpstream => 2,
        Flag::UpstreamConnectFailure => 3,
        Flag::UpstreamConnectFailureRetriesExhausted => 4,
        Flag::UpstreamReset => 5,
        Flag::UpstreamConnectionTermination => 6,
        Flag::DownstreamProtocolError => 7,
        Flag::UpstreamRequestTimeout => 9,
        Flag::FaultInjected => 10,
        Flag::RetriesExhausted => 12,
        Flag::UpstreamConnectFailureOnly => 3,
        Flag::UpstreamOverflow => 14,
        Flag::UpstreamProtocolError => 15,
        Flag::RateLimited => 16,
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.registry.proxy.requests_in_flight.dec();
        let status = self.status.load(Ordering::Relaxed) as u16;
        let elapsed = self.start.elapsed();
        let grpc_status = match self.grpc_status.load(Ordering::Relaxed) {
            0 => None,
            s => u8::try_from(s - 1).ok(),
        };
        let targets = self.targets.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(dest) = targets.dest.as_ref().or(targets.fallback_dest.as_ref()) {
            let key = ResponseKey {
                grpc: self.grpc,
                code: status,
                flags: self.flags.load(Ordering::Relaxed),
                grpc_status,
            };
            let series = dest.series(key);
            series.requests.inc();
            series
                .duration
                .observe(elapsed.as_micros().min(u128::from(u64::MAX)) as u64);
            series
                .request_bytes
                .observe(self.request_bytes.load(Ordering::Relaxed));
            series
                .response_bytes
                .observe(self.response_bytes.load(Ordering::Relaxed));
        }
        if let Some(c) = &targets.cluster {
            c.record_status(status);
        }
        if let Some(w) = &targets.window {
            w.record(self.start, elapsed, status >= 500 || status == 0);
        }
        if let (Some(sink), Some(access)) = (&self.sink, &self.access) {
            let info = access.lock().unwrap_or_else(|p| p.into_inner());
            sink.write(
                &info,
                self,
                status,
                self.flags_text(),
                elapsed.as_millis() as u64,
                grpc_status,
            );
        }
    }
}
