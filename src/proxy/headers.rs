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

/// Which of the names a message's head is checked for it carries, from one pass over its
/// (few) names instead of a hashed lookup per name: most messages carry none of them.
#[derive(Clone, Copy, Default)]
pub struct Present {
    /// Bit `i` for `HOP_BY_HOP[i]`.
    hop_by_hop: u8,
    pub request_id: bool,
    pub forwarded_proto: bool,
}

impl Present {
    pub fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            // The names' lengths first (2, 7, 10, 16, 17; 12 and 17): most headers are ruled
            // out by one compare.
            match name.as_str().len() {
                2 | 7 | 10 | 16 => {}
                12 => {
                    p.request_id |= name == X_REQUEST_ID;
                    continue;
                }
                17 if name == X_FORWARDED_PROTO => {
                    p.forwarded_proto = true;
                    continue;
                }
                17 => {}
                _ => continue,
            }
            if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
                p.hop_by_hop |= 1 << i;
            }
        }
        p
    }

    /// `HOP_BY_HOP[i]` was there.
    fn has(&self, i: usize) -> bool {
        self.hop_by_hop & (1 << i) != 0
    }

    /// `Transfer-Encoding` was there (and is gone after [`strip_hop_by_hop`]).
    pub fn transfer_encoding(&self) -> bool {
        self.has(TRANSFER_ENCODING_AT)
    }
}

// Where those names stand in `HOP_BY_HOP`.
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 3;
const TRANSFER_ENCODING_AT: usize = 4;
const UPGRADE_AT: usize = 5;

/// Removes hop-by-hop headers and any header the `Connection` header names. With `upgrade`
/// set, `Connection: upgrade` and `Upgrade` survive so the upgrade reaches the upstream.
/// `te: trailers` survives too: gRPC requires it end to end. `present` is the head's
/// [`Present::scan`].
pub fn strip_hop_by_hop(headers: &mut HeaderMap, present: Present, upgrade: bool) {
    if present.hop_by_hop == 0 && !upgrade {
        return;
    }
    if present.has(CONNECTION_AT)
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
    let te_trailers = present.has(TE_AT)
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if upgrade && (i == CONNECTION_AT || i == UPGRADE_AT) {
            continue;
        }
        if present.has(i) {
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
/// `present` is the head's [`Present::scan`]: an absent id is appended, no lookup first.
pub fn ensure_request_id(headers: &mut HeaderMap, present: Present) {
    if !present.request_id {
        let text = uuid_v4_text(rand::random());
        if let Ok(v) = HeaderValue::from_maybe_shared(crate::recycle::copy(&text)) {
            headers.append(X_REQUEST_ID.clone(), v);
        }
    }
}

/// A random (version 4, RFC 9562 variant) UUID in lowercase hyphenated text, as Envoy
/// generates `x-request-id`. Ours rather than the `uuid` crate's: it runs on every request
/// without an id, and spreading the nibbles eight bytes at a time costs about half as many
/// instructions as formatting digit by digit.
fn uuid_v4_text(random: u128) -> [u8; 36] {
    let bits = with_version_and_variant(random);
    let hi = hex16((bits >> 64) as u64);
    let lo = hex16(bits as u64);
    let mut text = [b'-'; 36];
    text[..8].copy_from_slice(&hi[..8]);
    text[9..13].copy_from_slice(&hi[8..12]);
    text[14..18].copy_from_slice(&hi[12..]);
    text[19..23].copy_from_slice(&lo[..4]);
    text[24..].copy_from_slice(&lo[4..]);
    text
}

/// Version 4 in bits 76..80, variant `10` in bits 62..64 (RFC 9562 §4.1, §4.2).
fn with_version_and_variant(random: u128) -> u128 {
    const VERSION: u128 = 0xf000 << 64;
    const VARIANT: u128 = 0xc000 << 48;
    (random & !VERSION & !VARIANT) | (0x4000 << 64) | (0x8000 << 48)
}

/// `x` as 16 lowercase hex digits, most significant first.
fn hex16(x: u64) -> [u8; 16] {
    const BYTES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Each nibble into its own byte, the lowest nibble in the lowest byte.
    let mut n = u128::from(x);
    n = (n | (n << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    n = (n | (n << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    n = (n | (n << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    n = (n | (n << 4)) & (BYTES * 0x0f);
    // A byte of 10 or more plus 6 carries into bit 4: those become 'a'..'f', the rest '0'..'9'.
    let letters = ((n + BYTES * 6) >> 4) & BYTES;
    (n + BYTES * u128::from(b'0') + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// Sidecars run with `use_remote_address: false`: `x-forwarded-for` passes through untouched,
/// and `x-forwarded-proto` is set to the downstream scheme only when the client sent none.
pub fn ensure_forwarded_proto(headers: &mut HeaderMap, present: Present, scheme: &'static str) {
    if !present.forwarded_proto {
        headers.append(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    }
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
        let present = Present::scan(&h);
        assert!(present.transfer_encoding());
        strip_hop_by_hop(&mut h, present, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn hop_by_hop_positions_name_their_fields() {
        assert_eq!(HOP_BY_HOP[CONNECTION_AT], header::CONNECTION);
        assert_eq!(HOP_BY_HOP[TE_AT], header::TE);
        assert_eq!(HOP_BY_HOP[TRANSFER_ENCODING_AT], header::TRANSFER_ENCODING);
        assert_eq!(HOP_BY_HOP[UPGRADE_AT], header::UPGRADE);
    }

    #[test]
    fn keeps_upgrade_headers_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        let present = Present::scan(&h);
        strip_hop_by_hop(&mut h, present, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_ids_are_version_4_uuids_in_the_usual_text() {
        for random in [
            0,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 127,
        ] {
            let text = String::from_utf8(uuid_v4_text(random).to_vec()).unwrap();
            let hex = format!("{:032x}", with_version_and_variant(random));
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(text, want);
            assert_eq!(&text[14..15], "4", "{text}: version");
            assert!("89ab".contains(&text[19..20]), "{text}: variant");
        }
        let ids: std::collections::HashSet<_> =
            (0..1000).map(|_| uuid_v4_text(rand::random())).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn request_id_generated_only_when_absent() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let present = Present::scan(&h);
        ensure_request_id(&mut h, present);
        assert_eq!(h[&X_REQUEST_ID].len(), 36);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        let present = Present::scan(&h);
        ensure_request_id(&mut h, present);
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
        assert_eq!(h[&X_REQUEST_ID], "abc");
    }

    #[test]
    fn forwarded_proto_set_only_when_absent() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        let present = Present::scan(&h);
        ensure_forwarded_proto(&mut h, present, "http");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        let present = Present::scan(&h);
        ensure_forwarded_proto(&mut h, present, "http");
        assert_eq!(h.get_all(&X_FORWARDED_PROTO).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }
}
