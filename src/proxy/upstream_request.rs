//! The upstream request's head, made from the client's: hop-by-hop fields dropped, a request
//! id and `x-forwarded-proto` ensured, the path and authority rewritten as the route says (the
//! client's path kept in `x-envoy-original-path`), the URI in the form the upstream protocol
//! wants (absolute for HTTP/2, origin-form for HTTP/1.1) and Host set to the upstream authority.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Uri, Version};

use super::authority::Addressed;
use super::decide::Plan;
use super::error::LocalReply;
use super::headers;
use super::record::RequestRecord;
use crate::downstream::OnUpgrade;
use crate::upstream::Endpoint;

/// What the later stages need to know about the upstream request besides its head.
pub(super) struct Upstream {
    /// The authority the upstream is addressed by (rewritten or the client's).
    pub authority: Authority,
    /// An HTTP/1.1 Upgrade: it needs an HTTP/1.1 connection whatever the cluster speaks.
    pub upgrade: bool,
    /// The client's side of an upgrade, joined to the upstream's on a 101.
    pub down_upgrade: Option<OnUpgrade>,
    /// The endpoint the request names, when its cluster does not pick (`destination`).
    pub fixed: Option<Arc<Endpoint>>,
}

/// Rewrites the client's head into the upstream request's.
#[inline]
pub(super) fn prepare(
    head: &mut http::request::Parts,
    to: Addressed,
    plan: &Plan,
    record: &RequestRecord,
) -> Result<Upstream, LocalReply> {
    let upgrade = to.upgrade;
    let down_upgrade = if upgrade {
        head.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    let h = &mut head.headers;
    let present = headers::Present::scan(h);
    headers::strip_hop_by_hop(h, present, upgrade);
    headers::ensure_request_id(h, present);
    headers::ensure_forwarded_proto(h, present, "http");
    record.access(|a| {
        if let Some(id) = h.get(&headers::X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            a.request_id = id.to_string();
        }
    });
    // The new path-and-query, when it is not the client's: built while `to` still lends its
    // path and query, before it gives up the URI they are cut from.
    let rebuilt = (plan.new_path.is_some() || to.normalized()).then(|| {
        let p = plan.new_path.as_deref().unwrap_or(to.path());
        match to.query() {
            Some(q) => format!("{p}?{q}"),
            None => p.to_string(),
        }
    });
    let (client_authority, original) = to.into_parts();
    let pq = match rebuilt {
        Some(text) => {
            if plan.new_path.is_some()
                && let Some(orig) = &original
                && let Ok(v) = HeaderValue::from_str(orig.as_str())
            {
                h.insert(headers::X_ENVOY_ORIGINAL_PATH.clone(), v);
            }
            PathAndQuery::try_from(text).map_err(|_| LocalReply::bad_request("invalid path"))?
        }
        None => original.unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let authority: Authority = match &plan.new_authority {
        Some(a) => Authority::try_from(a.as_bytes())
            .map_err(|_| LocalReply::bad_request("invalid authority"))?,
        None => client_authority,
    };
    let h2 = plan.cluster.as_ref().is_some_and(|c| c.h2) && !upgrade;
    if h2 {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(pq);
        head.uri = Uri::from_parts(parts).map_err(|_| LocalReply::bad_request("invalid uri"))?;
        head.version = Version::HTTP_2;
        head.headers.remove(header::HOST);
    } else {
        head.uri = Uri::from(pq);
        head.version = Version::HTTP_11;
        // Usually the client's Host already says it (no rewrite, origin-form).
        let host = authority.as_str().as_bytes();
        if head.headers.get(header::HOST).map(|v| v.as_bytes()) != Some(host)
            && let Ok(v) = HeaderValue::from_maybe_shared(crate::recycle::copy(host))
        {
            head.headers.insert(header::HOST, v);
        }
    }
    Ok(Upstream {
        authority,
        upgrade,
        down_upgrade,
        fixed: None,
    })
}
