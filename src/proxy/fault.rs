//! Istio's fault injection, as Envoy's fault filter does it before the router: a delay for
//! its share of requests, then an abort for its own (each an independent draw). A gRPC
//! abort answers HTTP 200 with the configured `grpc-status`.

use http::Response;
use http::header::{self, HeaderValue};

use super::body::ProxyBody;
use super::error::{self, LocalReply};
use super::record::RequestRecord;
use super::{Stop, draw_per_million};
use crate::route::policy::{Abort, Fault};

/// Delays or aborts the request as the route's `fault` says; no fault passes it on at once.
pub(super) async fn inject(fault: Option<&Fault>, record: &RequestRecord) -> Result<(), Stop> {
    let Some(fault) = fault else {
        return Ok(());
    };
    if let Some((delay, share)) = fault.delay
        && draw_per_million() < share
    {
        tokio::time::sleep(delay).await;
        record.set_delay_injected();
    }
    if let Some((abort, share)) = fault.abort
        && draw_per_million() < share
    {
        return Err(match abort {
            Abort::Http(status) => LocalReply::fault_abort(status).into(),
            Abort::Grpc(code) => Stop::Reply(Box::new(grpc_abort(code, record))),
        });
    }
    Ok(())
}

/// A gRPC fault abort: HTTP 200 with the configured `grpc-status`, as Envoy's fault filter
/// answers gRPC requests.
fn grpc_abort(code: u8, record: &RequestRecord) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert(
        "grpc-message",
        HeaderValue::from_static("fault filter abort"),
    );
    record.set_status(200, Some(error::Flag::FaultInjected));
    record.set_grpc_status(code);
    resp
}
