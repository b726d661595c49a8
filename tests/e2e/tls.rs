//! Downstream TLS: ALPN, filter chains chosen by SNI, certificates rotated
//! on disk, mTLS with `x-forwarded-client-cert`, and bad handshakes that
//! fail their own connection only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::tls::*;
use crate::support::*;

/// One filter chain of the `https` listener.
struct Chain<'a> {
    /// Extra filter chain fields, as YAML lines indented by six spaces.
    chain_extra: &'a str,
    server_names: &'a [&'a str],
    /// The `DownstreamTlsContext` fields, in YAML flow style.
    tls: String,
    /// Extra connection manager fields, in YAML flow style, each followed by a comma.
    hcm_extra: &'a str,
    /// The virtual host's single route, in YAML flow style.
    route: String,
}

fn direct(body: &str) -> String {
    format!(r#"{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }} }}"#)
}

fn to_cluster(cluster: &str) -> String {
    format!(r#"{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}"#)
}

/// `tls_certificates` naming the files of `cert`.
fn certificate_files(cert: &Path, key: &Path) -> String {
    format!(r#"tls_certificates: [{{ certificate_chain: {{ filename: "{}" }}, private_key: {{ filename: "{}" }} }}]"#, cert.display(), key.display())
}

fn bootstrap(chains: &[Chain<'_>], clusters: &str) -> String {
    let mut text = String::from(
        r#"
node: { id: tls }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
  - name: https
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
"#,
    );
    for chain in chains {
        let names: Vec<String> = chain.server_names.iter().map(|name| format!("{name:?}")).collect();
        let names = names.join(", ");
        text.push_str(&format!(
            r#"    - filter_chain_match: {{ server_names: [{names}] }}
{chain_extra}      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, {tls} }}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: t, {extra} route_config: {{ name: r, virtual_hosts: [{{ name: all, domains: ["*"], routes: [{route}] }}] }}, http_filters: [{{ name: envoy.filters.http.router }}] }}
"#,
            chain_extra = chain.chain_extra,
            tls = chain.tls,
            extra = chain.hcm_extra,
            route = chain.route,
        ));
    }
    if clusters.is_empty() {
        text.push_str("  clusters: []\n");
    } else {
        text.push_str("  clusters:\n");
        text.push_str(clusters);
        text.push('\n');
    }
    text
}

async fn start(chains: &[Chain<'_>], clusters: &str, dir: &Path) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(&bootstrap(chains, clusters), dir);
    proxy.wait_ready().await;
    let address = proxy.listener("https").await;
    (proxy, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_selects_http2_or_http1() {
    let dir = temp_dir("tls-alpn");
    let ca = TestCa::new("alpn ca");
    let (cert, key) = ca.issue("server", &["a.example.com"], None).write(&dir, "server");
    let web = Upstream::start("web").await;
    let chain = Chain { chain_extra: "", server_names: &[], tls: format!("common_tls_context: {{ {} }}", certificate_files(&cert, &key)), hcm_extra: "", route: to_cluster("web") };
    let (_proxy, address) = start(&[chain], &static_cluster("web", web.address.port(), None), &dir).await;

    let mut client = ClientTls::new("a.example.com", &ca);
    client.alpn = vec!["h2", "http/1.1"];
    let response = client.get(address, "/h2", &[]).await.unwrap();
    assert_eq!(response.alpn.as_deref(), Some("h2"));
    assert_eq!((response.status, response.body.as_str()), (200, "web /h2 0"));
    assert_eq!(response.headers["x-seen-x-forwarded-proto"], "https");

    client.alpn = vec!["http/1.1"];
    let response = client.get(address, "/h1", &[]).await.unwrap();
    assert_eq!(response.alpn.as_deref(), Some("http/1.1"));
    assert_eq!((response.status, response.body.as_str()), (200, "web /h1 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_filter_chain() {
    let dir = temp_dir("tls-sni");
    let ca = TestCa::new("sni ca");
    let (cert_a, key_a) = ca.issue("a", &["a.example.com"], None).write(&dir, "a");
    let (cert_wild, key_wild) = ca.issue("wild", &["*.example.com"], None).write(&dir, "wild");
    let (cert_b, key_b) = ca.issue("b", &["b.other.test"], None).write(&dir, "b");
    let context = |cert: &Path, key: &Path| format!("common_tls_context: {{ {} }}", certificate_files(cert, key));
    let chains = [
        Chain { chain_extra: "", server_names: &["*.example.com"], tls: context(&cert_wild, &key_wild), hcm_extra: "", route: direct("chain-wildcard") },
        Chain { chain_extra: "", server_names: &["a.example.com"], tls: context(&cert_a, &key_a), hcm_extra: "", route: direct("chain-a") },
        Chain { chain_extra: "", server_names: &["b.other.test"], tls: context(&cert_b, &key_b), hcm_extra: "", route: direct("chain-b") },
    ];
    let (proxy, address) = start(&chains, "", &dir).await;

    let a = ClientTls::new("a.example.com", &ca).get(address, "/", &[]).await.unwrap();
    assert_eq!(a.body, "chain-a", "an exact name beats the wildcard");
    let wildcard = ClientTls::new("x.example.com", &ca).get(address, "/", &[]).await.unwrap();
    assert_eq!(wildcard.body, "chain-wildcard");
    let b = ClientTls::new("b.other.test", &ca).get(address, "/", &[]).await.unwrap();
    assert_eq!(b.body, "chain-b");

    let unknown = ClientTls::new("unknown.test", &ca).get(address, "/", &[]).await;
    assert!(unknown.is_err(), "a name no chain matches fails the handshake when there is no default chain");
    let again = ClientTls::new("a.example.com", &ca).get(address, "/", &[]).await.unwrap();
    assert_eq!(again.body, "chain-a", "the listener keeps serving");

    let failures = sample(&proxy.scrape().await, r#"legate_listener_tls_handshake_failures_total{listener="https"}"#);
    assert_eq!(failures, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotated_on_disk() {
    let dir = temp_dir("tls-rotation");
    let ca = TestCa::new("rotation ca");
    let first = ca.issue("first", &["a.example.com"], None);
    let (cert, key) = first.write(&dir, "server");
    let chain = Chain { chain_extra: "", server_names: &[], tls: format!("common_tls_context: {{ {} }}", certificate_files(&cert, &key)), hcm_extra: "", route: direct("ok") };
    let (_proxy, address) = start(&[chain], "", &dir).await;

    let client = ClientTls::new("a.example.com", &ca);
    let old_stream = client.connect(address).await.unwrap();
    assert_eq!(old_stream.get_ref().1.peer_certificates().unwrap()[0], first.der);
    let mut old_connection = TlsHttpConnection::handshake(old_stream, false).await.unwrap();
    assert_eq!(old_connection.get("a.example.com", "/", &[]).await.unwrap().0, 200);

    let second = ca.issue("second", &["a.example.com"], None);
    second.write(&dir, "server");
    let rotated = eventually(Duration::from_secs(10), || async {
        match client.connect(address).await {
            Ok(stream) => stream.get_ref().1.peer_certificates().is_some_and(|chain| chain[0] == second.der),
            Err(_) => false,
        }
    })
    .await;
    assert!(rotated, "a new handshake gets the rotated certificate");
    assert_eq!(old_connection.get("a.example.com", "/", &[]).await.unwrap().0, 200, "the connection opened before the rotation still works");

    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stream = client.connect(address).await.unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], second.der, "a bad file keeps the previous certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_sets_forwarded_client_cert() {
    let dir = temp_dir("tls-mtls");
    let server_ca = TestCa::new("server ca");
    let client_ca = TestCa::new("client ca");
    let other_ca = TestCa::new("other ca");
    let (cert, key) = server_ca.issue("server", &["a.example.com"], Some("spiffe://test/proxy")).write(&dir, "server");
    let ca_path = dir.join("client-ca.crt");
    std::fs::write(&ca_path, client_ca.pem()).unwrap();
    let web = Upstream::start("web").await;
    let tls = format!(
        r#"require_client_certificate: true, common_tls_context: {{ {}, validation_context: {{ trusted_ca: {{ filename: "{}" }}, match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ prefix: "spiffe://test/" }} }}] }} }}"#,
        certificate_files(&cert, &key),
        ca_path.display()
    );
    let hcm = "forward_client_cert_details: SANITIZE_SET, set_current_client_cert_details: { subject: true, uri: true, dns: true },";
    let chain = Chain { chain_extra: "", server_names: &[], tls, hcm_extra: hcm, route: to_cluster("web") };
    let (proxy, address) = start(&[chain], &static_cluster("web", web.address.port(), None), &dir).await;

    let mut client = ClientTls::new("a.example.com", &server_ca);
    assert!(client.get(address, "/", &[]).await.is_err(), "no client certificate fails");

    client.client = Some(other_ca.issue("stranger", &["client.test"], Some("spiffe://test/client")));
    assert!(client.get(address, "/", &[]).await.is_err(), "an untrusted client certificate fails");

    client.client = Some(client_ca.issue("wrong uri", &["client.test"], Some("spiffe://elsewhere/client")));
    assert!(client.get(address, "/", &[]).await.is_err(), "a certificate whose URI SAN does not match fails");

    let trusted = client_ca.issue("client", &["client.test"], Some("spiffe://test/client"));
    client.client = Some(trusted.clone());
    let response = client.get(address, "/", &[("x-forwarded-client-cert", "Hash=forged")]).await.unwrap();
    assert_eq!(response.status, 200);
    let forwarded: Vec<_> = response.headers.get_all("x-seen-x-forwarded-client-cert").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(forwarded.len(), 1, "one x-forwarded-client-cert reaches the upstream: {forwarded:?}");
    let expected = format!(
        "By=spiffe://test/proxy;Hash={};Subject=\"CN=client\";URI=spiffe://test/client;DNS=client.test",
        sha256_hex(&trusted.der)
    );
    assert_eq!(forwarded[0], expected, "the forged header is replaced by the connection's details");

    let failures = sample(&proxy.scrape().await, r#"legate_listener_tls_handshake_failures_total{listener="https"}"#).unwrap();
    assert!(failures >= 3.0, "rejected client certificates are counted: {failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_fail_alone() {
    let dir = temp_dir("tls-bad");
    let ca = TestCa::new("bad ca");
    let (cert, key) = ca.issue("server", &["a.example.com"], None).write(&dir, "server");
    let chain = Chain {
        chain_extra: "      transport_socket_connect_timeout: 1s\n",
        server_names: &[],
        tls: format!("common_tls_context: {{ {} }}", certificate_files(&cert, &key)),
        hcm_extra: "",
        route: direct("ok"),
    };
    let (proxy, address) = start(&[chain], "", &dir).await;

    // A client that connects and sends nothing is closed after the handshake timeout.
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut nothing = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut nothing)).await;
    assert!(closed.is_ok(), "the stalled handshake is closed within its 1 s timeout");

    let mut plaintext = tokio::net::TcpStream::connect(address).await.unwrap();
    plaintext.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plaintext.read_to_end(&mut reply)).await.expect("the proxy closes the connection");
    assert!(read.is_err() || !String::from_utf8_lossy(&reply).contains("200"), "plaintext gets no HTTP response");

    // The first bytes of a TLS record header announcing a ClientHello, then EOF.
    let mut truncated = tokio::net::TcpStream::connect(address).await.unwrap();
    truncated.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.unwrap();
    truncated.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), truncated.read_to_end(&mut rest)).await.expect("the proxy closes the connection");

    let counted = eventually(Duration::from_secs(5), || async {
        sample(&proxy.scrape().await, r#"legate_listener_tls_handshake_failures_total{listener="https"}"#) == Some(3.0)
    })
    .await;
    assert!(counted, "the stalled, plaintext and truncated handshakes are counted");

    let good = ClientTls::new("a.example.com", &ca).get(address, "/", &[]).await.unwrap();
    assert_eq!((good.status, good.body.as_str()), (200, "ok"));
    let handshakes = sample(&proxy.scrape().await, r#"legate_listener_tls_handshakes_total{listener="https"}"#);
    assert_eq!(handshakes, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_tls_upstream() {
    use crate::support::grpc::echo::EchoRequest;
    use crate::support::grpc::{client, EchoUpstream};

    let dir = temp_dir("tls-upstream");
    let upstream_ca = TestCa::new("upstream ca");
    let proxy_ca = TestCa::new("proxy client ca");
    let seen_server_names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let upstream_cert = upstream_ca.issue("echo", &["echo.internal"], Some("spiffe://test/echo"));
    let config = server_config(&upstream_cert, Some(&proxy_ca), &["h2"]);
    let echo = EchoUpstream::start_tls("echo-tls", config, seen_server_names.clone()).await;

    let ca_path = dir.join("upstream-ca.crt");
    std::fs::write(&ca_path, upstream_ca.pem()).unwrap();
    let (client_cert, client_key) = proxy_ca.issue("proxy", &["proxy.internal"], None).write(&dir, "proxy-client");
    let bootstrap = format!(
        r#"
node: {{ id: tls-upstream }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: grpc
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc
          route_config: {{ name: r, virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: echo }} }}] }}] }}
          http_filters: [{{ name: envoy.filters.http.router }}]
  clusters:
  - name: echo
    connect_timeout: 2s
    http2_protocol_options: {{}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: echo.internal
        common_tls_context:
          {certificates}
          validation_context:
            trusted_ca: {{ filename: "{ca}" }}
            match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: "spiffe://test/echo" }} }}]
    load_assignment:
      cluster_name: echo
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
"#,
        certificates = certificate_files(&client_cert, &client_key),
        ca = ca_path.display(),
        port = echo.address.port(),
    );
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("grpc").await;

    let mut echo_client = client(address).await;
    let response = echo_client.unary(EchoRequest { message: "over tls".to_string(), ..Default::default() }).await.expect("the call succeeds");
    assert_eq!(response.get_ref().message, "over tls");
    assert_eq!(response.get_ref().endpoint, "echo-tls");
    assert_eq!(echo.calls(), 1);
    assert_eq!(seen_server_names.lock().unwrap().as_slice(), &[Some("echo.internal".to_string())], "the proxy sends the configured SNI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_fails() {
    let dir = temp_dir("tls-upstream-untrusted");
    let upstream_ca = TestCa::new("upstream ca");
    let other_ca = TestCa::new("other ca");
    let seen_server_names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = server_config(&upstream_ca.issue("echo", &["echo.internal"], None), None, &["h2"]);
    let echo = crate::support::grpc::EchoUpstream::start_tls("echo-tls", config, seen_server_names).await;
    let ca_path = dir.join("other-ca.crt");
    std::fs::write(&ca_path, other_ca.pem()).unwrap();
    let cluster = format!(
        "{}\n    http2_protocol_options: {{}}\n    transport_socket: {{ name: tls, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }} }} }} }}",
        static_cluster("echo", echo.address.port(), None),
        ca_path.display()
    );
    let proxy = Proxy::start(&static_bootstrap("", "              - { match: { prefix: \"/\" }, route: { cluster: echo } }", &cluster), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;
    let (status, _) = http2_get(address, "a", "/").await.unwrap();
    assert_eq!(status, 502, "a server certificate from an untrusted CA fails the upstream connection");
    assert_eq!(echo.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_certificate_file_stops_start() {
    let dir = temp_dir("tls-missing");
    let missing = dir.join("absent.crt");
    let chain = Chain { chain_extra: "", server_names: &[], tls: format!("common_tls_context: {{ {} }}", certificate_files(&missing, &missing)), hcm_extra: "", route: direct("ok") };
    let path = dir.join("bootstrap.yaml");
    std::fs::write(&path, bootstrap(&[chain], "")).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(legate_bin()).args(["proxy", "--config", path.to_str().unwrap()]).kill_on_drop(true).output(),
    )
    .await
    .expect("the proxy exits")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("failed to read {}", missing.display())), "got {stderr}");
}

/// Starts an HTTP/1.1 server over TLS that replies `tls-h1 <path> <alpn>`.
pub(crate) async fn start_tls_http1_upstream(config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let alpn = stream.get_ref().1.alpn_protocol().map(|protocol| String::from_utf8_lossy(protocol).into_owned()).unwrap_or_default();
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let body = format!("tls-h1 {} {alpn}", request.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_to_tls_upstream() {
    let dir = temp_dir("tls-upstream-h1");
    let upstream_ca = TestCa::new("upstream ca");
    let config = server_config(&upstream_ca.issue("web", &["web.internal"], None), None, &["http/1.1"]);
    let upstream = start_tls_http1_upstream(config).await;
    let ca_path = dir.join("upstream-ca.crt");
    std::fs::write(&ca_path, upstream_ca.pem()).unwrap();
    let cluster = format!(
        "{}\n    transport_socket: {{ name: tls, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: web.internal, common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }} }} }} }}",
        static_cluster("web", upstream.port(), None),
        ca_path.display()
    );
    let proxy = Proxy::start(&static_bootstrap("", "              - { match: { prefix: \"/\" }, route: { cluster: web } }", &cluster), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;

    let (status, body) = http1_get(address, "a", "/page").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "tls-h1 /page http/1.1", "an HTTP/1.1 cluster offers http/1.1 in ALPN");
}
