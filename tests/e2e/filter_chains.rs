//! A listener update that changes one filter chain, and reorders the
//! chains, leaves connections on the other chains with their own config.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::tls::{ClientTls, TestCa, TlsHttpConnection};
use crate::support::*;

/// Renders one SNI filter chain whose route replies `body` directly.
fn chain(name: &str, (cert, key): &(PathBuf, PathBuf), body: &str) -> String {
    format!(
        r#"  - filter_chain_match: {{ server_names: ["{name}"] }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
        common_tls_context:
          tls_certificates: [{{ certificate_chain: {{ filename: "{}" }}, private_key: {{ filename: "{}" }} }}]
    filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        route_config:
          name: {name}
          virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }} }}] }}]
        http_filters: [{{ name: envoy.filters.http.router }}]
"#,
        cert.display(),
        key.display()
    )
}

fn listener(chains: &[String]) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
{}"#,
        chains.concat()
    )
}

async fn get(connection: &mut TlsHttpConnection, host: &str) -> String {
    connection.get(host, "/", &[]).await.expect("the connection still serves").1
}

async fn open(client: &ClientTls, address: std::net::SocketAddr) -> TlsHttpConnection {
    TlsHttpConnection::handshake(client.connect(address).await.unwrap(), false).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_update_leaves_other_chains() {
    let dir = temp_dir("filter-chains");
    let ca = TestCa::new("chains");
    let a = ca.issue("a.test", &["a.test"], None).write(&dir, "a");
    let b = ca.issue("b.test", &["b.test"], None).write(&dir, "b");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let applied = control_plane.apply(&listener(&[chain("a.test", &a, "a-1"), chain("b.test", &b, "b-1")]));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let proxy = Proxy::start(&ads_bootstrap("chains-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;

    let (client_a, client_b) = (ClientTls::new("a.test", &ca), ClientTls::new("b.test", &ca));
    let mut on_a = open(&client_a, address).await;
    let mut on_b = open(&client_b, address).await;
    assert_eq!(get(&mut on_a, "a.test").await, "a-1");
    assert_eq!(get(&mut on_b, "b.test").await, "b-1");

    // Chain b changes and moves first; chain a is unchanged but now second.
    let applied = control_plane.apply(&listener(&[chain("b.test", &b, "b-2"), chain("a.test", &a, "a-1")]));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let updated = eventually(Duration::from_secs(10), || async {
        client_b.get(address, "/", &[]).await.map(|response| response.body).unwrap_or_default() == "b-2"
    })
    .await;
    assert!(updated, "new connections to b.test get the changed chain");

    for _ in 0..3 {
        assert_eq!(get(&mut on_a, "a.test").await, "a-1", "the open connection on chain a keeps chain a");
    }
    assert_eq!(get(&mut on_b, "b.test").await, "b-2", "the open connection on chain b gets b's new routes");
    assert_eq!(client_a.get(address, "/", &[]).await.unwrap().body, "a-1");
}
