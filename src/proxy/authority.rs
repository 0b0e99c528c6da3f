//! Where a request is addressed: one authority (an absolute-form URI or HTTP/2 `:authority`,
//! else a single `Host`), the lower-cased host and the port routing looks up, and the
//! normalised path and query it matches on. Owns the 400s for a missing or repeated Host and
//! for a path that cannot be normalised.

use std::borrow::Cow;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Uri, Version, header};

use super::error::LocalReply;
use super::headers;
use crate::route::host::split_authority;
use crate::route::path::{normalize_path, split_path_query};

/// What the client addressed, owned: the head it came from is rewritten into the upstream
/// request by later stages, so the URI is moved here rather than borrowed.
pub(super) struct Addressed {
    pub authority: Authority,
    /// The port the client addressed (80 when it named none), seen by `port` matches.
    pub port: u16,
    /// An HTTP/1.1 Upgrade, read before any route's header operations could change it.
    pub upgrade: bool,
    uri: Uri,
    /// The normalised path, when it differs from the client's.
    normalized: Option<String>,
    /// Offsets into the authority and the URI's path-and-query, so that the slices routing
    /// reads are cut once here and not searched for again by each reader.
    host_end: usize,
    path_end: usize,
    query: Option<(usize, usize)>,
}

/// Reads the request's authority, host, port, path and query, and takes its URI.
#[inline]
pub(super) fn read(head: &mut http::request::Parts) -> Result<Addressed, LocalReply> {
    // Istio routes on the authority: two Host headers make it ambiguous (an HTTP/2
    // request's `:authority` is not in the map).
    if head.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(LocalReply::bad_request("duplicate Host header"));
    }
    let authority = request_authority(&head.uri, &head.headers)
        .ok_or(LocalReply::bad_request("missing Host header"))?;
    let (raw_host, addressed_port) = split_authority(authority.as_str());
    let host_end = raw_host.trim_end_matches('.').len();
    let uri = std::mem::take(&mut head.uri);
    let raw = path_and_query(&uri);
    let (path, query) = split_path_query(raw);
    let normalized = match normalize_path(path) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(_) => return Err(LocalReply::bad_request("invalid path")),
    };
    // `split_path_query` cuts `path?query#fragment`: the path is a prefix and the query
    // starts right after its `?`.
    let path_end = path.len();
    let query = query.map(|q| (path_end + 1, path_end + 1 + q.len()));
    Ok(Addressed {
        port: addressed_port.unwrap_or(80),
        upgrade: head.version == Version::HTTP_11 && headers::is_upgrade(&head.headers),
        authority,
        uri,
        normalized,
        host_end,
        path_end,
        query,
    })
}

// === impl Addressed ===

impl Addressed {
    /// The host without port or trailing dot, lower-cased: what virtual hosts are found by.
    pub fn host(&self) -> Cow<'_, str> {
        let s = self.authority.as_str();
        lowercase(s.get(..self.host_end).unwrap_or(s))
    }

    /// The normalised path routes match on.
    pub fn path(&self) -> &str {
        match &self.normalized {
            Some(p) => p,
            None => {
                let raw = path_and_query(&self.uri);
                raw.get(..self.path_end).unwrap_or(raw)
            }
        }
    }

    pub fn query(&self) -> Option<&str> {
        let (from, to) = self.query?;
        path_and_query(&self.uri).get(from..to)
    }

    /// Normalisation changed the path, so the upstream is sent the normalised one.
    pub fn normalized(&self) -> bool {
        self.normalized.is_some()
    }

    /// The authority and the client's path-and-query as sent, for the upstream request.
    pub fn into_parts(self) -> (Authority, Option<PathAndQuery>) {
        (self.authority, self.uri.into_parts().path_and_query)
    }
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", PathAndQuery::as_str)
}

/// The authority from an absolute-form URI or HTTP/2 `:authority`, else the Host header.
fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    if let Some(a) = uri.authority() {
        return Some(a.clone());
    }
    let host = headers.get(header::HOST)?.as_bytes();
    // A keep-alive client names the same host on every request, and validating it again cost
    // more than a copy and a compare (about 360 instructions for a cluster-local name). The
    // same bytes always parse to the same authority, so this thread's last one is reused.
    LAST_HOST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(a) = last.as_ref()
            && a.as_str().as_bytes() == host
        {
            return Some(a.clone());
        }
        let a = Authority::from_maybe_shared(crate::recycle::copy(host)).ok()?;
        *last = Some(a.clone());
        Some(a)
    })
}

thread_local! {
    static LAST_HOST: std::cell::RefCell<Option<Authority>> = const { std::cell::RefCell::new(None) };
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if has_ascii_uppercase(s.as_bytes()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Eight bytes at a time: every request's host is checked, and byte by byte the check cost
/// about six instructions a byte (callgrind), more than the rest of the host's handling.
fn has_ascii_uppercase(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    // Hacker's Delight's "has a byte strictly between m and n" (6-2), for 'A' - 1 and 'Z' + 1:
    // a byte's high bit survives only if 0x40 < byte < 0x5b; bytes of 0x80 and over never match.
    let between = |w: u64| {
        let low7 = w & (ONES * 0x7f);
        (ONES * (127 + 0x5b) - low7) & !w & (low7 + ONES * (127 - 0x40)) & HIGH != 0
    };
    let mut words = bytes.chunks_exact(8);
    let any_word = words.by_ref().any(|c| {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        between(u64::from_le_bytes(w))
    });
    any_word || words.remainder().iter().any(u8::is_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::{has_ascii_uppercase, read, request_authority};

    #[test]
    fn uppercase_is_found_at_every_position_and_only_uppercase() {
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        has_ascii_uppercase(&s),
                        b.is_ascii_uppercase(),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(!has_ascii_uppercase(b"reviews.bench.svc.cluster.local"));
        assert!(has_ascii_uppercase(b"reviews.bench.svc.cluster.locaL"));
        assert!(!has_ascii_uppercase("ÀÖ@[`{".as_bytes()));
        // Neighbours of every value, so a borrow or carry between bytes would show.
        for seed in 0..20_000u64 {
            let s: Vec<u8> = (0..(seed % 23) as usize)
                .map(|i| (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let naive = s.iter().any(u8::is_ascii_uppercase);
            assert_eq!(has_ascii_uppercase(&s), naive, "{s:?}");
        }
    }

    fn parsed(host: &[u8]) -> Option<String> {
        let mut req = http::Request::new(());
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(host).expect("a header value"),
        );
        let head = req.into_parts().0;
        request_authority(&head.uri, &head.headers).map(|a| a.to_string())
    }

    #[test]
    fn the_cached_host_never_stands_in_for_a_different_one() {
        let reviews = "reviews.default.svc.cluster.local:9080";
        assert_eq!(parsed(reviews.as_bytes()).as_deref(), Some(reviews));
        // Same bytes again: served from the cache, same answer.
        assert_eq!(parsed(reviews.as_bytes()).as_deref(), Some(reviews));
        // A different host, an invalid one, and a case variant are each parsed on their own,
        // and the invalid one leaves no wrong entry behind.
        let ratings = "ratings.default.svc.cluster.local";
        assert_eq!(parsed(ratings.as_bytes()).as_deref(), Some(ratings));
        assert_eq!(parsed(b"bad host"), None);
        let upper = "Ratings.default.svc.cluster.local";
        for _ in 0..2 {
            assert_eq!(parsed(upper.as_bytes()).as_deref(), Some(upper));
        }
        assert_eq!(parsed(b"bad host"), None);
    }

    #[test]
    fn host_path_and_query_are_cut_from_what_the_client_sent() {
        let mut head = http::Request::get("/a/../b?x=1&y=2")
            .header(http::header::HOST, "Reviews.:9080")
            .body(())
            .expect("a request")
            .into_parts()
            .0;
        let to = read(&mut head).expect("addressed");
        assert_eq!(to.host(), "reviews");
        assert_eq!(to.port, 9080);
        assert_eq!(to.path(), "/b");
        assert!(to.normalized());
        assert_eq!(to.query(), Some("x=1&y=2"));
        let (authority, pq) = to.into_parts();
        assert_eq!(authority.as_str(), "Reviews.:9080");
        assert_eq!(
            pq.map(|p| p.to_string()).as_deref(),
            Some("/a/../b?x=1&y=2")
        );

        let mut head = http::Request::get("/plain")
            .header(http::header::HOST, "ratings")
            .body(())
            .expect("a request")
            .into_parts()
            .0;
        let to = read(&mut head).expect("addressed");
        assert_eq!((to.path(), to.query(), to.port), ("/plain", None, 80));
        assert!(!to.normalized());
    }
}
