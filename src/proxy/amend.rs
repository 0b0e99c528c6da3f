//! Per-request policy: the route's retries and timeouts as the client amends them with
//! Envoy's `x-envoy-*` request headers (Envoy honours them on internal requests, which a
//! sidecar's outbound requests are). Those headers are for us and do not go upstream; the
//! timeout that applies is announced to the upstream in `x-envoy-expected-rq-timeout-ms`.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::headers;
use crate::route::policy::{RetryPolicy, RoutePolicy};

/// The retry policy and timeouts this request is sent with.
pub(super) struct Limits<'a> {
    pub retry: Cow<'a, RetryPolicy>,
    /// The whole request's timeout, retries included.
    pub timeout: Option<Duration>,
    pub per_try: Option<Duration>,
}

/// The route's policy as amended by the request's headers, which are removed.
#[inline]
pub(super) fn limits<'a>(policy: &'a RoutePolicy, headers: &mut HeaderMap) -> Limits<'a> {
    let mut limits = Limits {
        retry: Cow::Borrowed(&policy.retry),
        timeout: policy.timeout,
        per_try: policy.retry.per_try_timeout,
    };
    if headers::has_envoy_controls(headers) {
        if let Some(amended) = policy.retry.amended_by(headers) {
            limits.per_try = amended.per_try_timeout;
            limits.retry = Cow::Owned(amended);
            for name in RetryPolicy::CLIENT_HEADERS {
                headers.remove(name);
            }
        }
        if let Some(ms) = header_ms(headers, &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS) {
            limits.timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(ms) = header_ms(headers, &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS) {
            limits.per_try = (ms > 0).then(|| Duration::from_millis(ms));
        }
        headers.remove(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS);
        headers.remove(&X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS);
    }
    if let Some(t) = limits.timeout {
        headers.insert(
            X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(),
            headers::number(t.as_millis() as u64),
        );
    }
    limits
}

/// The request headers a client may use to set timeouts.
static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

fn header_ms(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}
