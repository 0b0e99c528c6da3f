//! The analysis providers that leave the process: Argo's `web` (a URL, `jsonPath`, non-2xx is
//! an Error) and `prometheus` (an instant query: a vector becomes a list of floats, a scalar a
//! number, no series `[]`). Plain HTTP over one connection per measurement; the built-in
//! provider needs none of this (see `controller`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::analysis::Outcome;

/// One HTTP exchange: the status and body, or why it failed.
pub async fn http(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    tokio::time::timeout(timeout, exchange(url, method, headers, body))
        .await
        .map_err(|_| format!("{method} {url}: no answer within {timeout:?}"))?
}

async fn exchange(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
) -> Result<(u16, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url}: no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// Argo's `web` provider.
pub async fn web(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    json_path: &str,
    timeout: Duration,
) -> Outcome {
    let (status, bytes) = match http(url, method, headers, body, timeout).await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e),
    };
    if !(200..300).contains(&status) {
        return Outcome::Error(format!("{method} {url}: status {status}"));
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => match select(&v, json_path) {
            Ok(v) => Outcome::Value(v),
            Err(e) => Outcome::Error(e),
        },
        // Plain text becomes a string result, as in Argo.
        Err(_) => Outcome::Value(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).trim().to_string(),
        )),
    }
}

/// The `jsonPath` forms Argo's docs use: `{$}`, `{$.a.b}`, `{$.a[0].b}`, `{$.a['b']}`.
pub fn select(v: &serde_json::Value, path: &str) -> Result<serde_json::Value, String> {
    let inner = path
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path)
        .trim();
    let rest = inner
        .strip_prefix('$')
        .ok_or_else(|| format!("jsonPath {path:?} must start with $"))?;
    let mut cur = v;
    let mut s = rest;
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur
                .get(key)
                .ok_or_else(|| format!("jsonPath {path:?}: no field {key:?}"))?;
            s = &r[end..];
        } else if let Some(r) = s.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("jsonPath {path:?}: unclosed ["))?;
            let idx = r[..end].trim();
            let key = idx.trim_matches(|c| c == '\'' || c == '"');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i),
                Err(_) => cur.get(key),
            }
            .ok_or_else(|| format!("jsonPath {path:?}: nothing at [{idx}]"))?;
            s = &r[end + 1..];
        } else {
            return Err(format!("jsonPath {path:?}: cannot read {s:?}"));
        }
    }
    Ok(cur.clone())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Argo's `prometheus` provider, instant query.
pub async fn prometheus(address: &str, query: &str, timeout: Duration) -> Outcome {
    let url = format!(
        "{}/api/v1/query?query={}",
        address.trim_end_matches('/'),
        percent_encode(query)
    );
    let (status, bytes) = match http(&url, "GET", &[], None, timeout).await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e),
    };
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return Outcome::Error(format!("{url}: status {status}, not JSON: {e}")),
    };
    if v["status"] != "success" {
        return Outcome::Error(format!(
            "prometheus: {} {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("")
        ));
    }
    let sample = |pair: &serde_json::Value| -> serde_json::Value {
        let text = pair[1].as_str().unwrap_or("NaN");
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::json!(f),
            Ok(f) if f.is_nan() => serde_json::Value::String("NaN".into()),
            Ok(f) if f > 0.0 => serde_json::Value::String("+Inf".into()),
            _ => serde_json::Value::String(text.to_string()),
        }
    };
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("vector") => Outcome::Value(serde_json::Value::Array(
            data["result"]
                .as_array()
                .map(|a| a.iter().map(|s| sample(&s["value"])).collect())
                .unwrap_or_default(),
        )),
        Some("scalar") => Outcome::Value(sample(&data["result"])),
        other => Outcome::Error(format!(
            "prometheus: result type {other:?}; use an instant vector or scalar query"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::select;
    use serde_json::json;

    #[test]
    fn json_paths_argo_users_write() {
        let v = json!({"last_1m": {"success_rate": 0.99}, "list": [{"x": 1}], "a-b": 2});
        assert_eq!(select(&v, "{$}").expect("root"), v);
        assert_eq!(
            select(&v, "{$.last_1m.success_rate}").expect("f"),
            json!(0.99)
        );
        assert_eq!(select(&v, "{$.list[0].x}").expect("i"), json!(1));
        assert_eq!(select(&v, "{$['a-b']}").expect("q"), json!(2));
        assert!(select(&v, "{$.missing}").is_err());
    }
}
