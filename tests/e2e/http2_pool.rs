//! Upstream HTTP/2 connection pool: a new connection once every open one
//! carries `max_concurrent_streams` streams, within the circuit breakers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::grpc::echo::EchoRequest;
use crate::support::grpc::{client, grpc_bootstrap, EchoUpstream};
use crate::support::*;

/// The gRPC bootstrap with one endpoint, whose `echo` cluster allows
/// `streams` streams per upstream connection, plus `breakers` (YAML
/// `thresholds` entries) when given.
fn pool_bootstrap(endpoint: SocketAddr, streams: u32, breakers: Option<&str>) -> String {
    let mut cluster = format!("http2_protocol_options: {{ max_concurrent_streams: {streams} }}");
    if let Some(thresholds) = breakers {
        cluster.push_str(&format!("\n    circuit_breakers: {{ thresholds: [{thresholds}] }}"));
    }
    grpc_bootstrap(&[endpoint], "http://allowed.test").replacen("http2_protocol_options: {}", &cluster, 1)
}

async fn start_proxy(label: &str, streams: u32, breakers: Option<&str>) -> (Proxy, SocketAddr, EchoUpstream) {
    let dir = temp_dir(label);
    let upstream = EchoUpstream::start("echo-1").await;
    let proxy = Proxy::start(&pool_bootstrap(upstream.address, streams, breakers), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("grpc").await;
    (proxy, address, upstream)
}

/// Sends `count` concurrent unary calls that each take `sleep_ms` upstream,
/// all over one downstream HTTP/2 connection. Returns each call's gRPC
/// status code (0 for OK) and how long it took.
async fn slow_calls(address: SocketAddr, count: usize, sleep_ms: u32) -> Vec<(i32, Duration)> {
    let echo = client(address).await;
    let calls: Vec<_> = (0..count)
        .map(|_| {
            let mut echo = echo.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = echo.unary(EchoRequest { sleep_ms, ..Default::default() }).await;
                (result.map_or_else(|status| status.code() as i32, |_| 0), started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

async fn metric(proxy: &Proxy, series: &str) -> Option<f64> {
    let text = http1_get(proxy.admin, "admin", "/stats/prometheus").await.unwrap().1;
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const OPENED: &str = "legate_upstream_connections_opened_total{cluster=\"echo\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_connections_open_another() {
    let (proxy, address, _upstream) = start_proxy("h2-pool-grow", 2, None).await;

    let results = slow_calls(address, 6, 500).await;
    assert!(results.iter().all(|(code, _)| *code == 0), "every call succeeds: {results:?}");
    assert!(results.iter().all(|(_, took)| *took < Duration::from_millis(950)), "no call waited for a stream: {results:?}");
    assert_eq!(metric(&proxy, OPENED).await, Some(3.0), "6 streams at 2 per connection need 3 connections");

    let results = slow_calls(address, 4, 100).await;
    assert!(results.iter().all(|(code, _)| *code == 0), "{results:?}");
    assert_eq!(metric(&proxy, OPENED).await, Some(3.0), "later calls reuse the open connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_limit_keeps_one_connection() {
    let dir = temp_dir("h2-pool-one");
    let upstream = EchoUpstream::start("echo-1").await;
    let proxy = Proxy::start(&grpc_bootstrap(&[upstream.address], "http://allowed.test"), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("grpc").await;

    let results = slow_calls(address, 20, 300).await;
    assert!(results.iter().all(|(code, _)| *code == 0), "{results:?}");
    assert_eq!(metric(&proxy, OPENED).await, Some(1.0), "without max_concurrent_streams one connection carries all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_waits_under_max_connections() {
    let (proxy, address, _upstream) = start_proxy("h2-pool-pending", 2, Some("{ max_connections: 2 }")).await;

    let results = slow_calls(address, 6, 400).await;
    assert!(results.iter().all(|(code, _)| *code == 0), "pending calls succeed once a stream is free: {results:?}");
    let waited = results.iter().filter(|(_, took)| *took >= Duration::from_millis(790)).count();
    assert!(waited >= 2, "two calls waited for a stream: {results:?}");
    assert_eq!(metric(&proxy, OPENED).await, Some(2.0), "max_connections holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pending_queue_overflows() {
    let breakers = "{ max_connections: 1, max_pending_requests: 1 }";
    let (proxy, address, _upstream) = start_proxy("h2-pool-overflow", 2, Some(breakers)).await;

    let results = slow_calls(address, 6, 400).await;
    let ok = results.iter().filter(|(code, _)| *code == 0).count();
    let unavailable = results.iter().filter(|(code, _)| *code == 14).count();
    assert_eq!(ok, 3, "two streams and one pending call: {results:?}");
    assert_eq!(unavailable, 3, "the rest find the pending queue full: {results:?}");
    assert_eq!(metric(&proxy, OPENED).await, Some(1.0));
    let overflow = "legate_upstream_overflow_total{cluster=\"echo\",priority=\"default\",resource=\"pending_requests\"}";
    assert_eq!(metric(&proxy, overflow).await, Some(3.0));
}
