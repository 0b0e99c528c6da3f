//! Original destination: ALLOW_ANY passthrough (no cluster) and PASSTHROUGH or `resolution:
//! NONE` clusters send a request to the address it names instead of to an endpoint the
//! cluster picks, but never to one of our own listeners (that would loop forever).

use std::sync::Arc;

use http::uri::Authority;

use super::Proxy;
use super::error::LocalReply;
use crate::route::host::split_authority;
use crate::upstream::{Cluster, Discovery, Endpoint};

/// The endpoint the request names when its cluster does not pick one; `None` for a cluster
/// that does.
pub(super) async fn fixed(
    proxy: &Proxy,
    cluster: Option<&Cluster>,
    authority: &Authority,
) -> Result<Option<Arc<Endpoint>>, LocalReply> {
    if let Some(c) = cluster
        && !matches!(c.discovery, Discovery::OriginalDst)
    {
        return Ok(None);
    }
    // Boxed: DNS lookups make a large future, and only PASSTHROUGH clusters and ALLOW_ANY
    // traffic need one.
    Box::pin(original_destination(proxy, authority.as_str(), cluster))
        .await
        .map(Some)
}

/// The address the request names. A cluster's port decides the default port and the
/// protocol (HTTP/2 for an HTTP2 or GRPC port), as for its other endpoints.
async fn original_destination(
    proxy: &Proxy,
    authority: &str,
    cluster: Option<&Cluster>,
) -> Result<Arc<Endpoint>, LocalReply> {
    let (host, port) = split_authority(authority);
    let port = port.unwrap_or(cluster.map_or(80, |c| c.port));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Some(addr) = crate::upstream::dns::resolve_passthrough(host, port).await else {
        return Err(LocalReply::no_healthy_upstream());
    };
    let is_self = proxy.own_addrs.iter().any(|own| {
        own.port() == addr.port()
            && (own.ip() == addr.ip()
                || addr.ip().is_loopback()
                || addr.ip().is_unspecified()
                || own.ip().is_unspecified())
    });
    if is_self {
        tracing::warn!(%addr, "refused to forward a request to our own listener");
        return Err(LocalReply::blocked_host());
    }
    Ok(Arc::new(Endpoint {
        addr,
        weight: 1,
        labels: Default::default(),
        workload_name: None,
        active: Default::default(),
        pool: match cluster {
            Some(c) => proxy.pools.get_with(addr, c.h2, &c.conn),
            None => proxy.pools.get(addr, false),
        },
        // A named service's traffic is its own (Istio labels an ORIGINAL_DST cluster of a
        // ServiceEntry with that service); only ALLOW_ANY traffic is PassthroughCluster.
        metrics: match cluster {
            Some(c) => c.no_endpoint.clone(),
            None => proxy.passthrough.clone(),
        },
        outlier: Default::default(),
    }))
}
