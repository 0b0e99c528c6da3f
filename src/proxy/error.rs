//! Every way a request can fail locally, mapped in one place to what Envoy answers: the
//! status, the response flag (access log and `response_flags` metric label), the body, and
//! for gRPC callers the `grpc-status` Envoy would send instead.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

/// Envoy response flags (`%RESPONSE_FLAGS%`), the ones a sidecar proxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No route matched (404).
    NoRoute,
    /// No healthy upstream host (503).
    NoHealthyUpstream,
    /// Upstream connection failure (503).
    UpstreamConnectFailure,
    /// Upstream connection failure after the retry limit (503).
    UpstreamConnectFailureRetriesExhausted,
    /// Upstream reset the stream (503).
    UpstreamReset,
    /// Upstream connection terminated (503).
    UpstreamConnectionTermination,
    /// Downstream request was not routable to anything we know (REGISTRY_ONLY 502): Envoy
    /// serves this from a direct-response virtual host and logs no flag.
    BlockedHost,
    /// The request was malformed in a way we detected after parsing (400).
    DownstreamProtocolError,
    /// The route timeout (or a per-try timeout with no retry left) expired (504).
    UpstreamRequestTimeout,
    /// A fault-injection abort (configured status).
    FaultInjected,
    /// An upstream response returned after the route's retries ran out.
    RetriesExhausted,
    /// Upstream connection failure with no retry policy left to try another host.
    UpstreamConnectFailureOnly,
    /// A circuit breaker (connection pool limit) refused the request (503).
    UpstreamOverflow,
    /// The upstream's response was not valid HTTP (502).
    UpstreamProtocolError,
    /// A local rate limit refused the request (429 by default).
    RateLimited,
}

impl Flag {
    /// The text Envoy logs (`-` for none).
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamConnectFailureRetriesExhausted => "UF,URX",
            Flag::UpstreamReset => "UR",
            Flag::UpstreamConnectionTermination => "UC",
            Flag::BlockedHost => "-",
            Flag::DownstreamProtocolError => "DPE",
            Flag::UpstreamRequestTimeout => "UT",
            Flag::FaultInjected => "FI",
            Flag::RetriesExhausted => "URX",
            Flag::UpstreamConnectFailureOnly => "UF",
            Flag::UpstreamOverflow => "UO",
            Flag::UpstreamProtocolError => "UPE",
            Flag::RateLimited => "RL",
        }
    }
}

#[derive(Debug)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: Flag,
    pub body: &'static str,
    /// Extra detail appended to the body (e.g. the connect error).
    pub detail: Option<String>,
}

impl LocalReply {
    pub fn no_route() -> LocalReply {
        LocalReply {
            status: StatusCode::NOT_FOUND,
            flag: Flag::NoRoute,
            body: "",
            detail: None,
        }
    }

    pub fn blocked_host() -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_GATEWAY,
            flag: Flag::BlockedHost,
            body: "",
            detail: None,
        }
    }

    pub fn no_healthy_upstream() -> LocalReply {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flag: Flag::NoHealthyUpstream,
            body: "no healthy upstream",
            detail: None,
        }
    }

    pub fn connect_failure(retries_exhausted: bool, reason: String) -> LocalReply {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flag: if retries_exhausted {
                Flag::UpstreamConnectFailureRetriesExhausted
            } else {
                Flag::UpstreamConnectFailureOnly
            },
            body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: ",
            detail: Some(reason),
        }
    }

    pub fn upstream_reset(reason: String, terminated: bool) -> LocalReply {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flag: if terminated {
                Flag::UpstreamConnectionTermination
            } else {
                Flag::UpstreamReset
            },
            body: if terminated {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            } else {
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
            },
            detail: (!reason.is_empty()).then_some(reason),
        }
    }

    /// The upstream answered with something that is not HTTP/1.1 (a malformed head, a bad
    /// content-length, headers over the limit): Envoy's router answers 502 for a protocol
    /// error, not the 503 of a reset.
    pub fn upstream_protocol_error() -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_GATEWAY,
            flag: Flag::UpstreamProtocolError,
            body: "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            detail: None,
        }
    }

    /// A circuit breaker overflowed: Envoy fails the request at once.
    pub fn overflow() -> LocalReply {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flag: Flag::UpstreamOverflow,
            body: "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            detail: None,
        }
    }

    /// Envoy's route timeout reply.
    pub fn timeout() -> LocalReply {
        LocalReply {
            status: StatusCode::GATEWAY_TIMEOUT,
            flag: Flag::UpstreamRequestTimeout,
            body: "upstream request timeout",
            detail: None,
        }
    }

    /// A fault-injection abort with an HTTP status.
    pub fn fault_abort(status: StatusCode) -> LocalReply {
        LocalReply {
            status,
            flag: Flag::FaultInjected,
            body: "fault filter abort",
            detail: None,
        }
    }

    pub fn bad_request(why: &'static str) -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            flag: Flag::DownstreamProtocolError,
            body: why,
            detail: None,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for this reply. A connect failure carries its
    /// transport failure reason with spaces made underscores, as Envoy's router writes it:
    /// `upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111}`.
    pub fn details(&self) -> std::borrow::Cow<'static, str> {
        let connect_failure = matches!(
            self.flag,
            Flag::UpstreamConnectFailure
                | Flag::UpstreamConnectFailureRetriesExhausted
                | Flag::UpstreamConnectFailureOnly
        );
        match &self.detail {
            Some(reason) if connect_failure && !reason.is_empty() => {
                let reason: String = reason
                    .chars()
                    .map(|c| if c.is_whitespace() { '_' } else { c })
                    .collect();
                format!("upstream_reset_before_response_started{{connection_failure,{reason}}}")
                    .into()
            }
            _ => self.static_details().into(),
        }
    }

    fn static_details(&self) -> &'static str {
        match self.flag {
            Flag::NoRoute => "route_not_found",
            Flag::NoHealthyUpstream => "no_healthy_upstream",
            Flag::UpstreamConnectFailure | Flag::UpstreamConnectFailureRetriesExhausted => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            Flag::UpstreamReset => "upstream_reset_before_response_started{remote_reset}",
            Flag::UpstreamConnectionTermination => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            Flag::BlockedHost => "direct_response",
            Flag::DownstreamProtocolError => "downstream_protocol_error",
            Flag::UpstreamRequestTimeout => "response_timeout",
            Flag::FaultInjected => "fault_filter_abort",
            Flag::RetriesExhausted => "via_upstream",
            Flag::UpstreamConnectFailureOnly => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            Flag::UpstreamOverflow => "upstream_reset_before_response_started{overflow}",
            Flag::UpstreamProtocolError => "upstream_reset_before_response_started{protocol_error}",
            Flag::RateLimited => "local_rate_limited",
        }
    }

    /// The response: plain text, or for a gRPC request the trailers-only form Envoy uses
    /// (HTTP 200 with `grpc-status` and `grpc-message`), because gRPC clients read the status
    /// from there and treat other HTTP codes as transport errors.
    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        let text = match &self.detail {
            Some(d) if self.body.ends_with(": ") => format!("{}{d}", self.body),
            _ => self.body.to_string(),
        };
        let mut resp = if grpc {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::OK;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(grpc_status(self.status)));
            let msg = if text.is_empty() {
                self.status.canonical_reason().unwrap_or("").to_string()
            } else {
                text
            };
            if let Ok(v) = HeaderValue::from_str(&percent_encode_grpc(&msg)) {
                h.insert("grpc-message", v);
            }
            r
        } else if text.is_empty() {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = self.status;
            r
        } else {
            let mut r = Response::new(ProxyBody::full(Bytes::from(text)));
            *r.status_mut() = self.status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        };
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("envoy"));
        resp.extensions_mut().insert(self.flag);
        resp
    }
}

/// Envoy's HTTP → gRPC status mapping for local replies (`Grpc::Utility::httpToGrpcStatus`),
/// with 504 as DEADLINE_EXCEEDED as Envoy's router reports its own timeouts.
pub fn grpc_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502 | 503 => 14, // UNAVAILABLE
        504 => 4,              // DEADLINE_EXCEEDED
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_encode_grpc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_mapping_matches_envoy() {
        assert_eq!(grpc_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_status(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(grpc_status(StatusCode::NOT_FOUND), 12);
    }

    #[test]
    fn grpc_reply_is_http_200_with_status() {
        let r = LocalReply::no_healthy_upstream().into_response(true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        assert_eq!(r.extensions().get::<Flag>(), Some(&Flag::NoHealthyUpstream));
    }
}
