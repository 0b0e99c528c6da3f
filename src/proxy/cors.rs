//! Envoy's CORS filter: a preflight from an allowed origin is answered here (and an unmatched
//! one too, unless the policy forwards it); an allowed origin's request gets the
//! `access-control-*` fields on the upstream's response.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response};

use super::Stop;
use super::body::ProxyBody;
use super::record::RequestRecord;
use crate::route::policy::Cors;

/// Answers a preflight, or returns the allowed origin to echo on the response.
#[inline]
pub(super) fn check(
    cors: Option<&Cors>,
    method: &Method,
    headers: &HeaderMap,
    record: &RequestRecord,
) -> Result<Option<HeaderValue>, Stop> {
    let Some(cors) = cors else {
        return Ok(None);
    };
    let Some(origin) = headers.get(header::ORIGIN).cloned() else {
        return Ok(None);
    };
    let allowed = cors.allows(origin.as_bytes());
    let preflight =
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && allowed {
        return Err(Stop::Reply(Box::new(preflight_reply(cors, origin, record))));
    }
    if preflight && !cors.forward_unmatched_preflights {
        let mut resp = Response::new(ProxyBody::empty());
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("envoy"));
        record.set_status(200, None);
        return Err(Stop::Reply(Box::new(resp)));
    }
    Ok(allowed.then_some(origin))
}

/// The `access-control-*` fields for an allowed origin's actual (not preflight) request.
#[inline]
pub(super) fn expose(cors: Option<&Cors>, origin: Option<HeaderValue>, h: &mut HeaderMap) {
    let (Some(origin), Some(cors)) = (origin, cors) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(v) = &cors.expose_headers {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Envoy's CORS filter answering a preflight whose origin is allowed.
fn preflight_reply(
    cors: &Cors,
    origin: HeaderValue,
    record: &RequestRecord,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Some(v) = &cors.allow_methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
    }
    if let Some(v) = &cors.allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    if let Some(v) = &cors.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(header::SERVER, HeaderValue::from_static("envoy"));
    record.set_status(200, None);
    resp
}
