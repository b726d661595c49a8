//! The control plane's gRPC port accepts only authenticated clients: bearer
//! tokens for the config API and for ADS, and TLS with client certificates.

use std::path::{Path, PathBuf};

use crate::support::tls::TestCa;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_requires_token() {
    let dir = temp_dir("api-token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-api-token\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let control_plane = ControlPlane::start_with(&dir.join("cp"), "127.0.0.1:0", &["--api-token-file", token.to_str().unwrap()]);
    let server = control_plane.address.to_string();

    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let file = dir.join("config.yaml");
    std::fs::write(&file, two_cluster_config(&[web.address], api.address, "v1")).unwrap();
    let file = file.to_str().unwrap();

    let anonymous = legate(&["apply", "-f", file, "--server", &server]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("needs a bearer token"), "{}", String::from_utf8_lossy(&anonymous.stderr));

    let guessed = legate(&["apply", "-f", file, "--server", &server, "--token-file", wrong.to_str().unwrap()]);
    assert!(!guessed.status.success(), "a wrong token is rejected");

    let allowed = legate(&["apply", "-f", file, "--server", &server, "--token-file", token.to_str().unwrap()]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));

    let get = std::process::Command::new(legate_bin())
        .args(["get", "--server", &server])
        .env("LEGATE_API_TOKEN_FILE", &token)
        .output()
        .unwrap();
    assert!(get.status.success(), "the token file can come from the environment");

    let proxy = Proxy::start(&ads_bootstrap("token-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap().0, 200, "ADS needs no API token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_requires_token() {
    let dir = temp_dir("ads-token");
    let token = dir.join("ads-token");
    std::fs::write(&token, "proxy-token-1\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "proxy-token-2").unwrap();
    let control_plane = ControlPlane::start_with(&dir.join("cp"), "127.0.0.1:0", &["--ads-token-file", token.to_str().unwrap()]);
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success(), "the config API stays open");

    let bootstrap = ads_bootstrap("ads-token-proxy", control_plane.address);
    let anonymous = Proxy::start(&bootstrap, &dir);
    let guessed = Proxy::start_with(&bootstrap, &dir, &["--ads-token-file", wrong.to_str().unwrap()]);
    let allowed = Proxy::start_with(&bootstrap, &dir, &["--ads-token-file", token.to_str().unwrap()]);
    allowed.wait_ready().await;
    let listener = allowed.listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap().0, 200);

    for (label, proxy) in [("without a token", &anonymous), ("with a wrong token", &guessed)] {
        let (status, _) = http1_get(proxy.admin, "admin", "/ready").await.unwrap();
        assert_eq!(status, 503, "a proxy {label} gets no config");
        let listeners = http1_get(proxy.admin, "admin", "/listeners").await.unwrap().1;
        assert_eq!(listeners.trim(), "[]", "a proxy {label} has no listener: {listeners}");
    }
}

/// Starts a control plane whose gRPC port needs TLS with client
/// certificates from `clients`.
fn start_tls_control_plane(dir: &Path, servers: &TestCa, clients: &TestCa) -> ControlPlane {
    let (cert, key) = servers.issue("control-plane", &["localhost", "127.0.0.1"], None).write(dir, "control-plane");
    let client_ca = write_ca(dir, "clients", clients);
    let args = ["--tls-cert", path(&cert), "--tls-key", path(&key), "--client-ca", path(&client_ca)];
    ControlPlane::start_with(&dir.join("cp"), "127.0.0.1:0", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_requires_client_certificate() {
    let dir = temp_dir("cp-mtls");
    let servers = TestCa::new("servers");
    let clients = TestCa::new("clients");
    let strangers = TestCa::new("strangers");
    let control_plane = start_tls_control_plane(&dir, &servers, &clients);
    let server = control_plane.address.to_string();
    let server_ca = write_ca(&dir, "servers", &servers);
    let ca = path(&server_ca);
    let (operator_cert, operator_key) = clients.issue("operator", &["operator.example"], None).write(&dir, "operator");
    let (impostor_cert, impostor_key) = strangers.issue("impostor", &["operator.example"], None).write(&dir, "impostor");

    let plaintext = legate(&["get", "--server", &server]);
    assert!(!plaintext.status.success(), "a plaintext client is refused");

    let no_cert = legate(&["get", "--server", &server, "--ca-file", ca]);
    assert!(!no_cert.status.success(), "a client without a certificate is refused");

    let untrusted = legate(&["get", "--server", &server, "--ca-file", ca, "--cert-file", path(&impostor_cert), "--key-file", path(&impostor_key)]);
    assert!(!untrusted.status.success(), "a certificate from another CA is refused");

    let trusted = legate(&["get", "--server", &server, "--ca-file", ca, "--cert-file", path(&operator_cert), "--key-file", path(&operator_key)]);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));

    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let config = dir.join("config.yaml");
    std::fs::write(&config, two_cluster_config(&[web.address], api.address, "v1")).unwrap();
    let applied = legate(&["apply", "-f", path(&config), "--server", &server, "--ca-file", ca, "--cert-file", path(&operator_cert), "--key-file", path(&operator_key)]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    let (proxy_cert, proxy_key) = clients.issue("proxy", &["proxy.example"], None).write(&dir, "proxy");
    let with_identity = Proxy::start(&tls_ads_bootstrap("mtls-proxy", control_plane.address, &server_ca, Some((&proxy_cert, &proxy_key))), &dir);
    let anonymous = Proxy::start(&tls_ads_bootstrap("anonymous-proxy", control_plane.address, &server_ca, None), &dir);
    with_identity.wait_ready().await;
    let listener = with_identity.listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap().0, 200, "a proxy with a client certificate gets the config over TLS");
    let (status, _) = http1_get(anonymous.admin, "admin", "/ready").await.unwrap();
    assert_eq!(status, 503, "a proxy without a client certificate gets no config");

    let stranger_ca = write_ca(&dir, "strangers", &strangers);
    let unverified =
        legate(&["get", "--server", &server, "--ca-file", path(&stranger_ca), "--cert-file", path(&operator_cert), "--key-file", path(&operator_key)]);
    assert!(!unverified.status.success(), "the client checks the control plane's certificate");
}

/// Renders an ADS bootstrap whose `xds` cluster connects over TLS, checking
/// the control plane against `server_ca` and presenting `identity` if given.
fn tls_ads_bootstrap(node_id: &str, ads: std::net::SocketAddr, server_ca: &Path, identity: Option<(&PathBuf, &PathBuf)>) -> String {
    let certificates = identity
        .map(|(cert, key)| format!("tls_certificates: [{{ certificate_chain: {{ filename: {cert:?} }}, private_key: {{ filename: {key:?} }} }}], "))
        .unwrap_or_default();
    format!(
        r#"{}    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context: {{ {certificates}validation_context: {{ trusted_ca: {{ filename: {server_ca:?} }} }} }}
"#,
        ads_bootstrap(node_id, ads)
    )
}

/// Writes a CA's certificate to `<dir>/<name>-ca.pem`.
fn write_ca(dir: &Path, name: &str, ca: &TestCa) -> PathBuf {
    let file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&file, ca.pem()).unwrap();
    file
}

fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}
