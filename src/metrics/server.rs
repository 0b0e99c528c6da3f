//! The read-only metrics listener (`--metrics`, default 0.0.0.0:15090), as an Istio sidecar
//! exposes it for scraping: `/stats/prometheus`, `/stats/subsets`, and `/healthz/ready`
//! (the path Istio's 15021 probe answers). Nothing here changes state, so it can face the
//! network where the admin listener must not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::Registry;
use crate::downstream::DrainState;

/// A query parameter's value, percent-decoded.
fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    let raw = q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Prometheus text exposition, as Envoy's `/stats/prometheus` serves it.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers the paths both the admin and the metrics listener serve; `None` for others.
pub fn read_only(
    uri: &http::Uri,
    method: &Method,
    registry: &Registry,
    state: &DrainState,
) -> Option<Response<Full<Bytes>>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = uri.path();
    Some(match path {
        "/stats/prometheus" | "/metrics" => respond(
            StatusCode::OK,
            PROMETHEUS_CONTENT_TYPE,
            registry.encode().into_bytes(),
        ),
        "/stats/subsets" => match (query_param(uri, "route"), query_param(uri, "subset")) {
            (Some(route), Some(subset)) => match registry.subset_json(&route, &subset) {
                Some(row) => respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&row).unwrap_or_default(),
                ),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no subset {subset:?} of route {route:?} has been routed to yet\n")
                        .into_bytes(),
                ),
            },
            _ => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&registry.subsets_json()).unwrap_or_default(),
            ),
        },
        "/healthz/ready" | "/ready" => {
            if state.is_draining() {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"DRAINING\n".to_vec(),
                )
            } else {
                respond(StatusCode::OK, "text/plain", b"LIVE\n".to_vec())
            }
        }
        _ => return None,
    })
}

pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Serves the read-only paths on `listener` until the process exits.
pub fn spawn(
    listener: TcpListener,
    registry: Arc<Registry>,
    state: Arc<DrainState>,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let resp = read_only(req.uri(), req.method(), &registry, &state)
                        .unwrap_or_else(|| {
                            let status = if matches!(*req.method(), Method::GET | Method::HEAD) {
                                StatusCode::NOT_FOUND
                            } else {
                                StatusCode::METHOD_NOT_ALLOWED
                            };
                            respond(
                                status,
                                "text/plain",
                                b"read-only metrics listener\n".to_vec(),
                            )
                        });
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
