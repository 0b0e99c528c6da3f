//! Certificates made at test time (rcgen) and loopback upstreams that the pool and TLS tests
//! watch from the server side: a TLS upstream (tokio-rustls + hyper) that reports the SNI,
//! ALPN and client certificate it saw, and a keep-alive HTTP/1.1 upstream that counts
//! connections and tells a peer close from its own idle close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The name the server certificate carries (besides `localhost`).
pub const SERVER_NAME: &str = "web.default.svc.cluster.local";

/// A CA, a server certificate it signed (SANs: [`SERVER_NAME`], `localhost`), a client
/// certificate it signed, and an unrelated CA; all written as PEM files into `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca cert")
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("pki dir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        let root = ca("switchyard test ca");
        let other = ca("some other ca");
        let leaf = |sans: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &root).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec![SERVER_NAME.to_string(), "localhost".to_string()],
            "web",
        );
        let (client_cert, client_key) = leaf(vec!["client.test".to_string()], "client");
        Pki {
            ca: write("ca.pem", root.pem()),
            other_ca: write("other-ca.pem", other.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            dir,
        }
    }

    pub fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server pem")
            .collect::<Result<_, _>>()
            .expect("server certs");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).expect("ca pem") {
                roots.add(c.expect("ca cert")).expect("add ca");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// What the TLS upstream saw.
#[derive(Default)]
pub struct TlsSeen {
    pub accepted: AtomicU64,
    pub handshakes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub last_error: std::sync::Mutex<String>,
}

/// A TLS upstream on 127.0.0.1. Every response carries `x-sni`, `x-alpn`, `x-client-cert`
/// (yes/no) and `x-version` as the server saw them.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<TlsSeen>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(pki: &Pki, require_client_cert: bool) -> TlsUpstream {
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(require_client_cert)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
        let addr = listener.local_addr().expect("tls addr");
        let seen = Arc::new(TlsSeen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, s) = (acceptor.clone(), s.clone());
                conns.spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                // The error first: a test that sees the count may read it.
                                *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                                    e.to_string();
                                s.handshake_failures.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Err(_) => return,
                        };
                    s.handshakes.fetch_add(1, Ordering::SeqCst);
                    let (_, session) = tls.get_ref();
                    let sni = session.server_name().unwrap_or("").to_string();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default();
                    let client_cert = if session.peer_certificates().is_some() {
                        "yes"
                    } else {
                        "no"
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        let resp = Response::builder()
                            .header("x-sni", sni.clone())
                            .header("x-alpn", alpn.clone())
                            .header("x-client-cert", client_cert)
                            .header("x-version", format!("{:?}", req.version()))
                            .body(http_body_util::Full::new(Bytes::from_static(b"secure")));
                        async move { resp }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, seen, task }
    }

    pub fn handshakes(&self) -> u64 {
        self.seen.handshakes.load(Ordering::SeqCst)
    }

    pub fn handshake_failures(&self) -> u64 {
        self.seen.handshake_failures.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub fn last_error(&self) -> String {
        self.seen
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connection events a [`KeepAliveUpstream`] saw.
#[derive(Default)]
pub struct ConnCounts {
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
    /// The proxy closed the connection (EOF while waiting for the next request).
    pub closed_by_peer: AtomicU64,
    /// The upstream gave up waiting for the next request and closed it itself.
    pub closed_idle: AtomicU64,
}

/// A minimal keep-alive HTTP/1.1 server for body-less requests: it answers each request with
/// `200` and the connection's number as the body, and closes a connection that has been idle
/// for `idle_close` (as servers with a keep-alive timeout do).
pub struct KeepAliveUpstream {
    pub addr: SocketAddr,
    pub counts: Arc<ConnCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAliveUpstream {
    pub async fn start(idle_close: Duration) -> KeepAliveUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(ConnCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = c.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let c = c.clone();
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Wait for one full request head, or give up after `idle_close`.
                        let read_head = async {
                            loop {
                                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                    buf.drain(..end + 4);
                                    return true;
                                }
                                match stream.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return false,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                        };
                        match tokio::time::timeout(idle_close, read_head).await {
                            Ok(true) => {}
                            Ok(false) => {
                                c.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Err(_) => {
                                c.closed_idle.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        let body = id.to_string();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        KeepAliveUpstream { addr, counts, task }
    }

    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    pub fn closed_by_peer(&self) -> u64 {
        self.counts.closed_by_peer.load(Ordering::SeqCst)
    }

    pub fn closed_idle(&self) -> u64 {
        self.counts.closed_idle.load(Ordering::SeqCst)
    }
}

impl Drop for KeepAliveUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
