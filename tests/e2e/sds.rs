//! SDS through Legate's own control plane: a listener's certificate and
//! client CA come from `Secret` resources, a new secret version reaches new
//! handshakes while open connections keep working, a missing secret fails
//! `legate apply`, and `/config_dump` hides private keys.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::tls::*;
use crate::support::*;

/// Renders a `Secret` with `cert` inline as its `tls_certificate`.
fn certificate_secret(name: &str, cert: &TestCert) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  tls_certificate:
    certificate_chain: {{ inline_string: {chain} }}
    private_key: {{ inline_string: {key} }}
"#,
        chain = serde_json::to_string(&cert.cert_pem).unwrap(),
        key = serde_json::to_string(&cert.key_pem).unwrap(),
    )
}

/// Renders a `Secret` with a `validation_context` that trusts `ca`.
fn validation_secret(name: &str, ca: &TestCa) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  validation_context:
    trusted_ca: {{ inline_string: {ca} }}
"#,
        ca = serde_json::to_string(&ca.pem()).unwrap(),
    )
}

/// Renders a listener `https` that returns 200 `ok`, with its certificate
/// from the secret `certificate`. A non-empty `extra_tls` (a
/// `DownstreamTlsContext` field) also takes the client CA from the secret `client-ca`.
fn sds_listener(certificate: &str, extra_tls: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: https
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
        {extra_tls}
        common_tls_context:
          tls_certificate_sds_secret_configs: [{{ name: {certificate}, sds_config: {{ ads: {{}} }} }}]
          {validation}
    filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: sds
        route_config:
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: ok }} }} }}]
        http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
"#,
        validation = if extra_tls.is_empty() { "" } else { "validation_context_sds_secret_config: { name: client-ca, sds_config: { ads: {} } }" },
    )
}

async fn start_proxy(control_plane: &ControlPlane, node: &str, dir: &std::path::Path) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(&ads_bootstrap(node, control_plane.address), dir);
    proxy.wait_ready().await;
    let address = proxy.listener("https").await;
    (proxy, address)
}

fn assert_applied(output: &std::process::Output) {
    assert!(output.status.success(), "apply failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_sds_and_its_update() {
    let dir = temp_dir("sds-certificate");
    let ca = TestCa::new("sds ca");
    let first = ca.issue("first", &["a.example.com"], None);
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let config = format!("resources:\n{}{}", certificate_secret("server-cert", &first), sds_listener("server-cert", ""));
    assert_applied(&control_plane.apply(&config));
    let (proxy, address) = start_proxy(&control_plane, "sds-certificate", &dir).await;

    let client = ClientTls::new("a.example.com", &ca);
    let old_stream = client.connect(address).await.unwrap();
    assert_eq!(old_stream.get_ref().1.peer_certificates().unwrap()[0], first.der, "the listener serves the certificate from SDS");
    let mut old_connection = TlsHttpConnection::handshake(old_stream, false).await.unwrap();
    let (status, body, _) = old_connection.get("a.example.com", "/", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));

    let second = ca.issue("second", &["a.example.com"], None);
    assert_applied(&control_plane.apply(&format!("resources:\n{}", certificate_secret("server-cert", &second))));
    let updated = eventually(Duration::from_secs(10), || async {
        match client.connect(address).await {
            Ok(stream) => stream.get_ref().1.peer_certificates().is_some_and(|chain| chain[0] == second.der),
            Err(_) => false,
        }
    })
    .await;
    assert!(updated, "a new handshake gets the certificate of the new secret version");
    let (status, _, _) = old_connection.get("a.example.com", "/", &[]).await.unwrap();
    assert_eq!(status, 200, "the connection opened before the update still works");

    let (status, dump) = http1_get(proxy.admin, "admin", "/config_dump").await.unwrap();
    assert_eq!(status, 200);
    let key_body = second.key_pem.lines().nth(1).unwrap();
    assert!(!dump.contains(key_body), "the private key is not in /config_dump");
    assert!(!dump.contains("PRIVATE KEY"), "no private key is in /config_dump");
    assert!(dump.contains("[redacted]"), "the private key is replaced by [redacted]");
    assert!(dump.contains("\"secret\""), "the secret is listed in /config_dump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_rejected_by_apply() {
    let dir = temp_dir("sds-missing");
    let control_plane = ControlPlane::start(&dir.join("cp"));

    let output = control_plane.apply(&format!("resources:\n{}", sds_listener("absent-cert", "")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a listener naming a missing secret is rejected");
    assert!(stderr.contains("\"absent-cert\""), "the error names the secret: {stderr}");
    assert!(stderr.contains("Listener \"https\""), "the error names the listener: {stderr}");

    let ca = TestCa::new("kind ca");
    let wrong_kind = format!("resources:\n{}{}", validation_secret("absent-cert", &ca), sds_listener("absent-cert", ""));
    let output = control_plane.apply(&wrong_kind);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a validation_context secret named as a certificate is rejected");
    assert!(stderr.contains("tls_certificate"), "the error names the kind needed: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_context_from_sds_enforces_mtls() {
    let dir = temp_dir("sds-mtls");
    let server_ca = TestCa::new("server ca");
    let client_ca = TestCa::new("client ca");
    let other_ca = TestCa::new("other ca");
    let server = server_ca.issue("server", &["a.example.com"], None);
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let config = format!(
        "resources:\n{}{}{}",
        certificate_secret("server-cert", &server),
        validation_secret("client-ca", &client_ca),
        sds_listener("server-cert", "require_client_certificate: true")
    );
    assert_applied(&control_plane.apply(&config));
    let (_proxy, address) = start_proxy(&control_plane, "sds-mtls", &dir).await;

    let mut client = ClientTls::new("a.example.com", &server_ca);
    assert!(client.get(address, "/", &[]).await.is_err(), "no client certificate fails");

    client.client = Some(other_ca.issue("stranger", &["client.test"], None));
    assert!(client.get(address, "/", &[]).await.is_err(), "a client certificate from another CA fails");

    client.client = Some(client_ca.issue("client", &["client.test"], None));
    let response = client.get(address, "/", &[]).await.unwrap();
    assert_eq!(response.status, 200, "a client certificate from the CA in the secret passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_from_sds_secrets() {
    let dir = temp_dir("sds-upstream");
    let upstream_ca = TestCa::new("upstream ca");
    let proxy_ca = TestCa::new("proxy ca");
    let config = server_config(&upstream_ca.issue("web", &["web.internal"], None), Some(&proxy_ca), &["http/1.1"]);
    let upstream = crate::tls::start_tls_http1_upstream(config).await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let cluster_and_listener = format!(
        r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: web
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: web.internal
      common_tls_context:
        tls_certificate_sds_secret_configs: [{{ name: proxy-cert, sds_config: {{ ads: {{}} }} }}]
        validation_context_sds_secret_config: {{ name: upstream-ca, sds_config: {{ ads: {{}} }} }}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: sds
        route_config: {{ name: local, virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: web }} }}] }}] }}
        http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
"#,
        port = upstream.port()
    );
    let config = format!(
        "resources:\n{}{}{}",
        certificate_secret("proxy-cert", &proxy_ca.issue("proxy", &["proxy.test"], None)),
        validation_secret("upstream-ca", &upstream_ca),
        cluster_and_listener
    );
    assert_applied(&control_plane.apply(&config));

    let proxy = Proxy::start(&ads_bootstrap("sds-upstream", control_plane.address), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;
    let (status, body) = http1_get(address, "a", "/page").await.unwrap();
    assert_eq!(status, 200, "the upstream accepts the client certificate from SDS: {body}");
    assert_eq!(body, "tls-h1 /page http/1.1");
}

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Packs the resources of a `resources:` list in YAML.
fn pack_all(entries: &str) -> Vec<prost_types::Any> {
    legate_config::text::parse_resources(&format!("resources:\n{entries}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_warms_until_secret_arrives() {
    use crate::support::scripted_ads::*;

    let dir = temp_dir("sds-warming");
    let ca = TestCa::new("warming ca");
    let first = ca.issue("first", &["a.example.com"], None);
    let (ads_address, responses, mut requests) = start_scripted_ads().await;
    let proxy = Proxy::start(&ads_bootstrap("sds-warming", ads_address), &dir);

    requests.next(CLUSTER_TYPE).await;
    responses.send(response(CLUSTER_TYPE, "1", "c1", Vec::new())).await.unwrap();
    requests.next(LISTENER_TYPE).await;
    responses.send(response(LISTENER_TYPE, "1", "l1", pack_all(&sds_listener("server-cert", "")))).await.unwrap();
    let sds_request = requests.next(SECRET_TYPE).await;
    assert_eq!(sds_request.resource_names, vec!["server-cert".to_string()], "the proxy asks for the secret its listener names");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = http1_get(proxy.admin, "admin", "/ready").await.unwrap();
    assert_eq!(status, 503, "the proxy is not ready while its listener waits for the secret");
    let (_, dump) = http1_get(proxy.admin, "admin", "/config_dump").await.unwrap();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let listener = dump["resources"].as_array().unwrap().iter().find(|entry| entry["kind"] == "listener").unwrap().clone();
    assert_eq!(listener["state"], "warming");

    responses.send(response(SECRET_TYPE, "1", "s1", pack_all(&certificate_secret("server-cert", &first)))).await.unwrap();
    proxy.wait_ready().await;
    let address = proxy.listener("https").await;
    let client = ClientTls::new("a.example.com", &ca);
    let stream = client.connect(address).await.unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], first.der);
    let ack = requests.next(SECRET_TYPE).await;
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("1", "s1"));
    assert!(ack.error_detail.is_none());

    let mut broken = ca.issue("broken", &["a.example.com"], None);
    broken.cert_pem = "not a certificate".to_string();
    responses.send(response(SECRET_TYPE, "2", "s2", pack_all(&certificate_secret("server-cert", &broken)))).await.unwrap();
    let nack = requests.next(SECRET_TYPE).await;
    assert_eq!(nack.response_nonce, "s2");
    assert_eq!(nack.version_info, "1", "the rejected version is not accepted");
    let detail = nack.error_detail.expect("a secret that does not load is NACKed").message;
    assert!(detail.contains("\"server-cert\""), "the NACK names the secret: {detail}");
    assert!(!detail.contains("PRIVATE KEY"), "the NACK holds no key material: {detail}");
    let stream = client.connect(address).await.unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], first.der, "the previous certificate stays in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_cli_and_metrics() {
    let dir = temp_dir("sds-cli");
    let ca = TestCa::new("cli ca");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let config = format!(
        "resources:\n{}{}{}",
        certificate_secret("server-cert", &ca.issue("server", &["a.example.com"], None)),
        certificate_secret("spare-cert", &ca.issue("spare", &["a.example.com"], None)),
        sds_listener("server-cert", "")
    );
    assert_applied(&control_plane.apply(&config));
    let (proxy, _) = start_proxy(&control_plane, "sds-cli", &dir).await;

    let listed = String::from_utf8_lossy(&control_plane.get().stdout).into_owned();
    assert!(listed.contains("envoy.extensions.transport_sockets.tls.v3.Secret"), "legate get lists secrets:\n{listed}");
    assert!(listed.contains("spare-cert"), "legate get lists every secret:\n{listed}");

    let table = eventually(Duration::from_secs(15), || {
        let server = server.clone();
        async move { String::from_utf8_lossy(&legate(&["proxies", "--server", &server]).stdout).contains("SDS") }
    })
    .await;
    let text = String::from_utf8_lossy(&legate(&["proxies", "--server", &server]).stdout).into_owned();
    assert!(table, "legate proxies has an SDS column:\n{text}");

    let in_use = legate(&["apply", "--delete", "sds/server-cert", "--server", &server]);
    let stderr = String::from_utf8_lossy(&in_use.stderr);
    assert!(!in_use.status.success(), "a secret a listener names cannot be deleted");
    assert!(stderr.contains("\"server-cert\""), "the error names the secret: {stderr}");

    let unused = legate(&["apply", "--delete", "sds/spare-cert", "--server", &server]);
    assert!(unused.status.success(), "an unused secret is deleted: {}", String::from_utf8_lossy(&unused.stderr));
    let listed = String::from_utf8_lossy(&control_plane.get().stdout).into_owned();
    assert!(!listed.contains("spare-cert"), "the deleted secret is gone:\n{listed}");

    let metrics = proxy.scrape().await;
    let applied = sample(&metrics, r#"legate_xds_updates_total{resource_type="SDS",result="applied"}"#);
    assert!(applied.is_some_and(|count| count >= 1.0), "SDS updates are counted:\n{metrics}");
}
