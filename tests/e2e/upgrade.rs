//! Protocol upgrades (WebSocket) through the proxy: the upstream's 101 goes
//! back unchanged, then bytes flow both ways; an upgrade a route does not
//! allow is refused with a 4xx.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// An upstream that answers any upgrade with a bare 101 (no Content-Length,
/// no Transfer-Encoding) and then echoes bytes back in upper case.
async fn raw_upgrade_upstream() -> std::net::SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let reply = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                stream.write_all(reply.as_bytes()).await.unwrap();
                let mut buffer = [0u8; 1024];
                loop {
                    let read = stream.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    let upper = buffer[..read].to_ascii_uppercase();
                    if stream.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

const ROUTES: &str = r#"              - match: { prefix: "/no-ws" }
                route: { cluster: ws, upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }
              - match: { prefix: "/" }
                route: { cluster: ws }"#;

fn bootstrap(upstream_port: u16) -> String {
    static_bootstrap("          upgrade_configs: [{ upgrade_type: websocket }]", ROUTES, &static_cluster("ws", upstream_port, None))
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.expect("head in time").unwrap();
        assert_eq!(read, 1, "connection closed before the end of the head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

const UPGRADE_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_protocols_passes_through_unchanged() {
    let dir = temp_dir("upgrade");
    let upstream = raw_upgrade_upstream().await;
    let proxy = Proxy::start(&bootstrap(upstream.port()), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(UPGRADE_REQUEST.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101"), "got {head}");
    assert!(lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "accept header kept: {head}");
    assert!(lower.contains("upgrade: websocket"), "upgrade header kept: {head}");
    assert!(!lower.contains("content-length"), "no Content-Length on a 101: {head}");
    assert!(!lower.contains("transfer-encoding"), "no Transfer-Encoding on a 101: {head}");

    stream.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await.expect("echo in time").unwrap();
    assert_eq!(&echoed, b"HELLO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_on_disallowed_route_is_refused() {
    let dir = temp_dir("upgrade-refused");
    let upstream = raw_upgrade_upstream().await;
    let proxy = Proxy::start(&bootstrap(upstream.port()), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(UPGRADE_REQUEST.replace("/chat", "/no-ws").as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 403"), "got {head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .expect("403 has a Content-Length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();

    stream.write_all(b"GET /no-ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with("HTTP/1.1 502"),
        "the connection stays usable; Upgrade without the Connection token is no upgrade, so the upstream's 101 is an error: {head}"
    );
}
