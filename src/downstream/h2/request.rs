//! A request's or trailers' header block, field by field as HPACK decodes it, into the
//! `http` types the proxy reads, with RFC 9113 §8.2-8.3's rules for what makes a request
//! malformed. Decoding always goes to the end of the block (the dynamic table must stay in
//! step with the client's); a bad field only marks the block.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};

/// Why a block is refused: malformed requests are reset with PROTOCOL_ERROR; a list past the
/// limit is answered 431.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed(&'static str),
    TooLarge,
}

/// Fields collected from one header block.
pub struct Fields {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    pub headers: HeaderMap,
    /// RFC 7541 §4.1 size of the list so far.
    size: usize,
    limit: usize,
    trailers: bool,
    regular_seen: bool,
    pub content_length: Option<u64>,
    /// `cookie` fields seen: HTTP/2 clients split cookies into one field per pair.
    cookies: usize,
    refused: Option<Refused>,
}

impl Fields {
    pub fn request(limit: usize, capacity: usize) -> Fields {
        Fields::new(limit, capacity, false)
    }

    pub fn trailers(limit: usize) -> Fields {
        Fields::new(limit, 4, true)
    }

    fn new(limit: usize, capacity: usize, trailers: bool) -> Fields {
        Fields {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: crate::recycle::header_map(capacity),
            size: 0,
            limit,
            trailers,
            regular_seen: false,
            content_length: None,
            cookies: 0,
            refused: None,
        }
    }

    fn malformed(&mut self, why: &'static str) {
        if self.refused.is_none() {
            self.refused = Some(Refused::Malformed(why));
        }
    }

    /// One decoded field. Never fails: what is wrong is kept for [`Fields::finish`].
    /// `never_indexed` marks a value the client sent as never to be indexed (RFC 7541
    /// §7.1.3): it stays sensitive, so an HTTP/2 upstream gets it never indexed too.
    pub fn field(
        &mut self,
        name: &[u8],
        value: &[u8],
        never_indexed: bool,
    ) -> Result<(), std::convert::Infallible> {
        self.size = self.size.saturating_add(name.len() + value.len() + 32);
        if self.size > self.limit {
            if self.refused.is_none() {
                self.refused = Some(Refused::TooLarge);
            }
            return Ok(());
        }
        if self.refused.is_some() {
            return Ok(());
        }
        if name.first() == Some(&b':') {
            self.pseudo(name, value);
        } else {
            self.regular(name, value, never_indexed);
        }
        Ok(())
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) {
        if self.regular_seen || self.trailers {
            return self.malformed("a pseudo-header field after a regular field, or in trailers");
        }
        let slot = match name {
            b":method" => {
                if self.method.is_some() {
                    return self.malformed("a second :method");
                }
                match Method::from_bytes(value) {
                    Ok(m) => self.method = Some(m),
                    Err(_) => self.malformed("an invalid :method"),
                }
                return;
            }
            b":scheme" => &mut self.scheme,
            b":authority" => &mut self.authority,
            b":path" => &mut self.path,
            _ => return self.malformed("an unknown pseudo-header field"),
        };
        if slot.is_some() {
            return self.malformed("a repeated pseudo-header field");
        }
        *slot = Some(crate::recycle::copy(value));
    }

    fn regular(&mut self, name: &[u8], value: &[u8], never_indexed: bool) {
        self.regular_seen = true;
        // HeaderName would lower-case the name for us; HTTP/2 requires it already is (§8.2.1).
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.malformed("an uppercase field name");
        }
        let Ok(name) = crate::names::parse(name) else {
            return self.malformed("an invalid field name");
        };
        if let (Some(first), Some(last)) = (value.first(), value.last())
            && (matches!(first, b' ' | b'\t') || matches!(last, b' ' | b'\t'))
        {
            return self.malformed("a field value with leading or trailing whitespace");
        }
        if is_connection_specific(&name) {
            return self.malformed("a connection-specific field");
        }
        if name == header::TE && value != b"trailers" {
            return self.malformed("TE other than \"trailers\"");
        }
        let Ok(mut value) = HeaderValue::from_maybe_shared(crate::recycle::copy(value)) else {
            return self.malformed("an invalid field value");
        };
        if never_indexed {
            value.set_sensitive(true);
        }
        if name == header::CONTENT_LENGTH && !self.trailers {
            match crate::wire::content_length_value(value.as_bytes()) {
                Some(n) if self.content_length.is_none_or(|prev| prev == n) => {
                    self.content_length = Some(n);
                }
                _ => return self.malformed("an invalid or conflicting content-length"),
            }
        }
        if name == header::COOKIE {
            self.cookies += 1;
        }
        self.headers.append(name, value);
    }

    /// The trailers, or why they are refused.
    pub fn finish_trailers(self) -> Result<HeaderMap, Refused> {
        match self.refused {
            Some(r) => {
                crate::recycle::give_back(self.headers);
                Err(r)
            }
            None => Ok(self.headers),
        }
    }

    /// The request head, or why it is refused. `connect` tells a CONNECT (authority-form,
    /// no :scheme or :path) from every other method.
    pub fn finish_request(self) -> Result<Request<()>, Refused> {
        if let Some(r) = self.refused {
            crate::recycle::give_back(self.headers);
            return Err(r);
        }
        let Some(method) = self.method else {
            crate::recycle::give_back(self.headers);
            return Err(Refused::Malformed("no :method"));
        };
        let uri = match build_uri(&method, self.scheme, self.authority, self.path) {
            Ok(uri) => uri,
            Err(why) => {
                crate::recycle::give_back(self.headers);
                return Err(Refused::Malformed(why));
            }
        };
        let mut headers = self.headers;
        if self.cookies > 1 {
            join_cookies(&mut headers);
        }
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

fn build_uri(
    method: &Method,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
) -> Result<Uri, &'static str> {
    let authority = match authority {
        Some(a) => Some(Authority::from_maybe_shared(a).map_err(|_| "an invalid :authority")?),
        None => None,
    };
    let mut parts = http::uri::Parts::default();
    if method == Method::CONNECT {
        // RFC 9113 §8.5: :authority only (we do not offer the extended CONNECT of RFC 8441).
        if scheme.is_some() || path.is_some() {
            return Err("a CONNECT with :scheme or :path");
        }
        parts.authority = Some(authority.ok_or("a CONNECT without :authority")?);
        return Uri::from_parts(parts).map_err(|_| "an invalid CONNECT target");
    }
    let scheme = scheme.ok_or("no :scheme")?;
    let path = path.ok_or("no :path")?;
    if path.is_empty() {
        return Err("an empty :path");
    }
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "an invalid :path")?);
    // Without :authority the request is in origin form and Host (if any) names the target.
    if let Some(authority) = authority {
        parts.scheme = Some(match &scheme[..] {
            b"http" => Scheme::HTTP,
            b"https" => Scheme::HTTPS,
            other => Scheme::try_from(other).map_err(|_| "an invalid :scheme")?,
        });
        parts.authority = Some(authority);
    }
    Uri::from_parts(parts).map_err(|_| "an invalid request target")
}

/// Cookie crumbs become one field, `; `-joined, as RFC 9113 §8.2.3 requires before a request
/// goes on over HTTP/1.1 (Envoy does the same): a backend may read only the first `Cookie`
/// field, and so would the proxy's own cookie hashing.
fn join_cookies(headers: &mut HeaderMap) {
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part was a valid value, and "; " is too.
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, v);
    }
}

/// Fields that belong to one HTTP/1.1 connection and make an HTTP/2 message malformed
/// (RFC 9113 §8.2.2).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(&str, &str)]) -> Result<Request<()>, Refused> {
        let mut f = Fields::request(16 * 1024, 8);
        for (n, v) in fields {
            let _ = f.field(n.as_bytes(), v.as_bytes(), false);
        }
        f.finish_request()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "example.com:8080"),
        (":path", "/a?b=c"),
    ];

    #[test]
    fn a_plain_request_becomes_an_absolute_uri() {
        let mut fields = GET.to_vec();
        fields.push(("x-user", "beta"));
        let req = request(&fields).expect("valid");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "http://example.com:8080/a?b=c");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()["x-user"], "beta");
    }

    #[test]
    fn never_indexed_values_stay_sensitive() {
        let mut f = Fields::request(16 * 1024, 8);
        for (n, v) in GET {
            let _ = f.field(n.as_bytes(), v.as_bytes(), false);
        }
        let _ = f.field(b"authorization", b"Bearer s3cret", true);
        let _ = f.field(b"x-user", b"beta", false);
        let req = f.finish_request().expect("valid");
        assert!(req.headers()["authorization"].is_sensitive());
        assert!(!req.headers()["x-user"].is_sensitive());
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![(":method", "GET"), (":scheme", "http")],
            vec![(":method", "GET"), (":path", "/")],
            vec![(":scheme", "http"), (":path", "/")],
            vec![(":method", "GET"), (":scheme", "http"), (":path", "")],
            [&GET[..], &[(":path", "/again")]].concat(),
            [&GET[..], &[(":status", "200")]].concat(),
            vec![
                ("x-a", "1"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            [&GET[..], &[("X-Upper", "1")]].concat(),
            [&GET[..], &[("connection", "close")]].concat(),
            [&GET[..], &[("transfer-encoding", "chunked")]].concat(),
            [&GET[..], &[("te", "gzip")]].concat(),
            [&GET[..], &[("x-a", " padded")]].concat(),
            [&GET[..], &[("x-a", "bad\r\nvalue")]].concat(),
            [
                &GET[..],
                &[("content-length", "5"), ("content-length", "6")],
            ]
            .concat(),
            vec![
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ],
            vec![(":method", "CONNECT")],
        ];
        for c in cases {
            assert!(
                matches!(request(&c), Err(Refused::Malformed(_))),
                "{c:?} was accepted"
            );
        }
        let mut ok = GET.to_vec();
        ok.push(("te", "trailers"));
        ok.push(("content-length", "5"));
        ok.push(("content-length", "5"));
        assert!(request(&ok).is_ok());
    }

    #[test]
    fn connect_is_authority_form_and_origin_form_needs_no_authority() {
        let req = request(&[(":method", "CONNECT"), (":authority", "db:5432")]).expect("valid");
        assert_eq!(req.uri().authority().map(|a| a.as_str()), Some("db:5432"));
        let req =
            request(&[(":method", "GET"), (":scheme", "http"), (":path", "/x")]).expect("valid");
        assert_eq!(req.uri(), "/x");
    }

    #[test]
    fn a_list_past_the_limit_is_too_large_and_keeps_nothing_more() {
        let mut f = Fields::request(100, 8);
        for (n, v) in GET {
            let _ = f.field(n.as_bytes(), v.as_bytes(), false);
        }
        let _ = f.field(b"x-big", &[b'v'; 64], false);
        assert_eq!(f.headers.len(), 0);
        assert_eq!(f.finish_request().err(), Some(Refused::TooLarge));
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_field() {
        let mut fields = GET.to_vec();
        fields.extend([
            ("cookie", "a=1"),
            ("x-b", "2"),
            ("cookie", "c=3"),
            ("cookie", "d=4"),
        ]);
        let req = request(&fields).expect("valid");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; c=3; d=4"]);
        let mut one = GET.to_vec();
        one.push(("cookie", "a=1; b=2"));
        assert_eq!(
            request(&one).expect("valid").headers()["cookie"],
            "a=1; b=2"
        );
    }

    #[test]
    fn trailers_take_no_pseudo_fields() {
        let mut f = Fields::trailers(1024);
        let _ = f.field(b"grpc-status", b"0", false);
        assert_eq!(f.finish_trailers().expect("valid")["grpc-status"], "0");
        let mut f = Fields::trailers(1024);
        let _ = f.field(b":path", b"/", false);
        assert!(f.finish_trailers().is_err());
    }
}
