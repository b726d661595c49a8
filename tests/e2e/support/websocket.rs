//! WebSocket upstreams and clients for the end-to-end tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server on loopback. It picks the subprotocol `mqtt`
/// when offered, sends `<name>` as its first message when the path is
/// `/hello` and the `Sec-WebSocket-*` headers it received (one per line,
/// without the key) when it is `/headers`, closes with code 4001 after the
/// first message on `/close-me`, and counts accepted connections.
pub struct WsUpstream {
    pub address: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl WsUpstream {
    pub async fn start(name: &'static str) -> WsUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    let mut seen_headers = String::new();
                    let callback = |request: &Request, mut response: Response| {
                        path = request.uri().path().to_string();
                        for (header, value) in request.headers() {
                            if header.as_str().starts_with("sec-websocket-") && header != "sec-websocket-key" {
                                seen_headers.push_str(&format!("{header}: {}\n", value.to_str().unwrap_or("")));
                            }
                        }
                        let offered = request.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
                        if offered.split(',').any(|p| p.trim() == "mqtt") {
                            response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
                        }
                        Ok(response)
                    };
                    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .max_message_size(Some(64 << 20))
                        .max_frame_size(Some(64 << 20));
                    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if path == "/hello" {
                        let _ = socket.send(Message::text(name)).await;
                    }
                    if path == "/headers" {
                        let _ = socket.send(Message::text(seen_headers)).await;
                    }
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_close() {
                            break;
                        }
                        if path == "/close-me" {
                            let frame = CloseFrame { code: CloseCode::Library(4001), reason: "done by upstream".into() };
                            let _ = socket.close(Some(frame)).await;
                            continue;
                        }
                        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsUpstream { address, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Bootstrap of a proxy whose listener allows WebSocket upgrades and sends
/// everything to the `ws` cluster over `endpoints`, with `route_extra`
/// fields on the route.
pub fn websocket_bootstrap(endpoints: &[SocketAddr], hcm_extra: &str, route_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", a.port()))
        .collect();
    let cluster = format!(
        "  - name: ws\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: ws\n      endpoints: [{{ lb_endpoints: [{}] }}]",
        endpoints.join(", ")
    );
    let routes = format!("              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: ws{route_extra} }}");
    let hcm = format!("          upgrade_configs: [{{ upgrade_type: websocket }}]\n{hcm_extra}");
    super::static_bootstrap(&hcm, &routes, &cluster)
}
