//! gRPC through the proxy with a tonic client: the four call kinds,
//! metadata and trailers, deadlines, proxy-made statuses, cancellation,
//! load balancing and the per-method metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;

use crate::support::grpc::echo::EchoRequest;
use crate::support::grpc::{client, grpc_bootstrap, EchoUpstream};
use crate::support::*;

pub struct GrpcSetup {
    pub proxy: Proxy,
    pub address: SocketAddr,
    pub upstreams: Vec<EchoUpstream>,
}

pub async fn grpc_setup(label: &str) -> GrpcSetup {
    let dir = temp_dir(label);
    let upstreams = vec![EchoUpstream::start("echo-1").await, EchoUpstream::start("echo-2").await];
    let endpoints: Vec<SocketAddr> = upstreams.iter().map(|u| u.address).collect();
    let proxy = Proxy::start(&grpc_bootstrap(&endpoints, "http://allowed.test"), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("grpc").await;
    GrpcSetup { proxy, address, upstreams }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest { message: message.to_string(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_metadata_and_status() {
    let setup = grpc_setup("grpc-unary").await;
    let mut echo = client(setup.address).await;

    let mut call = tonic::Request::new(request("hello"));
    call.metadata_mut().insert("x-echo", MetadataValue::from_static("text value"));
    call.metadata_mut().insert_bin("x-echo-bin", MetadataValue::from_bytes(&[0, 159, 255, 10]));
    let response = echo.unary(call).await.expect("unary call succeeds");
    assert_eq!(response.metadata().get("x-echo").unwrap(), "text value");
    assert_eq!(response.metadata().get_bin("x-echo-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 159, 255, 10]);
    assert_eq!(response.get_ref().message, "hello");

    for (code, message) in [(5, "not here: 100% sure, ünïcode"), (3, "bad\nargument"), (9, "")] {
        let mut call = tonic::Request::new(EchoRequest { fail_code: code, fail_message: message.to_string(), ..Default::default() });
        call.metadata_mut().insert("x-echo", MetadataValue::from_static("on error"));
        let status = echo.unary(call).await.expect_err("the call fails");
        assert_eq!(status.code() as u32, code);
        assert_eq!(status.message(), message);
        assert_eq!(status.metadata().get("x-echo").unwrap(), "on error");
        assert_eq!(status.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 1, 2, 255]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_pass_whole() {
    let setup = grpc_setup("grpc-streams").await;
    let mut echo = client(setup.address).await;

    let mut stream = echo
        .server_stream(EchoRequest { message: "s".into(), count: 10_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.index, received);
        received += 1;
    }
    assert_eq!(received, 10_000);

    let outbound = tokio_stream::iter((0..500).map(|i| request(&format!("{i},"))));
    let joined = echo.client_stream(outbound).await.unwrap().into_inner();
    assert_eq!(joined.index, 500);
    assert!(joined.message.starts_with("0,1,2,"), "{}", joined.message);
    assert!(joined.message.ends_with("499,"), "{}", joined.message);

    let outbound = tokio_stream::iter((0..300).map(|i| request(&i.to_string())));
    let mut replies = echo.bidi_stream(outbound).await.unwrap().into_inner();
    let mut count = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        assert_eq!(reply.message, count.to_string());
        count += 1;
    }
    assert_eq!(count, 300);

    let payload: Vec<u8> = (0..16 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let big = EchoRequest { payload: payload.clone(), ..Default::default() };
    let answer = echo.unary(big).await.expect("16 MiB message passes").into_inner();
    assert!(answer.payload == payload, "the 16 MiB payload came back intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_deadline_ends_call() {
    let setup = grpc_setup("grpc-deadline").await;
    let mut echo = client(setup.address).await;

    // A raw HTTP/2 client sends the deadline in grpc-timeout alone: tonic
    // would also start a timer of its own, which races the proxy's answer.
    let message = prost::Message::encode_to_vec(&EchoRequest { sleep_ms: 2000, ..Default::default() });
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let stream = TcpStream::connect(setup.address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let call = hyper::Request::post("http://grpc.test/legate.test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let started = Instant::now();
    let response = sender.send_request(call).await.unwrap();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let elapsed = started.elapsed();
    let status = headers.get("grpc-status").or(collected.trailers().and_then(|t| t.get("grpc-status"))).cloned();
    assert_eq!(status.as_ref().map(|s| s.to_str().unwrap()), Some("4"), "DEADLINE_EXCEEDED: {headers:?}");
    assert!(elapsed >= Duration::from_millis(180), "ended after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "ended after {elapsed:?}");

    let mut call = tonic::Request::new(request("quick"));
    call.set_timeout(Duration::from_secs(5));
    let seen = echo.unary(call).await.unwrap().into_inner().grpc_timeout;
    let seen = parse_grpc_timeout(&seen);
    assert!(seen <= Duration::from_secs(5), "upstream saw {seen:?}");
    assert!(seen > Duration::from_secs(4), "upstream saw {seen:?}");
}

fn parse_grpc_timeout(text: &str) -> Duration {
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().unwrap_or_else(|_| panic!("grpc-timeout {text:?}"));
    match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => panic!("unit of {text:?}"),
    }
}

/// Sends one raw gRPC request over HTTP/2 and returns the status, headers,
/// and trailers (or `None` for a trailers-only response).
pub async fn raw_grpc(address: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (u16, http::HeaderMap, Option<http::HeaderMap>) {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut builder = hyper::Request::post(format!("http://grpc.test{path}")).header("content-type", "application/grpc").header("te", "trailers");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let response = sender.send_request(builder.body(Full::new(frame)).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, headers, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_errors_are_statuses() {
    let setup = grpc_setup("grpc-errors").await;
    let cases = [
        ("/legate.test.Missing/Call", vec![], "12", "no route matched"),
        ("/legate.test.Empty/Call", vec![], "14", "no healthy upstream"),
        ("/legate.test.Echo/Unary", vec![("grpc-timeout", "12.5S")], "3", "invalid grpc-timeout"),
    ];
    for (path, extra, code, message) in cases {
        let (status, headers, trailers) = raw_grpc(setup.address, path, &extra).await;
        assert_eq!(status, 200, "{path}");
        assert!(trailers.is_none(), "{path}: a trailers-only response");
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], code, "{path}");
        let text = headers["grpc-message"].to_str().unwrap();
        assert!(text.contains(message), "{path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_cancel_reaches_upstream() {
    let setup = grpc_setup("grpc-cancel").await;
    let mut echo = client(setup.address).await;
    let mut stream = echo
        .server_stream(EchoRequest { count: 10_000, sleep_ms: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        stream.message().await.unwrap().unwrap();
    }
    drop(stream);
    let dropped = Instant::now();

    let seen = eventually(Duration::from_secs(3), || async {
        setup.upstreams.iter().any(|u| u.cancelled_at.lock().unwrap().is_some())
    })
    .await;
    assert!(seen, "the upstream handler saw the cancellation");
    let cancelled = setup.upstreams.iter().find_map(|u| *u.cancelled_at.lock().unwrap()).unwrap();
    let delay = cancelled.saturating_duration_since(dropped);
    assert!(delay < Duration::from_millis(100), "the upstream saw the cancellation after {delay:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_spread_over_endpoints() {
    let setup = grpc_setup("grpc-spread").await;
    let echo = client(setup.address).await;
    let mut calls = Vec::new();
    for i in 0..1000 {
        let mut echo = echo.clone();
        calls.push(tokio::spawn(async move { echo.unary(request(&i.to_string())).await.map(|r| r.into_inner().endpoint) }));
    }
    let mut per_endpoint = std::collections::HashMap::new();
    for call in calls {
        *per_endpoint.entry(call.await.unwrap().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_endpoint.values().sum::<i32>(), 1000);
    for name in ["echo-1", "echo-2"] {
        let count = per_endpoint.get(name).copied().unwrap_or(0);
        assert!(count >= 300, "{name} served {count} of 1000 calls: {per_endpoint:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metrics_by_method() {
    let setup = grpc_setup("grpc-metrics").await;
    let mut echo = client(setup.address).await;
    echo.unary(request("a")).await.unwrap();
    echo.unary(EchoRequest { fail_code: 5, ..Default::default() }).await.unwrap_err();
    let mut stream = echo.server_stream(EchoRequest { count: 3, ..Default::default() }).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    raw_grpc(setup.address, "/legate.test.Empty/Call", &[]).await;
    raw_grpc(setup.address, "/evil.Service/Invented", &[]).await;

    let (_, text) = http1_get(setup.proxy.admin, "admin", "/stats/prometheus").await.unwrap();
    for expected in [
        r#"grpc_server_handled_total{grpc_service="legate.test.Echo",grpc_method="Unary",grpc_type="unary",grpc_code="OK"} 1"#,
        r#"grpc_server_handled_total{grpc_service="legate.test.Echo",grpc_method="Unary",grpc_type="unary",grpc_code="NOT_FOUND"} 1"#,
        r#"grpc_server_handled_total{grpc_service="legate.test.Echo",grpc_method="ServerStream",grpc_type="server_stream",grpc_code="OK"} 1"#,
        r#"grpc_server_msg_sent_total{grpc_service="legate.test.Echo",grpc_method="ServerStream",grpc_type="server_stream"} 3"#,
        r#"grpc_server_started_total{grpc_service="legate.test.Echo",grpc_method="Unary"} 2"#,
        r#"grpc_server_handled_total{grpc_service="other",grpc_method="other",grpc_type="unary",grpc_code="UNAVAILABLE"} 1"#,
        r#"grpc_server_handled_total{grpc_service="other",grpc_method="other",grpc_type="unary",grpc_code="UNIMPLEMENTED"} 1"#,
    ] {
        assert!(text.contains(expected), "metrics lack {expected}:\n{text}");
    }
    assert!(!text.contains("Invented"), "an unlisted method makes no series");
    assert!(text.contains("grpc_server_handling_seconds_bucket{"), "the handling histogram is exported");
    let families = crate::metrics::parse_openmetrics(&text);
    assert!(families.contains(&"grpc_server_handled".to_string()), "the parser reads the gRPC families: {families:?}");
}
