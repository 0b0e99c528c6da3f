//! Envoy's local rate limit filter: the route's bucket (from an EnvoyFilter), checked after
//! routing and before anything goes upstream. A limited request is answered here with the
//! configured status (429 by default), body `local_rate_limited` and headers, flag `RL`; it is
//! never sent and never retried. A route without a limit costs one `None` check.

use http::{HeaderMap, Response, StatusCode};

use super::body::ProxyBody;
use super::error::Flag;
use super::record::RequestRecord;
use super::{Stop, draw_per_million};
use crate::ratelimit::{RouteLimit, Verdict};

#[inline]
pub(super) fn check(
    limit: Option<&RouteLimit>,
    headers: &HeaderMap,
    cluster: Option<&str>,
    port: u16,
    record: &RequestRecord,
) -> Result<(), Stop> {
    let Some(limit) = limit else {
        return Ok(());
    };
    match limit.check(
        headers,
        cluster,
        port,
        draw_per_million(),
        draw_per_million(),
    ) {
        Verdict::Pass => Ok(()),
        Verdict::Limited => {
            let mut resp = Response::new(ProxyBody::full(bytes::Bytes::from_static(
                b"local_rate_limited",
            )));
            *resp.status_mut() = limit.def.status;
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            for (k, v) in &limit.def.headers {
                h.insert(k.clone(), v.clone());
            }
            let status = resp.status().as_u16();
            record.set_status(
                if status == 0 {
                    StatusCode::TOO_MANY_REQUESTS.as_u16()
                } else {
                    status
                },
                Some(Flag::RateLimited),
            );
            record.access(|a| a.details = "local_rate_limited".into());
            Err(Stop::Reply(Box::new(resp)))
        }
    }
}
