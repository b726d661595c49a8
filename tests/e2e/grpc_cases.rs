//! gRPC edge cases: a message larger than the HTTP/2 window through two
//! proxies in a row, with and without a retry policy, and a `grpc-timeout`
//! longer than the route timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::grpc::echo::EchoRequest;
use crate::support::grpc::{client, grpc_bootstrap, EchoUpstream};
use crate::support::*;

const GRPC_ROUTE: &str = "                  max_stream_duration: { grpc_timeout_header_max: 0s }";

/// Starts a proxy for `endpoints`, with `route_extra` lines added to the
/// gRPC route.
async fn proxy_for(endpoints: &[SocketAddr], route_extra: &str, label: &str) -> (Proxy, SocketAddr) {
    let dir = temp_dir(label);
    let bootstrap = grpc_bootstrap(endpoints, "http://allowed.test");
    assert!(bootstrap.contains(GRPC_ROUTE), "the gRPC route of grpc_bootstrap changed");
    let bootstrap = bootstrap.replace(GRPC_ROUTE, &format!("{GRPC_ROUTE}{route_extra}"));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("grpc").await;
    (proxy, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_through_two_proxies() {
    let upstream = EchoUpstream::start("far").await;
    let (_inner, inner_address) = proxy_for(&[upstream.address], "", "grpc-inner").await;
    let (_outer, outer_address) = proxy_for(&[inner_address], "", "grpc-outer").await;
    let retry = "\n                  retry_policy: { retry_on: unavailable, num_retries: 2 }";
    let (_retrying, retrying_address) = proxy_for(&[inner_address], retry, "grpc-retrying").await;

    // About 100 KiB, larger than the default 65,535-byte HTTP/2 window.
    let payload: Vec<u8> = (0..100 * 1024).map(|i| (i % 253) as u8).collect();
    for address in [outer_address, retrying_address] {
        let mut echo = client(address).await;
        let request = EchoRequest { payload: payload.clone(), ..Default::default() };
        let answer = tokio::time::timeout(Duration::from_secs(10), echo.unary(request)).await.expect("no stall").unwrap();
        assert!(answer.into_inner().payload == payload, "the payload comes back whole through {address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_outlasts_route_timeout() {
    let upstream = EchoUpstream::start("slow").await;
    // A 1 s route timeout; max_stream_duration lets the header decide.
    let (_proxy, address) = proxy_for(&[upstream.address], "\n                  timeout: 1s", "grpc-long-deadline").await;
    let mut echo = client(address).await;

    let mut call = tonic::Request::new(EchoRequest { sleep_ms: 2000, ..Default::default() });
    call.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let answer = echo.unary(call).await;
    assert!(answer.is_ok(), "a 5 s deadline is not cut by the 1 s route timeout: {answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(1900));

    let mut call = tonic::Request::new(EchoRequest { sleep_ms: 2000, ..Default::default() });
    call.metadata_mut().insert("grpc-timeout", "123456789S".parse().unwrap());
    let rejected = echo.unary(call).await.expect_err("a 9-digit grpc-timeout is invalid");
    assert_eq!(rejected.code(), tonic::Code::InvalidArgument, "{rejected:?}");
}
