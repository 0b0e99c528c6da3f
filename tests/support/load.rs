//! An open-loop load generator: requests are scheduled at a fixed rate whatever the replies
//! do, and latency counts from the scheduled time (no coordinated omission). Every request's
//! outcome is kept, so a test can say exactly which requests failed and when.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::body::{TestBody, empty_body};
use super::client::{Proto, error_chain};

#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
    pub proto: Proto,
    /// Requests per second, all connections together.
    pub rate: u32,
    pub duration: Duration,
    /// HTTP/1: one request at a time per connection. HTTP/2: streams spread over them.
    pub connections: usize,
    /// Response header recorded per request (e.g. `x-upstream`; `a,b` records both, joined
    /// by a comma).
    pub record_header: &'static str,
    pub timeout: Duration,
    /// Ends the run early (checked before each scheduled request).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Load {
    pub fn new(addr: SocketAddr, authority: &str, proto: Proto, rate: u32, secs: f64) -> Load {
        Load {
            addr,
            authority: authority.to_string(),
            path: "/".to_string(),
            proto,
            rate,
            duration: Duration::from_secs_f64(secs),
            connections: if proto == Proto::H1 { 16 } else { 2 },
            record_header: "x-upstream",
            timeout: Duration::from_secs(10),
            stop: Arc::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Scheduled send time, from the start of the run.
    pub at: Duration,
    pub latency: Duration,
    /// Status and the recorded header, or the transport error.
    pub outcome: Result<(u16, String), String>,
    /// Response headers named `connection: close` (HTTP/1 drain).
    pub conn_close: bool,
}

impl Sample {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Ok((s, _)) if (200..300).contains(&s))
    }

    pub fn header(&self) -> Option<&str> {
        self.outcome.as_ref().ok().map(|(_, h)| h.as_str())
    }
}

pub struct Report {
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !s.ok()).collect()
    }

    /// Latency percentile (0..=100) over successful requests.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut l: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.ok())
            .map(|s| s.latency)
            .collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort();
        let idx = ((p / 100.0) * (l.len() - 1) as f64).round() as usize;
        l[idx.min(l.len() - 1)]
    }

    pub fn summary(&self) -> String {
        let fails = self.failures();
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for f in &fails {
            let k = match &f.outcome {
                Ok((s, _)) => format!("status {s}"),
                Err(e) => e.chars().take(80).collect(),
            };
            *kinds.entry(k).or_default() += 1;
        }
        format!(
            "{} requests, {} failed {:?}, p50 {:?}, p99 {:?}",
            self.samples.len(),
            fails.len(),
            kinds,
            self.percentile(50.0),
            self.percentile(99.0)
        )
    }
}

enum Conn {
    H1(http1::SendRequest<TestBody>),
    H2(http2::SendRequest<TestBody>),
}

async fn connect(addr: SocketAddr, proto: Proto) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    match proto {
        Proto::H1 => {
            let (send, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {}", error_chain(&e)))?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
        Proto::H2 => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {}", error_chain(&e)))?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        }
    }
}

fn request(load: &Load, proto: Proto) -> Request<TestBody> {
    let mut b = Request::builder().method("GET");
    b = match proto {
        Proto::H1 => b
            .uri(load.path.as_str())
            .header("host", load.authority.as_str()),
        Proto::H2 => b
            .version(Version::HTTP_2)
            .uri(format!("http://{}{}", load.authority, load.path)),
    };
    b.body(empty_body()).expect("a valid request")
}

async fn exchange(
    send: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    header: &str,
) -> Result<(u16, String, bool), String> {
    let resp = send.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    // Several names (comma-separated) give their values joined by commas.
    let value = header
        .split(',')
        .map(|name| {
            resp.headers()
                .get(name.trim())
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join(",");
    let close = resp
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {}", error_chain(&e)))?;
    Ok((status, value, close))
}

/// Runs `load` and returns every request's outcome, in schedule order.
pub async fn run(load: Load) -> Report {
    let load = Arc::new(load);
    let total = (load.rate as f64 * load.duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / load.rate.max(1) as f64);
    let start = Instant::now();
    let conns: Vec<Arc<Mutex<Option<Conn>>>> = (0..load.connections.max(1))
        .map(|_| Arc::new(Mutex::new(None)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        if load.stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let at = interval * i as u32;
        tokio::time::sleep_until((start + at).into()).await;
        let slot = conns[i % conns.len()].clone();
        let load = load.clone();
        tasks.spawn(async move {
            let scheduled = start + at;
            let outcome = tokio::time::timeout(load.timeout, one(&load, &slot)).await;
            let outcome = outcome.unwrap_or_else(|_| Err("timed out".to_string()));
            let latency = scheduled.elapsed();
            let conn_close = matches!(outcome, Ok((_, _, true)));
            (
                i,
                Sample {
                    at,
                    latency,
                    outcome: outcome.map(|(s, h, _)| (s, h)),
                    conn_close,
                },
            )
        });
    }
    let mut samples: Vec<Option<Sample>> = vec![None; total];
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += 1;
        if let Ok((i, s)) = done {
            samples[i] = Some(s);
        }
    }
    samples.truncate(sent);
    Report {
        samples: samples
            .into_iter()
            .map(|s| {
                s.unwrap_or(Sample {
                    at: Duration::ZERO,
                    latency: Duration::ZERO,
                    outcome: Err("task panicked".to_string()),
                    conn_close: false,
                })
            })
            .collect(),
    }
}

/// One request; a request hyper reports as canceled was never sent (the connection closed
/// first, e.g. after a GOAWAY), so it is sent again once on a fresh connection, as any HTTP
/// client does.
async fn one(load: &Load, slot: &Mutex<Option<Conn>>) -> Result<(u16, String, bool), String> {
    match attempt(load, slot).await {
        Err(Failed { unsent: true, .. }) => attempt(load, slot).await.map_err(|f| f.error),
        other => other.map_err(|f| f.error),
    }
}

struct Failed {
    unsent: bool,
    error: String,
}

impl From<String> for Failed {
    fn from(error: String) -> Failed {
        Failed {
            unsent: false,
            error,
        }
    }
}

fn unsent_if_canceled(e: hyper::Error) -> Failed {
    Failed {
        unsent: e.is_canceled(),
        error: error_chain(&e),
    }
}

async fn send_and_read(
    fut: impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    header: &str,
) -> Result<(u16, String, bool), Failed> {
    match fut.await {
        Err(e) => Err(unsent_if_canceled(e)),
        Ok(resp) => Ok(exchange(Ok(resp), header).await?),
    }
}

async fn attempt(load: &Load, slot: &Mutex<Option<Conn>>) -> Result<(u16, String, bool), Failed> {
    match load.proto {
        Proto::H1 => {
            // One exchange at a time on an HTTP/1 connection: queue on the slot.
            let mut guard = slot.lock().await;
            let closed = match guard.as_ref() {
                Some(Conn::H1(s)) => s.is_closed(),
                _ => true,
            };
            if closed {
                *guard = Some(connect(load.addr, Proto::H1).await?);
            }
            let Some(Conn::H1(send)) = guard.as_mut() else {
                return Err("no connection".to_string().into());
            };
            let result = match send.ready().await {
                Err(e) => Err(Failed {
                    unsent: true,
                    error: error_chain(&e),
                }),
                Ok(()) => {
                    send_and_read(
                        send.send_request(request(load, Proto::H1)),
                        load.record_header,
                    )
                    .await
                }
            };
            if result.is_err() {
                *guard = None;
            }
            result
        }
        Proto::H2 => {
            let mut send = {
                let mut guard = slot.lock().await;
                let closed = match guard.as_ref() {
                    Some(Conn::H2(s)) => s.is_closed(),
                    _ => true,
                };
                if closed {
                    *guard = Some(connect(load.addr, Proto::H2).await?);
                }
                match guard.as_ref() {
                    Some(Conn::H2(s)) => s.clone(),
                    _ => return Err("no connection".to_string().into()),
                }
            };
            if let Err(e) = send.ready().await {
                return Err(Failed {
                    unsent: true,
                    error: error_chain(&e),
                });
            }
            send_and_read(
                send.send_request(request(load, Proto::H2)),
                load.record_header,
            )
            .await
        }
    }
}
