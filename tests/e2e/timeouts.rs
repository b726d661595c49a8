//! The router's own answers: route timeout, stream idle timeout, request
//! timeout, connection idle timeout, and the statuses for missing routes,
//! endpoints and upstreams. Also the idle timeout of upstream HTTP/1.1 and
//! HTTP/2 connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// Writes `head` on a new connection, then each of `chunks` after `gap`,
/// and reads the proxy's response until it closes the connection. Stops
/// writing when the proxy has closed the connection already. Returns the
/// response and the time it took.
async fn paced_upload(listener: SocketAddr, head: &str, chunks: &[&str], gap: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        tokio::time::sleep(gap).await;
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    // A reset after part of the response is no error here, since `response` keeps what arrived.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.expect("response in time");
    (String::from_utf8_lossy(&response).into_owned(), started.elapsed())
}

/// Ten chunks of five bytes each, for `paced_upload`, and the last chunk.
fn ten_chunks() -> Vec<&'static str> {
    let mut chunks = vec!["5\r\nhello\r\n"; 10];
    chunks.push("0\r\n\r\n");
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_keeps_stream_alive() {
    let (_proxy, _backend, listener) = start("").await;

    // Ten chunks 100 ms apart take about a second, past the route's 300 ms
    // idle timeout, while the upstream responds only after the whole body.
    let head = "POST /idle/upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (response, took) = paced_upload(listener, head, &ten_chunks(), Duration::from_millis(100)).await;

    assert!(response.starts_with("HTTP/1.1 200"), "got {response}");
    assert!(response.ends_with("backend /idle/upload 50"), "got {response}");
    assert!(took >= Duration::from_millis(900), "the upload took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upload_is_cut() {
    let (_proxy, backend, listener) = start("").await;

    let head = "POST /idle/upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\nab";
    let (response, took) = paced_upload(listener, head, &[], Duration::ZERO).await;

    assert!(response.starts_with("HTTP/1.1 408"), "got {response}");
    assert!(response.ends_with("stream idle timeout\n"), "got {response}");
    assert!(took >= Duration::from_millis(300), "cut after {took:?}, before the idle timeout");
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
    assert_eq!(backend.hits(), 1, "the request was on its way upstream when it was cut");
}

/// An upstream that responds with 200 to every request, over HTTP/2 or
/// HTTP/1.1, and counts the connections it accepted and the connections that
/// closed.
struct CountingUpstream {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(http2: bool) -> CountingUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let counts = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                counts.0.fetch_add(1, Ordering::SeqCst);
                let closed = counts.1.clone();
                tokio::spawn(async move {
                    let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let io = TokioIo::new(stream);
                    if http2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        CountingUpstream { address, accepted, closed }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_upstream_closes() {
    check_idle_upstream_closes(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_upstream_closes() {
    check_idle_upstream_closes(false).await;
}

/// Sends a request through a cluster with a 300 ms `idle_timeout`, checks
/// that the proxy closes the upstream connection once it is idle that long,
/// and that the next request opens a new one.
async fn check_idle_upstream_closes(http2: bool) {
    let upstream = CountingUpstream::start(http2).await;
    let mut cluster = static_cluster("pooled", upstream.address.port(), None);
    if http2 {
        cluster.push_str("\n    http2_protocol_options: {}");
    }
    cluster.push_str("\n    common_http_protocol_options: { idle_timeout: 0.3s }");
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: pooled }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster), &temp_dir("idle-upstream"));
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (status, body) = http1_get(listener, "a", "/first").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(upstream.accepted(), 1);
    assert_eq!(upstream.closed(), 0, "the connection stays open while not idle for 300 ms");

    let closed = eventually(Duration::from_secs(3), || async { upstream.closed() == 1 }).await;
    assert!(closed, "the proxy closes its upstream connection once idle for 300 ms (HTTP/2: {http2})");

    let (status, body) = http1_get(listener, "a", "/second").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(upstream.accepted(), 2, "the next request opens a new connection");
}

/// Starts an HTTP/1.1 upstream that sends response headers at once and a
/// body, the request body's length in bytes, only after the whole request
/// body arrived.
async fn start_late_body_upstream() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
                    tokio::spawn(async move {
                        let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
                        let _ = sender.send(Ok(Frame::data(Bytes::from(body.len().to_string())))).await;
                    });
                    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

/// Starts an HTTP/1.1 upstream that waits `gap` before the response
/// headers and `gap` again before the body, `late`.
async fn start_slow_upstream(gap: Duration) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_request: hyper::Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(gap).await;
                    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
                    tokio::spawn(async move {
                        tokio::time::sleep(gap).await;
                        let _ = sender.send(Ok(Frame::data(Bytes::from_static(b"late")))).await;
                    });
                    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timer_restarts_at_headers() {
    // Each gap is under the 500 ms idle timeout, and both together are over it.
    let upstream = start_slow_upstream(Duration::from_millis(300)).await;
    let cluster = static_cluster("slow", upstream.port(), None);
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: slow, idle_timeout: 0.5s }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster), &temp_dir("slow-headers"));
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (status, body) = http1_get(listener, "a", "/slow").await.unwrap();

    assert_eq!(status, 200);
    assert_eq!(body, "late", "the body after a second gap arrives whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_route_idle_timeout_disables() {
    let upstream = start_slow_upstream(Duration::from_millis(400)).await;
    let cluster = static_cluster("slow", upstream.port(), None);
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: slow, idle_timeout: 0s }";
    let manager = "          stream_idle_timeout: 0.2s";
    let proxy = Proxy::start(&static_bootstrap(manager, routes, &cluster), &temp_dir("zero-idle"));
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (status, body) = http1_get(listener, "a", "/slow").await.unwrap();

    assert_eq!(status, 200, "a zero route idle timeout overrides the connection manager's 200 ms");
    assert_eq!(body, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_after_headers_keeps_stream() {
    let upstream = start_late_body_upstream().await;
    let cluster = static_cluster("late", upstream.port(), None);
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: late, idle_timeout: 0.3s }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster), &temp_dir("late-body"));
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    // The response headers come first, then the upstream is silent for the
    // second the upload takes.
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (response, _) = paced_upload(listener, head, &ten_chunks(), Duration::from_millis(100)).await;

    assert!(response.starts_with("HTTP/1.1 200"), "got {response}");
    assert!(response.ends_with("\r\n2\r\n50\r\n0\r\n\r\n"), "the whole response body arrives, got {response}");
}
