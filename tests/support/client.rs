//! A low-level keep-alive client built on `hyper::client::conn`, so tests
//! decide the exact request line, Host header and protocol the proxy sees
//! (the pooled legacy client would rewrite absolute-form URIs and add Host).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::body::{TestBody, empty_body};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First value of `name`; None if absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
    }

    /// Parses the body as JSON (e.g. an upstream `/echo` answer), panicking
    /// with the raw body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

enum Sender {
    H1(http1::SendRequest<TestBody>),
    H2(http2::SendRequest<TestBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }
}

pub struct Client {
    pub addr: SocketAddr,
    proto: Proto,
    sender: Option<Sender>,
    connects: u64,
    timeout: Duration,
}

/// hyper's Display shows only the outermost error ("error trying to
/// connect"); the cause is what a failing test needs to print.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Client {
        Client::connect(addr, Proto::H1).await
    }

    pub async fn h2(addr: SocketAddr) -> Client {
        Client::connect(addr, Proto::H2).await
    }

    /// Connects eagerly so a dead address fails at the line that named it.
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Client {
        let mut client = Client {
            addr,
            proto,
            sender: None,
            connects: 0,
            timeout: DEFAULT_TIMEOUT,
        };
        if let Err(e) = client.reconnect().await {
            panic!("{proto:?} client: {e}");
        }
        client
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Per-request deadline (default 10 s) covering connect, send and the
    /// whole response body.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// TCP connections opened so far, to assert keep-alive reuse.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Whether the current connection is known to be closed (by the peer or
    /// after an upgrade took it over).
    pub fn is_closed(&self) -> bool {
        self.sender.as_ref().is_none_or(Sender::is_closed)
    }

    async fn reconnect(&mut self) -> Result<(), String> {
        self.sender = None;
        let addr = self.addr;
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr} failed: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let sender = match self.proto {
            Proto::H1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {}", error_chain(&e)))?;
                // The driver ends with the connection; errors then surface
                // through the next request instead.
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                Sender::H1(sender)
            }
            Proto::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2c handshake with {addr}: {}", error_chain(&e)))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H2(sender)
            }
        };
        self.connects += 1;
        self.sender = Some(sender);
        Ok(())
    }

    fn build(
        &self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Request<TestBody> {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("invalid method {method:?}: {e}"));
        let absolute = path.starts_with("http://") || path.starts_with("https://");
        let uri: Uri = match self.proto {
            Proto::H1 => path.parse(),
            // h2 always sends :scheme/:authority/:path; the URI is where hyper
            // takes them from.
            Proto::H2 if absolute && authority.is_empty() => path.parse(),
            Proto::H2 => {
                let pq = if absolute {
                    let u: Uri = path
                        .parse()
                        .unwrap_or_else(|e| panic!("invalid URI {path:?}: {e}"));
                    u.path_and_query()
                        .map(|pq| pq.as_str().to_string())
                        .unwrap_or_else(|| "/".into())
                } else {
                    path.to_string()
                };
                if authority.is_empty() {
                    pq.parse()
                } else {
                    format!("http://{authority}{pq}").parse()
                }
            }
        }
        .unwrap_or_else(|e| {
            panic!("invalid request target {path:?} (authority {authority:?}): {e}")
        });
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = match self.proto {
            Proto::H1 => Version::HTTP_11,
            Proto::H2 => Version::HTTP_2,
        };
        let caller_sets_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
        if self.proto == Proto::H1 && !authority.is_empty() && !caller_sets_host {
            let host = HeaderValue::from_str(authority)
                .unwrap_or_else(|e| panic!("invalid authority {authority:?}: {e}"));
            req.headers_mut().insert(header::HOST, host);
        }
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
            let v = HeaderValue::from_str(value)
                .unwrap_or_else(|e| panic!("invalid value for header {name}: {value:?}: {e}"));
            req.headers_mut().append(n, v);
        }
        req
    }

    /// Sends on the current connection, reconnecting when it is closed. A
    /// request is retried on a fresh connection only if hyper hands it back
    /// unsent, so nothing is ever delivered twice.
    async fn send(&mut self, mut req: Request<TestBody>) -> Result<Response<Incoming>, String> {
        for attempt in 0..2 {
            let needs_connect = self.sender.as_ref().is_none_or(Sender::is_closed);
            if needs_connect {
                self.reconnect().await?;
            }
            let sender = self.sender.as_mut().expect("connected above");
            if sender.ready().await.is_err() {
                self.reconnect().await?;
            }
            let result = match self.sender.as_mut().expect("connected above") {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => {
                        self.sender = None;
                        req = unsent;
                    }
                    _ => return Err(error_chain(e.error())),
                },
            }
        }
        unreachable!("the second attempt always returns")
    }

    async fn exchange(&mut self, req: Request<TestBody>) -> Result<Reply, String> {
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| {
            format!(
                "reading response body (status {}): {}",
                parts.status,
                error_chain(&e)
            )
        })?;
        let trailers = collected.trailers().cloned();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// Like `request_with_body` but returns failures (refused, reset, timeout)
    /// as text, for tests that expect the proxy to fail the request.
    pub async fn try_request_with_body(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Result<Reply, String> {
        let req = self.build(method, authority, path, headers, body);
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may still carry the abandoned exchange.
                self.sender = None;
                Err(format!("timed out after {:?}", self.timeout))
            }
        }
    }

    pub async fn try_request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.try_request_with_body(method, authority, path, headers, empty_body())
            .await
    }

    pub async fn request_with_body(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Reply {
        match self
            .try_request_with_body(method, authority, path, headers, body)
            .await
        {
            Ok(reply) => reply,
            Err(e) => panic!(
                "{:?} {method} {path} (authority {authority:?}) to {}: {e}",
                self.proto, self.addr
            ),
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.request_with_body(method, authority, path, headers, empty_body())
            .await
    }

    pub async fn get(&mut self, authority: &str, path: &str) -> Reply {
        self.request("GET", authority, path, &[]).await
    }

    /// HTTP/1.1 Upgrade handshake (defaults `connection: upgrade` and
    /// `upgrade: websocket` unless `headers` sets them). On 101 the upgraded
    /// byte stream is returned and this client reconnects for its next request.
    pub async fn upgrade(
        &mut self,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Reply, Option<TokioIo<Upgraded>>) {
        assert_eq!(self.proto, Proto::H1, "upgrade needs an HTTP/1.1 client");
        let mut all: Vec<(&str, &str)> = Vec::new();
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
        {
            all.push(("connection", "upgrade"));
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
        {
            all.push(("upgrade", "websocket"));
        }
        all.extend_from_slice(headers);
        let req = self.build("GET", authority, path, &all, empty_body());
        let what = format!(
            "upgrade GET {path} (authority {authority:?}) to {}",
            self.addr
        );
        let result = tokio::time::timeout(self.timeout, async {
            let mut resp = self.send(req).await?;
            if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                let (parts, body) = resp.into_parts();
                let collected = body
                    .collect()
                    .await
                    .map_err(|e| format!("reading response body: {}", error_chain(&e)))?;
                let trailers = collected.trailers().cloned();
                let reply = Reply {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: collected.to_bytes(),
                    trailers,
                };
                return Ok((reply, None));
            }
            let upgraded = hyper::upgrade::on(&mut resp)
                .await
                .map_err(|e| format!("taking over the upgraded connection: {}", error_chain(&e)))?;
            let reply = Reply {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: Bytes::new(),
                trailers: None,
            };
            Ok::<_, String>((reply, Some(TokioIo::new(upgraded))))
        })
        .await;
        self.sender = None;
        match result {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: timed out after {:?}", self.timeout),
        }
    }
}

/// Counts body texts over `n` sequential requests (split-accuracy tests).
pub async fn tally(
    client: &mut Client,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = client.request("GET", authority, path, headers).await;
        *counts.entry(reply.text()).or_insert(0) += 1;
    }
    counts
}
