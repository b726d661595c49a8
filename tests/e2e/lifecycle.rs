//! SIGTERM under steady HTTP/1.1 and HTTP/2 traffic: `/ready` turns 503 at
//! once, the listener keeps accepting for the accept window and responds
//! with `Connection: close`, requests in flight finish, and the process
//! exits 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::support::*;

/// What a client sending one request after another saw.
#[derive(Debug, Default)]
struct SteadyOutcome {
    answered: usize,
    connections: usize,
    failed: Vec<String>,
}

/// Sends GETs one after another, opening a new connection whenever the
/// proxy closes one, until the listener refuses connections. A request that
/// fails on a connection the proxy closed while it sat idle is retried once
/// on a new connection, as HTTP/1.1 clients do with idempotent requests.
async fn steady_requests(listener: SocketAddr, deadline: Instant) -> SteadyOutcome {
    let mut outcome = SteadyOutcome::default();
    let mut retrying = false;
    while Instant::now() < deadline {
        let Ok(stream) = tokio::net::TcpStream::connect(listener).await else { break };
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else { break };
        tokio::spawn(connection);
        outcome.connections += 1;

        while Instant::now() < deadline {
            let request = hyper::Request::get("/steady").header("host", "a").body(Full::new(Bytes::new())).unwrap();
            if sender.ready().await.is_err() {
                break;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    retrying = false;
                    let closing = response.headers().get("connection").is_some_and(|value| value == "close");
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    if status == 200 {
                        outcome.answered += 1;
                    } else {
                        outcome.failed.push(format!("status {status}"));
                    }
                    if closing {
                        break;
                    }
                }
                Err(_) if !retrying => {
                    retrying = true;
                    break;
                }
                Err(error) => {
                    outcome.failed.push(error.to_string());
                    break;
                }
            }
        }
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_steady_traffic() {
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let dir = temp_dir("sigterm");
    let bootstrap = static_bootstrap("          drain_timeout: 3s", routes, &static_cluster("backend", backend.address.port(), None));
    let mut proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let slow_http1 = tokio::spawn(http1_get(listener, "a", "/slow/1500"));
    let slow_http2 = tokio::spawn(http2_get(listener, "a", "/slow/1500"));
    let steady = tokio::spawn(steady_requests(listener, Instant::now() + Duration::from_secs(15)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = proxy.process.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();

    let flipped = eventually(Duration::from_secs(1), || async {
        matches!(http1_get(proxy.admin, "admin", "/ready").await, Ok((503, body)) if body == "DRAINING\n")
    })
    .await;
    assert!(flipped, "/ready turns 503 at once");

    let request = hyper::Request::get("/fresh").header("host", "a").body(Full::new(Bytes::new())).unwrap();
    let (status, _, headers) = http1_request(listener, request).await.expect("a new connection is accepted during the window");
    assert_eq!(status, 200);
    assert_eq!(headers.get("connection").map(|value| value.as_bytes()), Some(&b"close"[..]), "{headers:?}");

    assert_eq!(slow_http1.await.unwrap().map(|(status, _)| status), Ok(200), "the HTTP/1.1 request in flight finishes");
    assert_eq!(slow_http2.await.unwrap().map(|(status, _)| status), Ok(200), "the HTTP/2 request in flight finishes");

    let steady = steady.await.unwrap();
    assert!(steady.failed.is_empty(), "no request fails: {steady:?}");
    assert!(steady.connections >= 2, "the client reconnected during the window: {steady:?}");

    let exited = eventually(Duration::from_secs(10), || {
        let done = proxy.process.child.try_wait().map(|status| status.map(|s| s.success()));
        async move { matches!(done, Ok(Some(true))) }
    })
    .await;
    assert!(exited, "the proxy exits 0 after draining");
    assert!(signalled.elapsed() < Duration::from_secs(10), "within the drain time");
    assert!(tokio::net::TcpStream::connect(listener).await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_spares_idle_and_slow_requests() {
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let dir = temp_dir("sigterm-idle");
    // The listener's drain_timeout is shorter than the process drain time,
    // which governs how long requests in flight may still take.
    let bootstrap = static_bootstrap("          drain_timeout: 1s", routes, &static_cluster("backend", backend.address.port(), None));
    let mut proxy = Proxy::start_with(&bootstrap, &dir, &["--drain-time-s", "8"]);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let stream = tokio::net::TcpStream::connect(listener).await.unwrap();
    let (mut idle, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let get = |path: &str| hyper::Request::get(path).header("host", "a").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(idle.send_request(get("/before")).await.unwrap().status(), 200);
    let slow = tokio::spawn(http1_get(listener, "a", "/slow/3000"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = proxy.process.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;

    idle.ready().await.expect("the idle keep-alive connection is still open after SIGTERM");
    let response = idle.send_request(get("/after")).await.expect("a request on the idle connection is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("connection").map(|value| value.as_bytes()), Some(&b"close"[..]));

    let slow = slow.await.unwrap();
    assert_eq!(slow.map(|(status, _)| status), Ok(200), "a request longer than drain_timeout finishes within --drain-time-s");

    let exited = eventually(Duration::from_secs(12), || {
        let done = proxy.process.child.try_wait().map(|status| status.map(|s| s.success()));
        async move { matches!(done, Ok(Some(true))) }
    })
    .await;
    assert!(exited, "the proxy exits 0");
}
