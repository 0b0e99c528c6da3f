//! Per-route traffic policy from a VirtualService rule: timeout, retries and fault injection,
//! compiled into plain values with Istio's defaults filled in (reference §4.6–§4.8).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::config::duration::parse_go_duration;
use crate::config::istio::{HttpFaultInjection, HttpRetry, Percent};

/// Envoy's default retry back-off base interval.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// `retryOn` conditions (Envoy router `x-envoy-retry-on` / `x-envoy-retry-grpc-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const FIVE_XX: RetryOn = RetryOn(1 << 3);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 7);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 8);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 9);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 10);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 12);

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn any(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    fn with(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// One `retryOn` / `x-envoy-retry-on` / `x-envoy-retry-grpc-on` word.
    pub fn from_word(word: &str) -> Option<RetryOn> {
        Some(match word {
            "5xx" => RetryOn::FIVE_XX,
            "gateway-error" => RetryOn::GATEWAY_ERROR,
            "reset" => RetryOn::RESET,
            "reset-before-request" => RetryOn::RESET_BEFORE_REQUEST,
            "connect-failure" => RetryOn::CONNECT_FAILURE,
            "refused-stream" => RetryOn::REFUSED_STREAM,
            "retriable-4xx" => RetryOn::RETRIABLE_4XX,
            "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
            "cancelled" => RetryOn::GRPC_CANCELLED,
            "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
            "internal" => RetryOn::GRPC_INTERNAL,
            "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => RetryOn::GRPC_UNAVAILABLE,
            _ => return None,
        })
    }

    /// Istio's mesh default: connect-failure, refused-stream, unavailable, cancelled,
    /// retriable-status-codes (with no codes).
    pub fn istio_default() -> RetryOn {
        Self::CONNECT_FAILURE
            .with(Self::REFUSED_STREAM)
            .with(Self::GRPC_UNAVAILABLE)
            .with(Self::GRPC_CANCELLED)
            .with(Self::RETRIABLE_STATUS_CODES)
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Istio `attempts`).
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub status_codes: Vec<u16>,
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// What Istio applies when a rule has no `retries` block.
    fn default() -> Self {
        RetryPolicy {
            retries: 2,
            per_try_timeout: None,
            on: RetryOn::istio_default(),
            status_codes: Vec::new(),
            backoff: DEFAULT_BACKOFF,
        }
    }
}

impl RetryPolicy {
    pub fn from_istio(r: Option<&HttpRetry>) -> RetryPolicy {
        let Some(r) = r else {
            return RetryPolicy::default();
        };
        let attempts = r.attempts.map_or(0, |a| a.0.max(0));
        if attempts == 0 {
            // `attempts: 0` means no retry policy at all.
            return RetryPolicy {
                retries: 0,
                ..RetryPolicy::default()
            };
        }
        let mut on = RetryOn::default();
        let mut codes = Vec::new();
        for item in r
            .retry_on
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
        {
            let bit = match RetryOn::from_word(item) {
                Some(bit) => bit,
                None if item.is_empty() => continue,
                None => match item.parse::<u16>() {
                    // Istio moves numeric codes to retriable_status_codes and turns that on.
                    Ok(c) if StatusCode::from_u16(c).is_ok() => {
                        codes.push(c);
                        RetryOn::RETRIABLE_STATUS_CODES
                    }
                    // retriable-headers, envoy-ratelimited, ...: validation warned.
                    _ => continue,
                },
            };
            on = on.with(bit);
        }
        if on == RetryOn::default() {
            on = RetryOn::istio_default();
        }
        RetryPolicy {
            retries: u32::try_from(attempts).unwrap_or(u32::MAX),
            per_try_timeout: r
                .per_try_timeout
                .as_deref()
                .and_then(|d| parse_go_duration(d).ok()),
            on,
            status_codes: codes,
            backoff: r
                .backoff
                .as_deref()
                .and_then(|d| parse_go_duration(d).ok())
                .unwrap_or(DEFAULT_BACKOFF),
        }
    }

    /// The client headers [`amended_by`](Self::amended_by) reads; the proxy strips them.
    pub const CLIENT_HEADERS: [http::HeaderName; 4] = [
        http::HeaderName::from_static("x-envoy-retry-on"),
        http::HeaderName::from_static("x-envoy-retry-grpc-on"),
        http::HeaderName::from_static("x-envoy-retriable-status-codes"),
        http::HeaderName::from_static("x-envoy-max-retries"),
    ];

    /// The policy as a client's `x-envoy-retry-on`, `x-envoy-retry-grpc-on`,
    /// `x-envoy-retriable-status-codes` and `x-envoy-max-retries` headers amend it, as Envoy's
    /// router does: conditions are added to the route's, a retry count replaces it. None when
    /// the request carries none of them (the common case: no copy).
    pub fn amended_by(&self, headers: &http::HeaderMap) -> Option<RetryPolicy> {
        let [retry_on, retry_grpc_on, retriable_codes, max_retries] = &Self::CLIENT_HEADERS;
        let on_words = [headers.get(retry_on), headers.get(retry_grpc_on)];
        let codes = headers.get(retriable_codes);
        let max = headers.get(max_retries);
        if on_words.iter().all(Option::is_none) && codes.is_none() && max.is_none() {
            return None;
        }
        let mut amended = self.clone();
        for v in on_words.into_iter().flatten() {
            for word in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if let Some(bit) = RetryOn::from_word(word) {
                    amended.on = amended.on.with(bit);
                }
            }
        }
        if let Some(v) = codes {
            for code in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if let Ok(c) = code.parse::<u16>()
                    && StatusCode::from_u16(c).is_ok()
                    && !amended.status_codes.contains(&c)
                {
                    amended.status_codes.push(c);
                }
            }
        }
        if let Some(n) = max.and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok()) {
            amended.retries = n;
        }
        Some(amended)
    }

    /// Retry after the connection could not be made (nothing was sent).
    pub fn on_connect_failure(&self) -> bool {
        self.on.any(
            RetryOn::CONNECT_FAILURE
                .with(RetryOn::FIVE_XX)
                .with(RetryOn::GATEWAY_ERROR)
                .with(RetryOn::RESET_BEFORE_REQUEST),
        )
    }

    /// Retry after a reset or a per-try timeout once the request was (maybe) sent.
    pub fn on_reset(&self) -> bool {
        self.on.any(
            RetryOn::RESET
                .with(RetryOn::FIVE_XX)
                .with(RetryOn::GATEWAY_ERROR),
        )
    }

    /// Retry this upstream response (status, and gRPC status when the response carries one).
    /// Whether a response's `grpc-status` can make this policy retry.
    pub fn retries_on_grpc_status(&self) -> bool {
        self.on.any(
            RetryOn::GRPC_CANCELLED
                .with(RetryOn::GRPC_DEADLINE_EXCEEDED)
                .with(RetryOn::GRPC_INTERNAL)
                .with(RetryOn::GRPC_RESOURCE_EXHAUSTED)
                .with(RetryOn::GRPC_UNAVAILABLE),
        )
    }

    pub fn on_response(&self, status: u16, grpc_status: Option<u8>) -> bool {
        let on = self.on;
        (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.contains(RetryOn::RETRIABLE_STATUS_CODES) && self.status_codes.contains(&status))
            || match grpc_status {
                Some(1) => on.contains(RetryOn::GRPC_CANCELLED),
                Some(4) => on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
                Some(8) => on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
                Some(13) => on.contains(RetryOn::GRPC_INTERNAL),
                Some(14) => on.contains(RetryOn::GRPC_UNAVAILABLE),
                _ => false,
            }
    }

    /// Envoy's fully jittered exponential back-off, capped at ten times the base.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let cap = self
            .backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.backoff.saturating_mul(10));
        let ms = cap.as_micros().max(1) as u64;
        Duration::from_micros(random % (ms + 1))
    }
}

/// `fault`: each part applies to its own share of requests, drawn independently.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(Abort, u32)>,
}

#[derive(Debug, Clone, Copy)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status code.
    Grpc(u8),
}

/// Istio's FractionalPercent: `uint32(value * 10000)` per million.
pub const PER_MILLION: u32 = 1_000_000;

pub fn per_million(p: Option<Percent>) -> u32 {
    p.map_or(0, |p| ((p.value.0.clamp(0.0, 100.0)) * 10_000.0) as u32)
}

impl Fault {
    pub fn from_istio(f: Option<&HttpFaultInjection>) -> Option<Fault> {
        let f = f?;
        let delay = f.delay.as_ref().and_then(|d| {
            let fixed = parse_go_duration(d.fixed_delay.as_deref()?).ok()?;
            // A missing percentage means no fault; the deprecated integer `percent` counts.
            let share = match (d.percentage, d.percent) {
                (Some(p), _) => per_million(Some(p)),
                (None, Some(p)) => u32::try_from(p.0.clamp(0, 100)).unwrap_or(0) * 10_000,
                (None, None) => 0,
            };
            Some((fixed, share))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let kind = match (a.http_status, a.grpc_status.as_deref()) {
                (Some(s), _) => Abort::Http(StatusCode::from_u16(u16::try_from(s.0).ok()?).ok()?),
                (None, Some(g)) => Abort::Grpc(grpc_code(g)?),
                (None, None) => return None,
            };
            Some((kind, per_million(a.percentage)))
        });
        (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
    }
}

/// gRPC status names by code, as Istio names them in `abort.grpcStatus`.
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// gRPC status names (and numbers) as Istio accepts them in `abort.grpcStatus`.
pub fn grpc_code(name: &str) -> Option<u8> {
    GRPC_STATUS_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
        .or_else(|| name.parse::<u8>().ok().filter(|n| *n <= 16))
}

/// A shadow destination: `mirror` + `mirrorPercentage`, or one of `mirrors`.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Index into the table's clusters.
    pub cluster: usize,
    /// Share of requests mirrored, per million.
    pub per_million: u32,
}

/// `corsPolicy`, answered as Envoy's CORS filter does.
#[derive(Debug, Clone)]
pub struct Cors {
    pub allow_origins: Vec<crate::route::matcher::StringMatcher>,
    pub allow_methods: Option<http::HeaderValue>,
    pub allow_headers: Option<http::HeaderValue>,
    pub expose_headers: Option<http::HeaderValue>,
    pub max_age: Option<http::HeaderValue>,
    pub allow_credentials: bool,
    /// `unmatchedPreflights`: FORWARD (default) sends preflights that match no origin upstream.
    pub forward_unmatched_preflights: bool,
}

impl Cors {
    pub fn from_istio(c: &crate::config::istio::CorsPolicy) -> Result<Cors, String> {
        use crate::route::matcher::StringMatcher;
        let mut allow_origins = Vec::new();
        for o in &c.allow_origin {
            allow_origins.push(StringMatcher::exact(o));
        }
        for m in &c.allow_origins {
            allow_origins.push(
                StringMatcher::from_istio(
                    m.exact.as_deref(),
                    m.prefix.as_deref(),
                    m.regex.as_deref(),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        let joined = |v: &[String]| -> Result<Option<http::HeaderValue>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            http::HeaderValue::from_str(&v.join(","))
                .map(Some)
                .map_err(|_| format!("invalid header list {v:?}"))
        };
        let max_age = match &c.max_age {
            Some(d) => {
                let secs = parse_go_duration(d).map_err(|e| e.to_string())?.as_secs();
                Some(http::HeaderValue::from(secs))
            }
            None => None,
        };
        Ok(Cors {
            allow_origins,
            allow_methods: joined(&c.allow_methods)?,
            allow_headers: joined(&c.allow_headers)?,
            expose_headers: joined(&c.expose_headers)?,
            max_age,
            allow_credentials: c.allow_credentials.is_some_and(|b| b.0),
            forward_unmatched_preflights: !matches!(
                c.unmatched_preflights,
                Some(crate::config::istio::UnmatchedPreflights::Ignore)
            ),
        })
    }

    pub fn allows(&self, origin: &[u8]) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

/// Everything a matched route asks of the request path besides its destination.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Whole-request timeout including retries; `None` is Istio's default (disabled).
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    /// An EnvoyFilter's local rate limit on this route (checked after routing, before the
    /// upstream; `None` costs nothing).
    pub rate_limit: Option<Arc<crate::ratelimit::RouteLimit>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::istio::{Double, Int};

    fn retry(attempts: i64, on: &str) -> HttpRetry {
        HttpRetry {
            attempts: Some(Int(attempts)),
            retry_on: Some(on.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn istio_default_does_not_retry_a_plain_503() {
        let p = RetryPolicy::default();
        assert_eq!(p.retries, 2);
        assert!(p.on_connect_failure());
        assert!(!p.on_response(503, None));
        assert!(p.on_response(200, Some(14)), "gRPC UNAVAILABLE is retried");
        assert!(!p.on_reset());
    }

    #[test]
    fn retry_on_words_and_codes() {
        let p = RetryPolicy::from_istio(Some(&retry(3, "gateway-error,connect-failure,418")));
        assert_eq!(p.retries, 3);
        assert!(p.on_response(503, None));
        assert!(!p.on_response(500, None));
        assert!(p.on_response(418, None));
        assert!(p.on_reset(), "gateway-error covers resets");
        let p = RetryPolicy::from_istio(Some(&retry(0, "")));
        assert_eq!(p.retries, 0);
        let p = RetryPolicy::from_istio(Some(&retry(2, "retriable-4xx")));
        assert!(p.on_response(409, None) && !p.on_response(404, None));
    }

    #[test]
    fn backoff_is_jittered_and_capped_at_ten_times_base() {
        let p = RetryPolicy::default();
        for r in [0u64, 1, 12_345, u64::MAX] {
            assert!(p.backoff(30, r) <= Duration::from_millis(250));
        }
        assert_eq!(p.backoff(0, 0), Duration::ZERO);
    }

    #[test]
    fn fault_percentages_follow_istio() {
        use crate::config::istio::{FaultAbort, FaultDelay};
        let f = HttpFaultInjection {
            delay: Some(FaultDelay {
                fixed_delay: Some("7s".into()),
                percent: Some(Int(100)),
                ..Default::default()
            }),
            abort: Some(FaultAbort {
                http_status: Some(Int(555)),
                percentage: Some(Percent { value: Double(0.1) }),
                ..Default::default()
            }),
        };
        let f = Fault::from_istio(Some(&f)).expect("fault");
        assert_eq!(f.delay.map(|d| d.1), Some(PER_MILLION));
        assert_eq!(f.abort.map(|a| a.1), Some(1_000));
        let no_pct = HttpFaultInjection {
            delay: Some(FaultDelay {
                fixed_delay: Some("1s".into()),
                ..Default::default()
            }),
            abort: None,
        };
        assert_eq!(
            Fault::from_istio(Some(&no_pct))
                .and_then(|f| f.delay)
                .map(|d| d.1),
            Some(0),
            "a missing percentage means no fault"
        );
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
    }
}
