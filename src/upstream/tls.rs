//! TLS origination for DestinationRule `tls.mode` SIMPLE and MUTUAL. Certificates are read and
//! the rustls `ClientConfig` is built once when a table is compiled (validation builds it too,
//! so a broken file refuses the config before anything is served); connections only run the
//! handshake.
//!
//! Istio's choices copied here: without `caCertificates` the server is verified against the
//! system trust store (Istio's `VERIFY_CERTIFICATE_AT_CLIENT`); without `sni` the service host
//! is sent and verified (Istio's auto-SNI and auto-SAN-validation, which use the request's
//! host, and our `:authority` upstream is the service host); `subjectAltNames` replaces the
//! SNI name as the names the certificate must carry.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::istio::{ClientTlsSettings, TlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error(
        "credentialName needs Kubernetes secrets, which switchyard does not read; use caCertificates, clientCertificate and privateKey files"
    )]
    CredentialName,
    #[error("{value:?} is not a DNS name or IP address")]
    Name { value: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// A [`TlsError`] and the `tls` field it is about (`caCertificates`, `sni`, ...).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {error}")]
pub struct FieldError {
    pub field: &'static str,
    pub error: TlsError,
}

fn at<E: Into<TlsError>>(field: &'static str) -> impl FnOnce(E) -> FieldError {
    move |error| FieldError {
        field,
        error: error.into(),
    }
}

/// One cluster's TLS client: the cached config, the name to send and verify, and a digest of
/// the settings and file contents that tells pools with the same TLS apart from others.
pub struct TlsOrigin {
    connector: TlsConnector,
    /// `None`: no name to send (wildcard service host); the endpoint's IP is verified instead.
    server_name: Option<ServerName<'static>>,
    pub key: [u8; 32],
}

impl std::fmt::Debug for TlsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOrigin")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsOrigin {
    /// The same origin offering only `http/1.1` in ALPN: Upgrade requests to an HTTP/2
    /// service go out on HTTP/1.1 connections.
    pub fn for_http1(&self) -> TlsOrigin {
        let mut config = (**self.connector.config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut key = self.key;
        // Keeps the two apart wherever origins are compared by key.
        key[0] ^= 0x01;
        TlsOrigin {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: self.server_name.clone(),
            key,
        }
    }

    /// The origin for `tls`, or `None` when it sends plaintext (DISABLE, and ISTIO_MUTUAL which
    /// validation only lets through as plaintext). `service_host` is the default SNI; `h2`
    /// picks the ALPN offered.
    pub fn build(
        tls: &ClientTlsSettings,
        service_host: &str,
        h2: bool,
    ) -> Result<Option<TlsOrigin>, FieldError> {
        if !matches!(tls.mode, Some(TlsMode::Simple | TlsMode::Mutual)) {
            return Ok(None);
        }
        if set(&tls.credential_name).is_some() {
            return Err(FieldError {
                field: "credentialName",
                error: TlsError::CredentialName,
            });
        }
        let mut digest = Sha256::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let insecure = tls.insecure_skip_verify.is_some_and(|b| b.0);
        let verifier: Arc<dyn ServerCertVerifier> = if insecure {
            digest.update(b"insecure\0");
            Arc::new(NoVerify(provider.clone()))
        } else {
            let roots = match set(&tls.ca_certificates) {
                Some(path) => {
                    let pem = read(path).map_err(at("caCertificates"))?;
                    digest.update(&pem);
                    Arc::new(roots_from_pem(path, &pem).map_err(at("caCertificates"))?)
                }
                None => system_roots(),
            };
            let mut crls = Vec::new();
            if let Some(path) = set(&tls.ca_crl) {
                let pem = read(path).map_err(at("caCrl"))?;
                digest.update(&pem);
                crls = CertificateRevocationListDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| FieldError {
                        field: "caCrl",
                        error: TlsError::Pem {
                            path: path.to_string(),
                            message: format!("invalid PEM: {e}"),
                        },
                    })?;
                if crls.is_empty() {
                    return Err(FieldError {
                        field: "caCrl",
                        error: TlsError::Pem {
                            path: path.to_string(),
                            message: "no X509 CRL block".to_string(),
                        },
                    });
                }
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .with_crls(crls)
                .build()
                .map_err(|e| FieldError {
                    field: "caCrl",
                    error: TlsError::Rustls(rustls::Error::General(e.to_string())),
                })?;
            if tls.subject_alt_names.is_empty() {
                webpki
            } else {
                let mut names = Vec::with_capacity(tls.subject_alt_names.len());
                for san in &tls.subject_alt_names {
                    digest.update(san.as_bytes());
                    digest.update(b"\0");
                    names.push(server_name(san).map_err(at("subjectAltNames"))?);
                }
                Arc::new(SanVerifier {
                    inner: webpki,
                    names,
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(at("mode"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = if tls.mode == Some(TlsMode::Mutual) {
            let cert_path = set(&tls.client_certificate).unwrap_or_default();
            let key_path = set(&tls.private_key).unwrap_or_default();
            let cert_pem = read(cert_path).map_err(at("clientCertificate"))?;
            let key_pem = read(key_path).map_err(at("privateKey"))?;
            digest.update(&cert_pem);
            digest.update(&key_pem);
            let chain = certs_from_pem(cert_path, &cert_pem).map_err(at("clientCertificate"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| FieldError {
                field: "privateKey",
                error: TlsError::Pem {
                    path: key_path.to_string(),
                    message: format!("no usable private key: {e}"),
                },
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(at("privateKey"))?
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let server_name = match set(&tls.sni) {
            Some(sni) => Some(server_name(sni).map_err(at("sni"))?),
            // A wildcard host names no server; the endpoint address is verified instead.
            None if service_host.starts_with('*') => None,
            None => server_name(service_host).ok(),
        };
        digest.update(format!("{:?}|{server_name:?}|{h2}", tls.mode).as_bytes());
        Ok(Some(TlsOrigin {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            key: digest.finalize().into(),
        }))
    }

    /// Runs the client handshake on `tcp`. The error reads like Envoy's transport failure
    /// reason (`TLS_error: ...`), which ends up in the 503 body and the access log.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS_error: {e}"))
    }
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn certs_from_pem(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::Pem {
        path: path.to_string(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".to_string()));
    }
    Ok(certs)
}

fn roots_from_pem(path: &str, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(path, pem)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_string(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The operating system's CA bundle, read once per process (as Envoy reads the file Istio
/// points it at). A machine without one verifies nothing successfully: every handshake then
/// fails as an unknown issuer, which is what Envoy does with an empty bundle.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                tracing::warn!(
                    "no CA certificates in the system trust store: TLS origination without caCertificates will fail"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

fn server_name(s: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(s.to_string()).map_err(|_| TlsError::Name {
        value: s.to_string(),
    })
}

/// Verifies the chain as usual, then accepts the certificate if it is valid for any of the
/// configured `subjectAltNames` rather than for the SNI name.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subjectAltNames to verify".to_string());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecureSkipVerify`: any certificate is accepted, but the handshake signatures are still
/// checked, so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A plaintext or TLS upstream connection, so one pool code path drives both.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
