//! Names and values the webhook checks the same way in every resource: DNS labels, wildcard
//! domains, header names and values, regexes.

use super::*;

/// Kubernetes' DNS-1123 label, with Istio's allowance for upper case.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Istio's `ValidateWildcardDomain`: DNS labels, where only the first may be a wildcard (`*` or
/// `*suffix`). A short name (no dot) is one label.
pub(super) fn validate_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("domain name is empty".to_string());
    }
    if host.len() > 255 {
        return Err("domain name is too long (at most 255 characters)".to_string());
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let mut labels = trimmed.split('.');
    let first = labels.next().unwrap_or("");
    let first_ok = match first.strip_prefix('*') {
        Some("") => true,
        Some(rest) => is_dns1123_label(rest),
        None => is_dns1123_label(first),
    };
    if !first_ok {
        return Err(format!(
            "label {first:?} is not a valid DNS label (a wildcard may only be a leading '*')"
        ));
    }
    for label in labels {
        if !is_dns1123_label(label) {
            return Err(format!("label {label:?} is not a valid DNS label"));
        }
    }
    Ok(())
}

/// Istio's `host.Name.Matches`: the two names can stand for a common host (`*.com` and
/// `*.foo.com` can).
pub(super) fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(_), None) => wildcard_covers(a, b),
        (None, Some(_)) => wildcard_covers(b, a),
    }
}

/// RFC 7230 `tchar`.
pub(super) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A header name in a match: a token, a pseudo-header (`:path`), or a JWT claim key.
pub(super) fn match_header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("header name cannot be empty".to_string());
    }
    if let Some(claim) = name.strip_prefix(JWT_CLAIM_PREFIX) {
        return claim
            .is_empty()
            .then(|| format!("header name {name:?} names no claim"));
    }
    let bare = name.strip_prefix(':').unwrap_or(name);
    (!is_token(bare)).then(|| {
        format!("header name {name:?} is not a valid HTTP header name (an RFC 7230 token)")
    })
}

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (request set/add, where Host and
/// `:authority` become a host rewrite) and `ValidateHTTPHeaderOperationName` (everything else).
pub(super) fn header_op_name_problem(name: &str, authority_allowed: bool) -> Option<String> {
    if name.is_empty() {
        return Some("header name cannot be empty".to_string());
    }
    if authority_allowed && is_authority_header(name) {
        return None;
    }
    if name.eq_ignore_ascii_case("host") {
        return Some(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Some(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    (!is_token(name)).then(|| {
        format!("header name {name:?} is not a valid HTTP header name (an RFC 7230 token)")
    })
}

/// Values go through Envoy's header formatter: `%VAR%` is expanded and a literal `%` must be
/// written `%%`; Envoy refuses the whole config for an unknown variable.
pub(super) fn header_value_problem(value: &str) -> Option<String> {
    if value.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
        return Some(format!(
            "header value {value:?} contains a control character"
        ));
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        // An argument may itself contain `%` (`%START_TIME(%s)%`), so the operator is read by its
        // shape, not by searching for the next `%`.
        let rest = &value[i + 1..];
        let mut len = rest
            .bytes()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
            .count();
        if rest[len..].starts_with('(') {
            len = rest[len..].find(')').map_or(rest.len(), |k| len + k + 1);
        }
        if rest[len..].starts_with(':') {
            len += 1 + rest[len + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
        }
        if !rest[len..].starts_with('%') {
            return Some(format!(
                "header value {value:?}: single % not allowed. Escape by doubling to %% or encase Envoy variable name in pair of %"
            ));
        }
        let var = &rest[..len];
        if !is_known_header_variable(var) {
            return Some(format!(
                "header value {value:?}: unknown variable %{var}%. Escape a literal % by doubling it to %%"
            ));
        }
        i += len + 2;
    }
    None
}

/// Envoy's header formatter operators (`%NAME%`, `%NAME(arg)%`, `%NAME(arg):len%`).
pub(super) fn is_known_header_variable(var: &str) -> bool {
    let name = var.split(['(', ':']).next().unwrap_or("");
    let with_args = var.len() > name.len() && var[name.len()..].starts_with('(');
    const PLAIN: &[&str] = &[
        "BYTES_RECEIVED",
        "BYTES_SENT",
        "CONNECTION_ID",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_DIRECT_REMOTE_PORT",
        "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_LOCAL_PORT",
        "DOWNSTREAM_LOCAL_SUBJECT",
        "DOWNSTREAM_LOCAL_URI_SAN",
        "DOWNSTREAM_PEER_CERT",
        "DOWNSTREAM_PEER_CERT_V_END",
        "DOWNSTREAM_PEER_CERT_V_START",
        "DOWNSTREAM_PEER_FINGERPRINT_1",
        "DOWNSTREAM_PEER_FINGERPRINT_256",
        "DOWNSTREAM_PEER_ISSUER",
        "DOWNSTREAM_PEER_SERIAL",
        "DOWNSTREAM_PEER_SUBJECT",
        "DOWNSTREAM_PEER_URI_SAN",
        "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "DOWNSTREAM_REMOTE_PORT",
        "DOWNSTREAM_TLS_CIPHER",
        "DOWNSTREAM_TLS_SESSION_ID",
        "DOWNSTREAM_TLS_VERSION",
        "DURATION",
        "HOSTNAME",
        "PROTOCOL",
        "REQUESTED_SERVER_NAME",
        "REQUEST_DURATION",
        "RESPONSE_CODE",
        "RESPONSE_DURATION",
        "RESPONSE_FLAGS",
        "ROUTE_NAME",
        "START_TIME",
        "STREAM_ID",
        "UPSTREAM_CLUSTER",
        "UPSTREAM_HOST",
        "UPSTREAM_LOCAL_ADDRESS",
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_LOCAL_PORT",
        "UPSTREAM_REMOTE_ADDRESS",
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "UPSTREAM_REMOTE_PORT",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        "VIRTUAL_CLUSTER_NAME",
    ];
    const WITH_ARGS: &[&str] = &[
        "CLUSTER_METADATA",
        "DYNAMIC_METADATA",
        "ENVIRONMENT",
        "FILTER_STATE",
        "PER_REQUEST_STATE",
        "REQ",
        "RESP",
        "START_TIME",
        "TRAILER",
        "UPSTREAM_METADATA",
    ];
    if with_args {
        WITH_ARGS.contains(&name) && var.contains(')')
    } else {
        PLAIN.contains(&name)
    }
}

/// Compiles with the matcher the router uses, so what passes here also serves.
pub(super) fn regex_problem(pattern: &str) -> Result<(), String> {
    StringMatcher::regex(pattern).map(|_| ()).map_err(|e| {
        // The regex crate explains on several lines, ending with `error: <what>`.
        let message = e.message.lines().rev().find_map(|l| l.trim().strip_prefix("error: ")).unwrap_or(e.message.trim());
        format!(
            "invalid regex {:?}: {message}; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)",
            e.pattern
        )
    })
}

/// Decoded size of standard or URL-safe base64, padded or not (jsonpb takes all four), or
/// `None` when it is not base64.
pub(super) fn base64_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    if padding > 2
        || !body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+/-_".contains(&c))
    {
        return None;
    }
    match body.len() % 4 {
        1 => None,
        r => Some(body.len() / 4 * 3 + r.saturating_sub(1)),
    }
}
