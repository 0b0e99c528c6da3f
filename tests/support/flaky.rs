//! An upstream that names itself and answers 500 to a fixed share of its requests: a canary
//! that fails `fail_per_10` of every 10 (0: never).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub struct Flaky {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl Flaky {
    pub async fn start(name: &'static str, fail_per_10: u64) -> Flaky {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let mut r =
                                http::Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                            if n % 10 < fail_per_10 {
                                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Flaky { addr, requests }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}
