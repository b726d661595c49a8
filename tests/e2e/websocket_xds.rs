//! WebSockets while config changes over xDS: route swaps leave open
//! WebSockets alone, and removing their endpoint closes them only after the
//! drain period.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::websocket::*;
use crate::support::*;

/// Listener `ws` with WebSocket upgrades, RDS routes whose route name is
/// `route_name`, and an EDS cluster over `endpoints`.
fn websocket_config(endpoints: &[std::net::SocketAddr], route_name: &str) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|a| format!("    - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n", a.port()))
        .collect();
    let endpoints = if endpoints.is_empty() { "      []\n".to_string() } else { endpoints };
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: echo
  type: EDS
  connect_timeout: 1s
  eds_cluster_config: {{ eds_config: {{ ads: {{}} }} }}
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: echo
  endpoints:
  - lb_endpoints:
{endpoints}- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: ws
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ws
        drain_timeout: 1s
        upgrade_configs: [{{ upgrade_type: websocket }}]
        rds: {{ route_config_name: ws_routes, config_source: {{ ads: {{}} }} }}
        http_filters: [{{ name: envoy.filters.http.router }}]
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: ws_routes
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - name: {route_name}
      match: {{ prefix: "/" }}
      route: {{ cluster: echo }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_websockets_survive_route_swaps() {
    let dir = temp_dir("ws-swaps");
    let upstream = WsUpstream::start("echo").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&websocket_config(&[upstream.address], "v0")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("ws-swap-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("ws").await;

    const SOCKETS: usize = 1000;
    const ROUNDS: usize = 10;
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/s")).await.expect("upgrade");
        sockets.push(socket);
    }

    let talkers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, mut socket)| {
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let text = format!("{id}:{round}");
                    socket.send(Message::text(text.clone())).await.map_err(|e| format!("{id} send: {e}"))?;
                    match socket.next().await {
                        Some(Ok(message)) if message == Message::text(text.clone()) => {}
                        other => return Err(format!("{id} round {round}: {other:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, String>(())
            })
        })
        .collect();

    for swap in 1..=5 {
        let output = control_plane.apply(&websocket_config(&[upstream.address], &format!("v{swap}")));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut failures = Vec::new();
    for talker in talkers {
        if let Err(error) = talker.await.unwrap() {
            failures.push(error);
        }
    }
    assert!(failures.is_empty(), "{} WebSockets failed, first: {:?}", failures.len(), failures.first());
    assert_eq!(upstream.accepted(), SOCKETS, "no WebSocket was reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_endpoint_drains_websockets() {
    let dir = temp_dir("ws-endpoint");
    let upstream = WsUpstream::start("echo").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&websocket_config(&[upstream.address], "v0")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("ws-endpoint-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("ws").await;

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/s")).await.unwrap();
    assert!(control_plane.apply(&websocket_config(&[], "v0")).status.success());
    let removed_at = Instant::now();

    tokio::time::sleep(Duration::from_millis(400)).await;
    socket.send(Message::text("during drain")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("during drain"), "open during the drain period");

    let end = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed after the drain period");
    assert!(matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))), "got {end:?}");
    assert!(removed_at.elapsed() >= Duration::from_millis(900), "closed only after the 1 s drain period");
}
