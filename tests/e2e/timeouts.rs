//! The router's own answers: route timeout, stream idle timeout, request
//! timeout, connection idle timeout, and the statuses for missing routes,
//! endpoints and upstreams.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn bootstrap(backend_port: u16, hcm_extra: &str) -> String {
    let clusters = [
        static_cluster("backend", backend_port, None),
        static_cluster("unhealthy", backend_port, Some("UNHEALTHY")),
        static_cluster("closed", closed_port(), None),
    ];
    static_bootstrap(hcm_extra, ROUTES, &clusters.join("\n"))
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

const ROUTES: &str = r#"              - match: { prefix: "/timeout/" }
                route: { cluster: backend, timeout: 0.5s }
              - match: { prefix: "/idle/" }
                route: { cluster: backend, timeout: 0s, idle_timeout: 0.3s }
              - match: { prefix: "/unhealthy" }
                route: { cluster: unhealthy }
              - match: { prefix: "/closed" }
                route: { cluster: closed }
              - match: { prefix: "/" }
                route: { cluster: backend }"#;

async fn start(hcm_extra: &str) -> (Proxy, Upstream, std::net::SocketAddr) {
    let dir = temp_dir("timeouts");
    let backend = Upstream::start("backend").await;
    let proxy = Proxy::start(&bootstrap(backend.address.port(), hcm_extra), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, backend, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_local_replies() {
    let (_proxy, _backend, listener) = start("").await;

    let (status, body) = http1_get(listener, "a", "/timeout/slow/2000").await.unwrap();
    assert_eq!((status, body.as_str()), (504, "upstream request timeout\n"));

    let (status, body) = http1_get(listener, "a", "/idle/slow/1500").await.unwrap();
    assert_eq!((status, body.as_str()), (408, "stream idle timeout\n"));

    let (status, body) = http1_get(listener, "a", "/unhealthy").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "no healthy upstream\n"));

    let (status, body) = http1_get(listener, "a", "/closed").await.unwrap();
    assert_eq!((status, body.as_str()), (502, "upstream connect error\n"));

    let (status, _) = http1_get(listener, "a", "/timeout/slow/10").await.unwrap();
    assert_eq!(status, 200, "a fast answer within the route timeout passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_408() {
    let (_proxy, backend, listener) = start("          request_timeout: 0.5s").await;

    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab").await.unwrap();
    let mut answer = vec![0; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.expect("answer in time").unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "got {answer}");
    assert_eq!(backend.hits(), 1, "the request was on its way upstream when it timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let (_proxy, _backend, listener) = start("          common_http_protocol_options: { idle_timeout: 0.5s }").await;

    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buffer = vec![0; 1024];
    let read = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));

    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.expect("closed in time").unwrap();
    assert_eq!(closed, 0, "the proxy closes a connection idle past the idle timeout");
}
