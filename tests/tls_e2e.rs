//! DestinationRule `tls` SIMPLE / MUTUAL against a real rustls upstream on 127.0.0.1, with
//! certificates made at test time: verification by CA, SAN and SNI, client certificates,
//! ALPN, handshake failures as 503 UF, and certificate files checked at validation.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::e2e_helpers::{admin_get, flag_tap};
use support::tls::{Pki, SERVER_NAME, TlsUpstream};
use support::*;

const HOST: &str = "web.default.svc.cluster.local";

/// ServiceEntry `web` (port 80 of `protocol`, endpoint `up`) and a DestinationRule whose
/// top-level `tls` block is `tls` (flow-style YAML).
fn config(up: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 80, name: web, protocol: {protocol}}}]
  resolution: STATIC
  endpoints:
  - {{address: {}, ports: {{web: {}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  trafficPolicy:
    tls: {tls}
",
        up.ip(),
        up.port()
    )
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn get(addr: SocketAddr, proto: Proto) -> Reply {
    let mut c = Client::connect(addr, proto).await;
    c.set_timeout(Duration::from_secs(5));
    c.try_request("GET", HOST, "/", &[])
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"))
}

async fn cluster_stat(p: &TestProxy, name: &str) -> u64 {
    let text = admin_get(p, "/stats/prometheus").await.text();
    let prefix = format!("envoy_cluster_{name}{{cluster_name=\"outbound|80||{HOST}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_with_ca_originates_tls_with_the_service_host_as_sni() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&pki.ca));
    let p = TestProxy::start(&config(up.addr, "HTTP", &tls)).await;
    for proto in [Proto::H1, Proto::H2] {
        let r = get(p.addr, proto).await;
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        assert_eq!(r.text(), "secure");
        // Istio's auto-SNI: the service host when `sni` is unset.
        assert_eq!(r.header("x-sni"), Some(HOST));
        assert_eq!(r.header("x-alpn"), Some("http/1.1"));
        assert_eq!(r.header("x-client-cert"), Some("no"));
    }
    assert_eq!(up.requests(), 2);
    // Both requests rode one pooled TLS connection.
    assert_eq!(up.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_and_subject_alt_names_are_sent_and_checked() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    // The configured SNI is sent; the certificate is checked against subjectAltNames instead.
    let tls = format!(
        "{{mode: SIMPLE, caCertificates: {}, sni: api.internal.test, subjectAltNames: [localhost]}}",
        path(&pki.ca)
    );
    let p = TestProxy::start(&config(up.addr, "HTTPS", &tls)).await;
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sni"), Some("api.internal.test"));

    // A SAN the certificate does not carry: the handshake fails on our side.
    let tls = format!(
        "{{mode: SIMPLE, caCertificates: {}, subjectAltNames: [billing.example.com]}}",
        path(&pki.ca)
    );
    p.rewrite(&config(up.addr, "HTTPS", &tls))
        .await
        .expect("reload");
    let tap = flag_tap(&p).await;
    let r = get(tap, Proto::H1).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.header("x-test-response-flag")
            .is_some_and(|f| f.split(',').any(|f| f == "UF")),
        "flag {:?}",
        r.header("x-test-response-flag")
    );
    assert!(
        r.text().contains("TLS_error") && r.text().contains("not valid for name"),
        "body {:?}",
        r.text()
    );
    // An SNI the certificate does not carry fails the same way without subjectAltNames.
    let tls = format!(
        "{{mode: SIMPLE, caCertificates: {}, sni: other.example.com}}",
        path(&pki.ca)
    );
    p.rewrite(&config(up.addr, "HTTPS", &tls))
        .await
        .expect("reload");
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 503, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_503_uf_counted_and_retried_as_a_connect_failure() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&pki.other_ca));
    let p = TestProxy::start(&config(up.addr, "HTTP", &tls)).await;
    let tap = flag_tap(&p).await;
    let r = get(tap, Proto::H1).await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Istio's default retry policy retries connect failures twice: UF, then URX.
    assert_eq!(r.header("x-test-response-flag"), Some("UF,URX"));
    assert!(
        r.text().contains("TLS_error") && r.text().contains("UnknownIssuer"),
        "body {:?}",
        r.text()
    );
    assert_eq!(cluster_stat(&p, "upstream_cx_connect_fail").await, 3);
    assert_eq!(cluster_stat(&p, "upstream_rq_retry").await, 2);
    assert_eq!(up.requests(), 0);
    // The server saw three handshakes that our side abandoned.
    assert!(
        support::e2e_helpers::eventually(Duration::from_secs(2), || up.handshake_failures() == 3)
            .await,
        "upstream saw {} failed handshakes",
        up.handshake_failures()
    );

    // insecureSkipVerify accepts the certificate the wrong CA cannot verify.
    let tls = format!(
        "{{mode: SIMPLE, caCertificates: {}, insecureSkipVerify: true}}",
        path(&pki.other_ca)
    );
    p.rewrite(&config(up.addr, "HTTP", &tls))
        .await
        .expect("reload");
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sni"), Some(HOST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_presents_the_client_certificate() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, true).await;
    let tls = format!(
        "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}}}",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let p = TestProxy::start(&config(up.addr, "HTTP", &tls)).await;
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-client-cert"), Some("yes"));

    // SIMPLE sends no client certificate: the upstream refuses the handshake. With TLS 1.3
    // the client's side of the handshake is done before the server checks its certificate,
    // so (as with Envoy) the refusal arrives as a reset of the first request.
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&pki.ca));
    p.rewrite(&config(up.addr, "HTTP", &tls))
        .await
        .expect("reload");
    let before = up.handshake_failures();
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 503, "{}", r.text());
    // The upstream's accept task counts the failure on its own schedule, which may be just
    // after our 503 reached the client.
    assert!(
        support::e2e_helpers::eventually(Duration::from_secs(2), || up.handshake_failures()
            > before)
        .await,
        "upstream saw no failed handshake"
    );
    assert!(
        up.last_error().to_lowercase().contains("certificate"),
        "upstream error {:?}",
        up.last_error()
    );
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_port_negotiates_h2_by_alpn() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&pki.ca));
    let p = TestProxy::start(&config(up.addr, "HTTP2", &tls)).await;
    for proto in [Proto::H1, Proto::H2] {
        let r = get(p.addr, proto).await;
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        assert_eq!(r.header("x-alpn"), Some("h2"));
        assert_eq!(r.header("x-version"), Some("HTTP/2.0"));
    }
    assert_eq!(up.handshakes(), 1, "one shared h2 connection");
}

/// An Upgrade request to an HTTP/2 port needs HTTP/1.1: it goes out on a TLS connection of its
/// own that offers only `http/1.1` in ALPN, while ordinary requests keep the shared h2 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_an_http2_port_negotiates_http1_by_alpn() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&pki.ca));
    let p = TestProxy::start(&config(up.addr, "HTTP2", &tls)).await;
    let mut c = Client::h1(p.addr).await;
    // This upstream does not switch protocols: its 200 says how the request arrived.
    let (reply, _) = c
        .upgrade(HOST, "/ws", &[("sec-websocket-version", "13")])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-alpn"), Some("http/1.1"), "{reply:?}");
    assert_eq!(reply.header("x-version"), Some("HTTP/1.1"), "{reply:?}");
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.header("x-alpn"), Some("h2"));
    assert_eq!(up.handshakes(), 2, "one HTTP/1.1 and one h2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_broken_certificates_refuse_the_config() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, false).await;
    let missing = pki.dir.path().join("missing.pem");
    let tls = format!("{{mode: SIMPLE, caCertificates: {}}}", path(&missing));
    let diags =
        match TestProxy::try_start_with(&config(up.addr, "HTTP", &tls), ProxyOptions::default())
            .await
        {
            Ok(_) => panic!("a missing CA file was accepted"),
            Err(d) => d,
        };
    let shown: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.iter().any(|d| d.contains("Error")
            && d.contains("DestinationRule/default/web")
            && d.contains("spec.trafficPolicy.tls.caCertificates")
            && d.contains(&path(&missing))),
        "{shown:#?}"
    );

    // A good config serves; a reload with a key that is not PEM is refused and the last good
    // table keeps serving over TLS.
    let good = format!(
        "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}}}",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let p = TestProxy::start(&config(up.addr, "HTTP", &good)).await;
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").expect("write garbage");
    let bad = format!(
        "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}}}",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&garbage)
    );
    let diags = p
        .rewrite(&config(up.addr, "HTTP", &bad))
        .await
        .expect_err("a broken key must be refused");
    let shown: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.iter().any(|d| d.contains("spec.trafficPolicy.tls.privateKey")
            && d.contains(&path(&garbage))),
        "{shown:#?}"
    );
    let r = get(p.addr, Proto::H1).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // MUTUAL without a key: the webhook's message, once, not a file error on top.
    let no_key = format!(
        "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}}}",
        path(&pki.ca),
        path(&pki.client_cert)
    );
    let diags = p
        .rewrite(&config(up.addr, "HTTP", &no_key))
        .await
        .expect_err("MUTUAL without a key must be refused");
    let shown: Vec<String> = diags
        .iter()
        .map(|d| d.to_string())
        .filter(|d| d.contains("Error"))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].contains("spec.trafficPolicy.tls.privateKey")
            && shown[0].contains("private key required for mutual tls"),
        "{shown:#?}"
    );

    // credentialName needs Kubernetes secrets: refused with a reason.
    let diags = p
        .rewrite(&config(
            up.addr,
            "HTTP",
            "{mode: SIMPLE, credentialName: web-cert}",
        ))
        .await
        .expect_err("credentialName must be refused");
    let shown: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.iter().any(
            |d| d.contains("spec.trafficPolicy.tls.credentialName") && d.contains("Kubernetes")
        ),
        "{shown:#?}"
    );
    // The default SNI names the service; the server certificate is issued for it.
    assert_eq!(SERVER_NAME, HOST);
}
