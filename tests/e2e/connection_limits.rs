//! The connection filters of a filter chain: a connection rate limit closes
//! new connections beyond its bucket, a connection limit closes those beyond
//! its count, both before any HTTP byte is read, and a listener update keeps
//! them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::websocket::*;
use crate::support::*;

const HCM_LINE: &str = "    - filters:\n      - name: envoy.filters.network.http_connection_manager";

/// Renders a connection rate limit filter of `max_tokens` per minute as a
/// `filters` item of `static_bootstrap`.
fn rate_limit_filter(max_tokens: u32) -> String {
    format!(
        r#"      - name: envoy.filters.network.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
          stat_prefix: conn_rate
          token_bucket: {{ max_tokens: {max_tokens}, tokens_per_fill: {max_tokens}, fill_interval: 60s }}
"#
    )
}

/// Renders a connection limit filter as a `filters` item of `static_bootstrap`.
fn connection_limit_filter(max_connections: u32, delay: &str) -> String {
    format!(
        r#"      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: conn_cap
          max_connections: {max_connections}
{delay}"#
    )
}

/// Puts `filters` before the connection manager of a `static_bootstrap` listener.
fn with_network_filters(bootstrap: String, filters: &str) -> String {
    assert!(bootstrap.contains(HCM_LINE));
    bootstrap.replace(HCM_LINE, &format!("    - filters:\n{filters}      - name: envoy.filters.network.http_connection_manager"))
}

async fn start(label: &str, filters: &str) -> (Proxy, SocketAddr, Upstream) {
    let dir = temp_dir(label);
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let bootstrap = static_bootstrap("", routes, &static_cluster("backend", backend.address.port(), None));
    let proxy = Proxy::start(&with_network_filters(bootstrap, filters), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener, backend)
}

/// Sends a request on a new connection and returns what came back before
/// the proxy closed it, or `None` when the read timed out after 5 seconds.
async fn closed_reply(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The proxy may close the connection before the write, so its result is not checked.
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    read.ok().map(|_| String::from_utf8_lossy(&received).into_owned())
}

fn rate_limited_series() -> &'static str {
    "legate_listener_connections_rate_limited_total{listener=\"http\",stat_prefix=\"conn_rate\"}"
}

fn limited_series() -> &'static str {
    "legate_listener_connections_limited_total{listener=\"http\",stat_prefix=\"conn_cap\"}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_closes_excess_connection() {
    let (proxy, listener, backend) = start("conn-rate", &rate_limit_filter(3)).await;

    let mut connections = Vec::new();
    for index in 0..3 {
        let mut connection = KeepAlive::connect(listener).await;
        let (status, body) = connection.get("a", "/first").await.unwrap();
        assert_eq!(status, 200, "connection {}: {body}", index + 1);
        connections.push(connection);
    }

    let reply = closed_reply(listener).await.expect("the fourth connection is closed");
    assert_eq!(reply, "", "no HTTP response on a rate limited connection");
    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, rate_limited_series()), Some(1.0), "{metrics}");

    for connection in &mut connections {
        let (status, _) = connection.get("a", "/again").await.unwrap();
        assert_eq!(status, 200, "established connections keep working");
    }
    assert_eq!(backend.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_storm_gets_bucket_size() {
    let upstream = WsUpstream::start("ws").await;
    let dir = temp_dir("conn-rate-ws");
    let bootstrap = with_network_filters(websocket_bootstrap(&[upstream.address], "", ""), &rate_limit_filter(5));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let handshakes: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let url = format!("ws://{listener}/storm");
                tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await.expect("handshake ends")
            })
        })
        .collect();
    let mut sockets = Vec::new();
    for handshake in handshakes {
        if let Ok((socket, _)) = handshake.await.unwrap() {
            sockets.push(socket);
        }
    }
    assert_eq!(sockets.len(), 5, "exactly the bucket's five handshakes pass");
    assert_eq!(upstream.accepted(), 5);
    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, rate_limited_series()), Some(15.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_closes_fourth_connection() {
    let (proxy, listener, _backend) = start("conn-cap", &connection_limit_filter(3, "")).await;

    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut connection = KeepAlive::connect(listener).await;
        assert_eq!(connection.get("a", "/x").await.unwrap().0, 200);
        connections.push(connection);
    }
    let metrics = proxy.scrape().await;
    let active = "legate_listener_connection_limit_active{listener=\"http\",stat_prefix=\"conn_cap\"}";
    assert_eq!(sample(&metrics, active), Some(3.0), "{metrics}");

    let reply = closed_reply(listener).await.expect("the fourth connection is closed");
    assert_eq!(reply, "", "no HTTP response over the limit");
    assert_eq!(sample(&proxy.scrape().await, limited_series()), Some(1.0));

    drop(connections.pop());
    let freed = eventually(Duration::from_secs(5), || async { matches!(http1_get(listener, "a", "/y").await, Ok((200, _))) }).await;
    assert!(freed, "a closed connection frees its place");
    for connection in &mut connections {
        assert_eq!(connection.get("a", "/z").await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_delay_holds_rejected_connection() {
    let (_proxy, listener, _backend) = start("conn-cap-delay", &connection_limit_filter(1, "          delay: 1s\n")).await;

    let mut open = KeepAlive::connect(listener).await;
    assert_eq!(open.get("a", "/x").await.unwrap().0, 200);

    let start = Instant::now();
    let reply = closed_reply(listener).await.expect("the second connection is closed");
    let waited = start.elapsed();
    assert_eq!(reply, "");
    assert!(waited >= Duration::from_millis(900), "closed after the delay, not at once: {waited:?}");
    assert!(waited < Duration::from_secs(4), "closed soon after the delay: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_keeps_its_place() {
    let upstream = WsUpstream::start("ws").await;
    let dir = temp_dir("conn-cap-ws");
    let bootstrap = with_network_filters(websocket_bootstrap(&[upstream.address], "", ""), &connection_limit_filter(2, ""));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    let url = format!("ws://{listener}/ws");

    let (mut first, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("first WebSocket");
    let (_second, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("second WebSocket");
    let third = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url.as_str())).await.unwrap();
    assert!(third.is_err(), "upgraded connections still count against the limit");

    first.close(None).await.unwrap();
    drop(first);
    let freed = eventually(Duration::from_secs(5), || async { tokio_tungstenite::connect_async(url.as_str()).await.is_ok() }).await;
    assert!(freed, "a closed WebSocket frees its place");
    // Attempts made before the proxy saw the close are rejected and counted too.
    let limited = sample(&proxy.scrape().await, limited_series()).unwrap();
    assert!(limited >= 1.0, "the third WebSocket is counted: {limited}");
}

/// Renders listener `limited` with a connection limit of `max_connections`
/// and one route that returns `body` as a direct response.
fn limited_listener(max_connections: u32, body: &str) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: limited
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.connection_limit
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
        stat_prefix: conn_cap
        max_connections: {max_connections}
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: limited
        route_config:
          name: limited_routes
          virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }} }}] }}]
        http_filters: [{{ name: envoy.filters.http.router }}]
"#
    )
}

/// Waits until a request on `connection` gets `body`, so a listener update has landed.
async fn wait_for_body(connection: &mut KeepAlive, body: &str) -> bool {
    for _ in 0..200 {
        if matches!(connection.get("a", "/").await, Ok((200, got)) if got == body) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_update_keeps_limit() {
    let dir = temp_dir("conn-cap-swap");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    assert!(control_plane.apply(&limited_listener(2, "first")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("conn-cap-swap-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("limited").await;
    let limited = "legate_listener_connections_limited_total{listener=\"limited\",stat_prefix=\"conn_cap\"}";

    let mut first = KeepAlive::connect(listener).await;
    assert!(wait_for_body(&mut first, "first").await);
    let mut second = KeepAlive::connect(listener).await;
    assert!(wait_for_body(&mut second, "first").await);
    assert_eq!(closed_reply(listener).await.as_deref(), Some(""), "the third connection is closed");
    assert_eq!(sample(&proxy.scrape().await, limited), Some(1.0));

    assert!(control_plane.apply(&limited_listener(2, "second")).status.success());
    assert!(wait_for_body(&mut first, "second").await, "an open connection keeps serving across the update");
    assert_eq!(closed_reply(listener).await.as_deref(), Some(""), "an unrelated update keeps the count of open connections");
    assert_eq!(sample(&proxy.scrape().await, limited), Some(2.0));

    assert!(control_plane.apply(&limited_listener(4, "third")).status.success());
    assert!(wait_for_body(&mut first, "third").await);
    let mut third = KeepAlive::connect(listener).await;
    assert_eq!(third.get("a", "/").await.unwrap(), (200, "third".to_string()), "the raised limit applies to new connections");
    assert_eq!(second.get("a", "/").await.unwrap().0, 200);
}

/// Renders a bootstrap with listener `https`, one TLS filter chain per item
/// of `chains`: its server names, its connection filters (`filters` items
/// indented by six spaces) and the body its one route returns.
fn tls_bootstrap(cert: &std::path::Path, key: &std::path::Path, chains: &[(&str, String, &str)]) -> String {
    let mut text = String::from(
        r#"
node: { id: tls-limits }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  clusters: []
  listeners:
  - name: https
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
"#,
    );
    for (server_names, filters, body) in chains {
        text.push_str(&format!(
            r#"    - filter_chain_match: {{ server_names: [{server_names}] }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {{ tls_certificates: [{{ certificate_chain: {{ filename: "{cert}" }}, private_key: {{ filename: "{key}" }} }}] }} }}
      filters:
{filters}      - name: envoy.filters.network.http_connection_manager
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: t, route_config: {{ name: r, virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }} }}] }}] }}, http_filters: [{{ name: envoy.filters.http.router }}] }}
"#,
            cert = cert.display(),
            key = key.display(),
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rate_limit_before_handshake() {
    use crate::support::tls::{ClientTls, TestCa};

    let dir = temp_dir("conn-rate-tls");
    let ca = TestCa::new("limits ca");
    let (cert, key) = ca.issue("server", &["a.example.com"], None).write(&dir, "server");
    let proxy = Proxy::start(&tls_bootstrap(&cert, &key, &[("", rate_limit_filter(2), "tls")]), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("https").await;

    let client = ClientTls::new("a.example.com", &ca);
    for _ in 0..2 {
        assert_eq!(client.get(listener, "/", &[]).await.unwrap().body, "tls");
    }
    assert!(client.get(listener, "/", &[]).await.is_err(), "the third connection is closed");

    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_listener_connections_rate_limited_total{listener=\"https\",stat_prefix=\"conn_rate\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "legate_listener_tls_handshakes_total{listener=\"https\"}"), Some(2.0));
    let failures = sample(&metrics, "legate_listener_tls_handshake_failures_total{listener=\"https\"}").unwrap_or(0.0);
    assert_eq!(failures, 0.0, "the rejected connection never started a handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chain_has_own_limit() {
    use crate::support::tls::{ClientTls, TestCa, TlsHttpConnection};

    let dir = temp_dir("conn-cap-sni");
    let ca = TestCa::new("limits ca");
    let (cert, key) = ca.issue("server", &["a.example.com", "b.example.com"], None).write(&dir, "server");
    let chains = [("\"a.example.com\"", connection_limit_filter(1, ""), "chain-a"), ("\"b.example.com\"", String::new(), "chain-b")];
    let proxy = Proxy::start(&tls_bootstrap(&cert, &key, &chains), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("https").await;

    let a = ClientTls::new("a.example.com", &ca);
    let mut open = TlsHttpConnection::handshake(a.connect(listener).await.unwrap(), false).await.unwrap();
    assert_eq!(open.get("a.example.com", "/", &[]).await.unwrap().1, "chain-a");
    assert!(a.get(listener, "/", &[]).await.is_err(), "chain a takes one connection at a time");

    let b = ClientTls::new("b.example.com", &ca);
    for _ in 0..3 {
        assert_eq!(b.get(listener, "/", &[]).await.unwrap().body, "chain-b", "chain b has no limit");
    }
    assert_eq!(open.get("a.example.com", "/", &[]).await.unwrap().1, "chain-a");
    let limited = "legate_listener_connections_limited_total{listener=\"https\",stat_prefix=\"conn_cap\"}";
    assert_eq!(sample(&proxy.scrape().await, limited), Some(1.0));
}
