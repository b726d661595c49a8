//! Frame-aware WebSocket relaying, turned on per route with Legate's
//! `legate.websocket` per-filter config: size limits close with 1009, close
//! codes pass through, and a drain sends 1001 Going Away.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::websocket::*;
use crate::support::*;

const FRAME_AWARE: &str = r#", typed_per_filter_config: { legate.websocket: { "@type": type.googleapis.com/legate.extensions.websocket.v1.WebSocketRoute, frame_aware: true, max_message_bytes: 1024 } }"#;

async fn start(hcm_extra: &str) -> (WsUpstream, Proxy, std::net::SocketAddr) {
    let upstream = WsUpstream::start("frames").await;
    let dir = temp_dir("ws-frames");
    let routes = format!("              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: ws }}\n                {}", &FRAME_AWARE[2..]);
    let cluster = static_cluster("ws", upstream.address.port(), None);
    let hcm = format!("          upgrade_configs: [{{ upgrade_type: websocket }}]\n{hcm_extra}");
    let proxy = Proxy::start(&static_bootstrap(&hcm, &routes, &cluster), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (upstream, proxy, listener)
}

fn close_code(message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Option<(CloseCode, String)> {
    match message {
        Some(Ok(Message::Close(Some(frame)))) => Some((frame.code, frame.reason.to_string())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_with_1009() {
    let (_upstream, _proxy, listener) = start("").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/big")).await.unwrap();

    socket.send(Message::text("small")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("small"), "messages under the limit pass");

    socket.send(Message::binary(vec![7u8; 4096])).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed in time");
    let (code, _) = close_code(closed).expect("a Close frame");
    assert_eq!(code, CloseCode::Size, "over max_message_bytes closes with 1009");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_code_and_reason_pass_through() {
    let (_upstream, _proxy, listener) = start("").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/close-me")).await.unwrap();
    socket.send(Message::text("go")).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed in time");
    assert_eq!(close_code(closed), Some((CloseCode::Library(4001), "done by upstream".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_handshake_completes() {
    let (_upstream, _proxy, listener) = start("").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/c")).await.unwrap();
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: CloseCode::Library(4000), reason: "bye".into() };
    socket.close(Some(frame)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("reply in time");
    assert_eq!(close_code(reply), Some((CloseCode::Library(4000), "bye".to_string())), "the closing handshake completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_going_away() {
    let (_upstream, mut proxy, listener) = start("          drain_timeout: 0.5s").await;

    let mut sockets = Vec::new();
    for _ in 0..100 {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/d")).await.unwrap();
        sockets.push(socket);
    }
    let pid = proxy.process.child.id().to_string();
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    sockets[0].send(Message::text("during drain")).await.unwrap();
    assert_eq!(sockets[0].next().await.unwrap().unwrap(), Message::text("during drain"), "messages flow during the drain period");

    for socket in &mut sockets {
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("closed in time");
        let (code, _) = close_code(closed).expect("a Close frame, not a cut connection");
        assert_eq!(code, CloseCode::Away, "draining closes with 1001 Going Away");
    }
    assert!(started.elapsed() >= Duration::from_millis(450), "the Close comes after the drain period");
    let status = proxy.process.child.wait().unwrap();
    assert!(status.success(), "the proxy exits 0: {status:?}");
}
