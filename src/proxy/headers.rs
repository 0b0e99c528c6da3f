//! Header hygiene between the client and the upstream, as an Istio sidecar's Envoy does it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies strip. `Trailer` is
/// kept, as Envoy keeps it: HTTP/1 peers send trailers only for fields it announces.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
pub static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Removes hop-by-hop headers and any header the `Connection` header names. With `upgrade`
/// set, `Connection: upgrade` and `Upgrade` survive so the upgrade reaches the upstream.
/// `te: trailers` survives too: gRPC requires it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the (few) names instead of a hashed lookup per hop-by-hop name: most
    // messages carry none of them, or only `Connection`.
    let mut present = 0u8;
    for name in headers.keys() {
        // The names' lengths first (2, 7, 10, 16, 17): most headers are ruled out by one
        // compare instead of six.
        if !matches!(name.as_str().len(), 2 | 7 | 10 | 16 | 17) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    let has = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .is_some_and(|i| present & (1 << i) != 0)
    };
    if has(&header::CONNECTION)
        && let Some(conn) = headers.get(header::CONNECTION)
    {
        // Rare path: only requests that list extra connection options pay for this.
        let listed: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| {
                let keep_for_upgrade = upgrade && t.eq_ignore_ascii_case("upgrade");
                let is_option =
                    t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive");
                !(t.is_empty() || is_option || keep_for_upgrade)
            })
            .filter_map(|t| HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        for name in listed {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    let te_trailers = has(&header::TE)
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in &HOP_BY_HOP {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        if has(name) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// True when the request carries any `x-envoy-*` header: the client controls (timeouts,
/// retries) are looked up only then, one scan instead of eight hashed lookups per request.
pub fn has_envoy_controls(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().as_bytes().starts_with(b"x-envoy-"))
}

pub use crate::wire::is_upgrade;

/// A number as a header value. The small ones every request sends (attempt counts, loopback
/// service times) are static: no allocation, and no shared reference count between workers.
pub fn number(n: u64) -> HeaderValue {
    const SMALL: [&str; 100] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
        "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46",
        "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61",
        "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76",
        "77", "78", "79", "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91",
        "92", "93", "94", "95", "96", "97", "98", "99",
    ];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Envoy generates `x-request-id` (a UUID) when absent; a sidecar keeps an incoming one.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    // One lookup through the entry, not a lookup and then an insert.
    if let header::Entry::Vacant(slot) = headers.entry(X_REQUEST_ID.clone()) {
        let id = uuid::Uuid::new_v4();
        let mut buf = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buf);
        if let Ok(v) = HeaderValue::from_maybe_shared(crate::recycle::copy(text.as_bytes())) {
            slot.insert(v);
        }
    }
}

/// Sidecars run with `use_remote_address: false`: `x-forwarded-for` passes through untouched,
/// and `x-forwarded-proto` is set to the downstream scheme only when the client sent none.
pub fn ensure_forwarded_proto(headers: &mut HeaderMap, scheme: &'static str) {
    headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert_with(|| HeaderValue::from_static(scheme));
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn keeps_upgrade_headers_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_id_generated_only_when_absent() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID].len(), 36);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        ensure_request_id(&mut h);
        assert_eq!(h[&X_REQUEST_ID], "abc");
    }
}
