//! Replies a route gives without an upstream: Istio's `redirect` and `directResponse`,
//! with the route's response header operations applied, recorded as Envoy logs them
//! (`direct_response`).

use http::Response;
use http::header::{self, HeaderValue};

use super::Ctx;
use super::authority::Addressed;
use super::body::ProxyBody;
use crate::route::{DirectResponse, Redirect, Route};

/// The redirect a route answers with.
pub(super) fn redirect(
    cx: &Ctx<'_>,
    route: &Route,
    redirect: &Redirect,
    to: &Addressed,
) -> Response<ProxyBody> {
    route.stats.decisions.inc();
    cx.record.set_status(redirect.code.as_u16(), None);
    cx.record.access(|a| {
        a.route_name = route.name.clone();
        a.details = "direct_response".into();
    });
    let location = redirect.location("http", to.authority.as_str(), to.path(), to.query());
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = redirect.code;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(ops) = &route.response_headers {
        ops.apply(resp.headers_mut(), &cx.fmt);
    }
    resp
}

/// The fixed response a route answers with.
pub(super) fn direct(
    cx: &Ctx<'_>,
    route: &Route,
    response: &DirectResponse,
) -> Response<ProxyBody> {
    route.stats.decisions.inc();
    cx.record.set_status(response.status.as_u16(), None);
    cx.record.response_bytes.store(
        response.body.as_ref().map_or(0, |b| b.len() as u64),
        std::sync::atomic::Ordering::Relaxed,
    );
    cx.record.access(|a| {
        a.route_name = route.name.clone();
        a.details = "direct_response".into();
    });
    let mut resp = Response::new(match &response.body {
        Some(b) => ProxyBody::full(b.clone()),
        None => ProxyBody::empty(),
    });
    *resp.status_mut() = response.status;
    if response.body.is_some() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if let Some(ops) = &route.response_headers {
        ops.apply(resp.headers_mut(), &cx.fmt);
    }
    resp
}
