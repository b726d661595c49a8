//! WebSockets through the proxy: echo over HTTP/1.1 and over HTTP/2
//! extended CONNECT, subprotocols, non-101 answers, idle timeouts,
//! half-close, and draining on shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::websocket::*;
use crate::support::*;

async fn start_proxy(endpoints: &[std::net::SocketAddr], hcm_extra: &str, route_extra: &str) -> (Proxy, std::net::SocketAddr) {
    let dir = temp_dir("websocket");
    let proxy = Proxy::start(&websocket_bootstrap(endpoints, hcm_extra, route_extra), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener)
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_text_and_binary_with_round_robin() {
    let first = WsUpstream::start("first").await;
    let second = WsUpstream::start("second").await;
    let (_proxy, listener) = start_proxy(&[first.address, second.address], "", "").await;

    let mut names = Vec::new();
    for _ in 0..4 {
        let url = format!("ws://{listener}/hello");
        let (mut socket, response) =
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), false).await.expect("upgrade through the proxy");
        assert_eq!(response.status(), 101);
        let hello = socket.next().await.unwrap().unwrap();
        names.push(hello.into_text().unwrap().to_string());

        socket.send(Message::text("hello, legate")).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("hello, legate"));

        let large: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        socket.send(Message::binary(large.clone())).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_data().as_ref(), large.as_slice(), "16 MiB binary message echoed whole");
        socket.close(None).await.unwrap();
    }
    names.sort();
    assert_eq!(names, ["first", "first", "second", "second"], "new WebSockets alternate between endpoints");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_and_headers_pass_through() {
    let upstream = WsUpstream::start("only").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    let mut request = format!("ws://{listener}/chat").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "mqtt, other".parse().unwrap());
    request.headers_mut().insert("connection", "keep-alive, Upgrade".parse().unwrap());
    request.headers_mut().insert("upgrade", "WebSocket".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("mixed-case upgrade works");
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt", "the chosen subprotocol reaches the client");
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_101_answer_reaches_client() {
    // The plain HTTP upstream answers the handshake with 200.
    let upstream = Upstream::start("plain").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    let error = tokio_tungstenite::connect_async(format!("ws://{listener}/x")).await.expect_err("no upgrade without 101");
    let tokio_tungstenite::tungstenite::Error::Http(response) = error else { panic!("unexpected error {error:?}") };
    assert_eq!(response.status(), 200, "the upstream's status goes back to the client");
}

/// Opens a WebSocket over an HTTP/2 extended CONNECT on `sender`.
async fn connect_h2(
    sender: &hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    listener: std::net::SocketAddr,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let mut request = hyper::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{listener}/echo"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender.clone().send_request(request).await.expect("extended CONNECT sent");
    assert_eq!(response.status(), 200, "extended CONNECT is answered with 200");
    assert!(!response.headers().contains_key("sec-websocket-accept"), "no HTTP/1.1 handshake header on HTTP/2");
    let upgraded = hyper::upgrade::on(&mut response).await.expect("stream upgraded");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_extended_connect_multiplexes() {
    let upstream = WsUpstream::start("h1").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    let stream = TcpStream::connect(listener).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);

    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(connect_h2(&sender, listener).await);
    }
    for (index, socket) in sockets.iter_mut().enumerate() {
        socket.send(Message::text(format!("message {index}"))).await.unwrap();
    }
    for (index, socket) in sockets.iter_mut().enumerate() {
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(format!("message {index}")));
    }
    assert_eq!(upstream.accepted(), 10, "ten WebSockets over one HTTP/2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_silent_socket() {
    let upstream = WsUpstream::start("idle").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", ", idle_timeout: 0.5s, timeout: 0.3s").await;

    let (mut talking, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/a")).await.unwrap();
    let (mut silent, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/b")).await.unwrap();

    for round in 0..8 {
        talking.send(Message::text(format!("round {round}"))).await.unwrap();
        assert_eq!(talking.next().await.unwrap().unwrap(), Message::text(format!("round {round}")), "a talking socket outlives the 0.3 s route timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ended = tokio::time::timeout(Duration::from_secs(3), silent.next()).await.expect("the silent socket is closed");
    assert!(matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))), "got {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_other_direction() {
    // An upstream that, once the client has shut its side, sends one last
    // message and closes.
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = socket.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        stream.write_all(&received.to_ascii_uppercase()).await.unwrap();
        stream.write_all(b" BYE").await.unwrap();
    });
    let (_proxy, listener) = start_proxy(&[upstream], "", "").await;

    let mut client = TcpStream::connect(listener).await.unwrap();
    client
        .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply)).await.expect("reply in time").unwrap();
    assert_eq!(reply, b"LAST WORDS BYE", "the reply after the client's FIN arrives whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_websockets() {
    let upstream = WsUpstream::start("drain").await;
    let (mut proxy, listener) = start_proxy(&[upstream.address], "          drain_timeout: 1s", "").await;

    let mut sockets = Vec::new();
    for _ in 0..100 {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/d")).await.unwrap();
        sockets.push(socket);
    }

    let pid = proxy.process.child.id().to_string();
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    // During the drain period the sockets still work.
    sockets[0].send(Message::text("still here")).await.unwrap();
    assert_eq!(sockets[0].next().await.unwrap().unwrap(), Message::text("still here"));

    for socket in &mut sockets {
        let end = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("closed after the drain period");
        assert!(matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))), "got {end:?}");
    }
    let status = proxy.process.child.wait().unwrap();
    assert!(status.success(), "the proxy exits 0 after draining: {status:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "sockets got the drain period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_headers_reach_upstream_unchanged() {
    let upstream = WsUpstream::start("headers").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    let mut request = format!("ws://{listener}/headers").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-extensions", "permessage-deflate; client_max_window_bits".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let seen = socket.next().await.unwrap().unwrap().into_text().unwrap().to_string();
    assert!(seen.contains("sec-websocket-protocol: mqtt\n"), "got {seen}");
    assert!(seen.contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits\n"), "got {seen}");
    assert!(seen.contains("sec-websocket-version: 13\n"), "got {seen}");

    let (mut plain, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/headers")).await.unwrap();
    let seen = plain.next().await.unwrap().unwrap().into_text().unwrap().to_string();
    assert!(!seen.contains("sec-websocket-protocol"), "no subprotocol header is invented: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_switch_without_101() {
    let upstream = Upstream::start("plain").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    for upgrade in ["foo", "websocket"] {
        let mut stream = TcpStream::connect(listener).await.unwrap();
        let pipelined = format!(
            "GET /public HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(pipelined.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.expect("answers in time").unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains("HTTP/1.1 101"), "no switch without a 101: {answer}");
        assert!(answer.contains("plain /admin 0"), "the second request is routed as its own ({upgrade}): {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "two responses ({upgrade}): {answer}");
    }
}

/// Echo through the proxy with Python's `websockets` library, an
/// implementation independent of the Rust stack on both ends of the proxy.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
import websockets

async def main(url):
    async with websockets.connect(url, max_size=None, subprotocols=["mqtt"]) as socket:
        assert socket.subprotocol == "mqtt", socket.subprotocol
        await socket.send("text from python")
        assert await socket.recv() == "text from python"
        payload = bytes(range(256)) * 4096
        await socket.send(payload)
        assert await socket.recv() == payload
    print("python echo ok")

asyncio.run(main(sys.argv[1]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_echoes() {
    let upstream = WsUpstream::start("python").await;
    let (_proxy, listener) = start_proxy(&[upstream.address], "", "").await;

    let url = format!("ws://{listener}/py");
    let output = tokio::process::Command::new("python3").args(["-c", PYTHON_CLIENT, &url]).output().await.expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'websockets'"),
        "the Python websockets package is missing: pip install websockets (.ci/run installs it)"
    );
    assert!(output.status.success(), "python client failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "python echo ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_policy_keeps_reconnects_sticky() {
    let upstreams = [WsUpstream::start("a").await, WsUpstream::start("b").await, WsUpstream::start("c").await];
    let endpoints: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", u.address.port()))
        .collect();
    let cluster = format!(
        "  - name: ws\n    connect_timeout: 1s\n    lb_policy: RING_HASH\n    load_assignment:\n      cluster_name: ws\n      endpoints: [{{ lb_endpoints: [{}] }}]",
        endpoints.join(", ")
    );
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: ws, hash_policy: [{ header: { header_name: x-user } }] }";
    let bootstrap = static_bootstrap("          upgrade_configs: [{ upgrade_type: websocket }]", routes, &cluster);
    let dir = temp_dir("ws-sticky");
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let endpoint_of = |user: String| async move {
        let mut request = format!("ws://{listener}/hello").into_client_request().unwrap();
        request.headers_mut().insert("x-user", user.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        socket.next().await.unwrap().unwrap().into_text().unwrap().to_string()
    };

    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let first = endpoint_of(format!("user-{user}")).await;
        for _ in 0..3 {
            assert_eq!(endpoint_of(format!("user-{user}")).await, first, "reconnects of user-{user} land on one endpoint");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "different users spread over the endpoints: {seen:?}");
}
