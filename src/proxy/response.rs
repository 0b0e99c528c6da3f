//! The response on its way back: an upgrade's tunnel joined on a 101, hop-by-hop fields
//! dropped (and a Content-Length that Transfer-Encoding overrides), Envoy's `server` and
//! `x-envoy-upstream-service-time`, the route's and destination's response header
//! operations, a generated consistent-hash cookie, the CORS fields, and the body wrapped to
//! hold the connection, the metrics record and the route's deadline until its last byte.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use super::body::{self, ProxyBody};
use super::decide::{Plan, ResponseOps};
use super::send::Sent;
use super::{Ctx, cors, headers};
use crate::downstream::OnUpgrade;
use crate::route::action::HeaderOps;

/// The client's response from the upstream's.
#[inline]
pub(super) fn finish(
    cx: &Ctx<'_>,
    sent: Sent,
    plan: &Plan,
    down_upgrade: Option<OnUpgrade>,
    cors_origin: Option<HeaderValue>,
    set_cookie: Option<HeaderValue>,
    deadline: Option<tokio::time::Instant>,
) -> Response<ProxyBody> {
    let Sent {
        mut resp,
        release,
        active,
        started,
    } = sent;
    let record = cx.record;
    let service_time = started.elapsed();
    // The gRPC status, if any, was recorded where the response was judged for retry.
    record.set_status(resp.status().as_u16(), None);
    record.access(|a| {
        a.service_time_ms = Some(service_time.as_millis() as u64);
        a.details = "via_upstream".into();
    });

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(down) = down_upgrade
    {
        let up = hyper::upgrade::on(&mut resp);
        let record = record.clone();
        tokio::spawn(async move {
            if let (Some(mut down), Ok(up)) = (down.upgraded().await, up.await) {
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
            drop(active);
            drop(record);
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, ProxyBody::empty());
    }

    let (mut parts, incoming) = resp.into_parts();
    let present = headers::Present::scan(&parts.headers);
    // TE.CL from the upstream: the codec decoded the chunks, so the length no longer
    // describes the body we send (RFC 9112 §6.3: Transfer-Encoding wins).
    if present.transfer_encoding() {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(&mut parts.headers, present, false);
    parts.headers.insert(
        headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
        headers::number(service_time.as_millis() as u64),
    );
    parts
        .headers
        .insert(header::SERVER, HeaderValue::from_static("envoy"));
    if let Some(ResponseOps {
        target: target_ops,
        route: route_ops,
        weighted: several,
    }) = &plan.response_ops
    {
        let apply = |ops: &Option<Arc<HeaderOps>>, h: &mut http::HeaderMap| {
            if let Some(o) = ops {
                o.apply(h, &cx.fmt);
            }
        };
        if *several {
            apply(target_ops, &mut parts.headers);
            apply(route_ops, &mut parts.headers);
        } else {
            apply(route_ops, &mut parts.headers);
            apply(target_ops, &mut parts.headers);
        }
    }
    if let Some(cookie) = set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    cors::expose(plan.policy().cors.as_ref(), cors_origin, &mut parts.headers);
    parts.version = Version::HTTP_11;
    let cluster = plan.cluster.as_ref();
    Response::from_parts(
        parts,
        ProxyBody::upstream(
            incoming,
            release,
            active,
            record.clone(),
            deadline.map(|at| body::BodyDeadline {
                at,
                stats: cluster.map(|c| c.stats.clone()),
            }),
        ),
    )
}
