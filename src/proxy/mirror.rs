//! Mirroring: fire-and-forget copies to the shadow clusters, never awaited, never retried,
//! bounded in number (overflow is dropped and counted). A body of unknown size is copied as
//! the attempts pull it; one over the buffer limit cuts its copies short, as in Envoy.

use std::sync::Arc;

use http::header;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use rand::RngExt;

use super::body::RequestBody;
use super::replay::Template;
use super::{Proxy, draw_per_million};
use crate::upstream::Cluster;

/// Sends each shadow cluster its share of copies of `req`.
pub(super) fn mirror(
    proxy: &Proxy,
    mirrors: &[(Arc<Cluster>, u32)],
    req: &Request<RequestBody>,
    template: Option<&Template>,
    authority: &Authority,
) {
    use http_body::Body as _;
    let copy = || match template {
        Some(Template::Buffered { body, trailers }) => {
            Some(RequestBody::buffered(body.clone(), trailers.clone(), None))
        }
        Some(Template::Kept(keep)) => keep.follow().map(RequestBody::kept),
        None if req.body().is_end_stream() => {
            Some(RequestBody::buffered(bytes::Bytes::new(), None, None))
        }
        None => None,
    };
    for (cluster, share) in mirrors {
        if draw_per_million() >= *share {
            continue;
        }
        let stats = &proxy.metrics.proxy;
        let Some(body) = copy() else {
            stats.mirror_dropped.inc();
            continue;
        };
        let Ok(permit) = proxy.mirror_slots.clone().try_acquire_owned() else {
            stats.mirror_dropped.inc();
            continue;
        };
        let Some(endpoint) = cluster.pick(rand::rng().random(), &[]) else {
            stats.mirror_dropped.inc();
            continue;
        };
        stats.mirror_sent.inc();
        let mut shadow = Request::new(body);
        *shadow.method_mut() = req.method().clone();
        *shadow.headers_mut() = req.headers().clone();
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if cluster.h2 {
            let mut p = http::uri::Parts::default();
            p.scheme = Some(Scheme::HTTP);
            p.authority = Some(authority.clone());
            p.path_and_query = Some(pq);
            match Uri::from_parts(p) {
                Ok(u) => *shadow.uri_mut() = u,
                Err(_) => continue,
            }
            *shadow.version_mut() = Version::HTTP_2;
            shadow.headers_mut().remove(header::HOST);
        } else {
            *shadow.uri_mut() = Uri::from(pq);
            *shadow.version_mut() = Version::HTTP_11;
        }
        let timeout = cluster.connect_timeout;
        let stats = cluster.stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _active = endpoint.begin();
            let (head, body) = shadow.into_parts();
            if let Ok((resp, release)) =
                endpoint.pool.send(&head, body, timeout, Some(&stats)).await
            {
                use http_body_util::BodyExt as _;
                // Read the answer to the end so the connection can be reused.
                if resp.into_body().collect().await.is_ok()
                    && let Some(r) = release
                {
                    r.release();
                }
            }
        });
    }
}
