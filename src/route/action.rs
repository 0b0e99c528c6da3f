//! What a matched route does to a request besides choosing a destination: header operations,
//! URI and authority rewrites, redirects and direct responses, as Istio translates them to
//! Envoy (reference §4.2–§4.5). Everything is parsed at compile time; applying allocates only
//! the new values it writes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

/// Values Envoy's header formatter fills in per request (`%DOWNSTREAM_REMOTE_ADDRESS%`, ...).
#[derive(Debug, Clone)]
pub struct FormatContext<'a> {
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    pub hostname: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    RemoteAddress,
    RemoteAddressWithoutPort,
    LocalAddress,
    LocalAddressWithoutPort,
    Protocol,
    Hostname,
}

/// A header value from the config: a literal (the common case), or one with `%VARS%`.
#[derive(Debug, Clone)]
pub enum HeaderTemplate {
    Literal(HeaderValue),
    Formatted(Vec<Piece>),
}

impl HeaderTemplate {
    /// Parses Envoy's formatter syntax: `%%` is a literal `%`; known `%VAR%`s expand; an
    /// unknown one is kept as written (validation warns about it).
    pub fn parse(value: &str) -> Result<HeaderTemplate, String> {
        if !value.contains('%') {
            return HeaderValue::from_str(value)
                .map(HeaderTemplate::Literal)
                .map_err(|_| format!("invalid header value {value:?}"));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = value;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                text.push('%');
                rest = r;
                continue;
            }
            let Some(end) = rest.find('%') else {
                text.push('%');
                continue;
            };
            let var = &rest[..end];
            let piece = match var {
                "DOWNSTREAM_REMOTE_ADDRESS" => Some(Piece::RemoteAddress),
                "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Some(Piece::RemoteAddressWithoutPort),
                "DOWNSTREAM_LOCAL_ADDRESS" => Some(Piece::LocalAddress),
                "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Some(Piece::LocalAddressWithoutPort),
                "PROTOCOL" => Some(Piece::Protocol),
                "HOSTNAME" => Some(Piece::Hostname),
                _ => None,
            };
            match piece {
                Some(p) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(p);
                }
                None => {
                    text.push('%');
                    text.push_str(var);
                    text.push('%');
                }
            }
            rest = &rest[end + 1..];
        }
        text.push_str(rest);
        if pieces.is_empty() {
            return HeaderValue::from_str(&text)
                .map(HeaderTemplate::Literal)
                .map_err(|_| format!("invalid header value {value:?}"));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(HeaderTemplate::Formatted(pieces))
    }

    fn render(&self, ctx: &FormatContext) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Literal(v) => Some(v.clone()),
            HeaderTemplate::Formatted(pieces) => {
                let mut out = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::RemoteAddress => out.push_str(&ctx.downstream_remote.to_string()),
                        Piece::RemoteAddressWithoutPort => {
                            out.push_str(&ctx.downstream_remote.ip().to_string())
                        }
                        Piece::LocalAddress => out.push_str(&ctx.downstream_local.to_string()),
                        Piece::LocalAddressWithoutPort => {
                            out.push_str(&ctx.downstream_local.ip().to_string())
                        }
                        Piece::Protocol => out.push_str(ctx.protocol),
                        Piece::Hostname => out.push_str(ctx.hostname),
                    }
                }
                HeaderValue::from_str(&out).ok()
            }
        }
    }
}

/// `set` / `add` / `remove` on one side (request or response). Envoy removes first, then
/// writes, so a header both removed and set ends up set.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderTemplate)>,
    pub add: Vec<(HeaderName, HeaderTemplate)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap, ctx: &FormatContext) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            if let Some(v) = value.render(ctx) {
                headers.insert(name.clone(), v);
            }
        }
        for (name, value) in &self.add {
            if let Some(v) = value.render(ctx) {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// `rewrite`: Istio's `uri` becomes Envoy's `prefix_rewrite` (it replaces the part of the path
/// the route matched), `uriRegexRewrite` a regex substitution, `authority` the Host.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub uri: Option<PrefixRewrite>,
    pub regex: Option<(Regex, String)>,
    pub authority: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct PrefixRewrite {
    /// Bytes of the path the route's uri match covered; `None` means the whole path (exact or
    /// regex matches).
    pub matched_prefix_len: Option<usize>,
    pub replacement: String,
}

impl PrefixRewrite {
    fn apply(&self, path: &str) -> String {
        match self.matched_prefix_len {
            Some(n) if n <= path.len() && path.is_char_boundary(n) => {
                format!("{}{}", self.replacement, &path[n..])
            }
            _ => self.replacement.clone(),
        }
    }
}

impl Rewrite {
    /// The new path (without query) if the rewrite changes it.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        if let Some(p) = &self.uri {
            return Some(p.apply(path));
        }
        if let Some((re, with)) = &self.regex {
            return Some(re.replace_all(path, with.as_str()).into_owned());
        }
        None
    }
}

/// Translates RE2/Envoy substitution syntax (`\1`) to the regex crate's (`${1}`).
pub fn regex_substitution(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                out.push_str("${");
                out.push_str(&n);
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    Explicit(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: the scheme's default port (none written).
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`.
    RequestPort,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    /// `uri`: replaces the whole path.
    pub path: Option<String>,
    /// `prefixRewrite`: swaps the matched prefix.
    pub prefix_rewrite: Option<PrefixRewrite>,
    pub code: StatusCode,
}

impl Redirect {
    /// The `Location` for a request. `authority` is the request's (may carry a port), `path`
    /// its normalised path and `query` its query string.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let (req_host, req_port) = super::host::split_authority(authority);
        let (host, mut port) = match &self.authority {
            Some(a) => {
                let (h, p) = super::host::split_authority(a);
                (h.to_string(), p)
            }
            None => (req_host.to_string(), req_port),
        };
        let default_port = |scheme: &str, p: Option<u16>| {
            matches!((scheme, p), ("http", Some(80)) | ("https", Some(443)))
        };
        // FROM_REQUEST_PORT on the scheme's default port: Istio sets no port redirect at all,
        // so Envoy keeps the host exactly as the client sent it (`b:80` stays `b:80`).
        let as_sent = self.port == Some(RedirectPort::RequestPort)
            && self.authority.is_none()
            && default_port(scheme, req_port);
        match self.port {
            Some(RedirectPort::Explicit(p)) => port = Some(p),
            Some(RedirectPort::ProtocolDefault) => port = None,
            Some(RedirectPort::RequestPort) => port = req_port,
            None => {}
        }
        // Envoy drops a port that is the scheme's default.
        if !as_sent && default_port(scheme, port) {
            port = None;
        }
        let new_path = match (&self.path, &self.prefix_rewrite) {
            (Some(p), _) => p.clone(),
            (None, Some(pr)) => pr.apply(path),
            (None, None) => path.to_string(),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out.push_str(&new_path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> FormatContext<'static> {
        FormatContext {
            downstream_remote: "10.0.0.1:5555".parse().expect("addr"),
            downstream_local: "127.0.0.1:15001".parse().expect("addr"),
            protocol: "HTTP/1.1",
            hostname: "node-a",
        }
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let mut ops = HeaderOps::default();
        let name = HeaderName::from_static("x-a");
        ops.remove.push(name.clone());
        ops.set.push((
            name.clone(),
            HeaderTemplate::parse("one").expect("template"),
        ));
        ops.add.push((
            name.clone(),
            HeaderTemplate::parse("two").expect("template"),
        ));
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_static("old"));
        ops.apply(&mut h, &ctx());
        let got: Vec<_> = h.get_all(&name).iter().collect();
        assert_eq!(got, ["one", "two"]);
    }

    #[test]
    fn formatter_expands_known_variables_and_escapes() {
        let t =
            HeaderTemplate::parse("ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% %UNKNOWN%")
                .expect("template");
        assert_eq!(
            t.render(&ctx()).expect("value"),
            "ip=10.0.0.1 100% %UNKNOWN%"
        );
    }

    #[test]
    fn prefix_rewrite_replaces_matched_prefix_only() {
        let r = PrefixRewrite {
            matched_prefix_len: Some("/ratings".len()),
            replacement: "/v1/bookRatings".into(),
        };
        assert_eq!(r.apply("/ratings/2"), "/v1/bookRatings/2");
        // Istio's gotcha: no uri match means the matched prefix is "/".
        let r = PrefixRewrite {
            matched_prefix_len: Some(1),
            replacement: "/v1".into(),
        };
        assert_eq!(r.apply("/foo"), "/v1foo");
    }

    #[test]
    fn regex_rewrite_uses_capture_groups() {
        let rw = Rewrite {
            uri: None,
            regex: Some((
                Regex::new("^/service/([^/]+)(/.*)$").expect("regex"),
                regex_substitution("\\2/instance/\\1"),
            )),
            authority: None,
        };
        assert_eq!(
            rw.rewrite_path("/service/foo/v1/api").as_deref(),
            Some("/v1/api/instance/foo")
        );
    }

    #[test]
    fn redirect_location() {
        let r = Redirect {
            scheme: None,
            authority: Some("newratings.default.svc.cluster.local".into()),
            port: None,
            path: Some("/v1/bookRatings".into()),
            prefix_rewrite: None,
            code: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            r.location("http", "ratings:80", "/v1/getProductRatings", Some("a=1")),
            "http://newratings.default.svc.cluster.local/v1/bookRatings?a=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            authority: None,
            port: Some(RedirectPort::Explicit(443)),
            path: None,
            prefix_rewrite: None,
            code: StatusCode::FOUND,
        };
        assert_eq!(
            r.location("http", "a.com:8080", "/x", None),
            "https://a.com/x"
        );
    }
}
