//! Retries: failed tries go to another endpoint and the client sees the
//! success; gRPC UNAVAILABLE in trailers is retried; a body too large to
//! replay is not; retries past `max_retries` overflow.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

/// An upstream (HTTP/1.1 and HTTP/2) that answers every request the same
/// way and counts them. `grpc_status` makes it a gRPC server answering with
/// that status in trailers (and one message when the status is 0).
async fn fixed_upstream(status: u16, grpc_status: Option<u32>) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, Infallible>(fixed_response(status, grpc_status))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, hits)
}

type Frames = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn fixed_response(status: u16, grpc_status: Option<u32>) -> hyper::Response<Frames> {
    let mut frames = Vec::new();
    let mut response = hyper::Response::builder().status(status);
    match grpc_status {
        Some(code) => {
            response = response.header("content-type", "application/grpc");
            if code == 0 {
                frames.push(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02ok"))));
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", code.to_string().parse().unwrap());
            frames.push(Ok(Frame::trailers(trailers)));
        }
        None => frames.push(Ok(Frame::data(Bytes::from(format!("status {status}"))))),
    }
    response.body(StreamBody::new(futures_util::stream::iter(frames))).unwrap()
}

fn cluster(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", a.port()))
        .collect();
    format!(
        "  - name: {name}\n    connect_timeout: 1s{extra}\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{}] }}]",
        endpoints.join(", ")
    )
}

const PREVIOUS_HOSTS: &str = r#"retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }], host_selection_retry_max_attempts: 5"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_try_is_retried_elsewhere() {
    let (failing, failing_hits) = fixed_upstream(503, None).await;
    let (healthy, healthy_hits) = fixed_upstream(200, None).await;
    let routes = format!(
        "              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: pair, retry_policy: {{ retry_on: 5xx, num_retries: 2, {PREVIOUS_HOSTS} }} }}"
    );
    let dir = temp_dir("retries");
    let proxy = Proxy::start(&static_bootstrap("", &routes, &cluster("pair", &[failing, healthy], "")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut client = KeepAlive::connect(listener).await;
    for _ in 0..20 {
        assert_eq!(client.get("a", "/x").await.unwrap(), (200, "status 200".to_string()), "the client sees the success");
    }
    assert_eq!(healthy_hits.load(Ordering::Relaxed), 20);
    let failed = failing_hits.load(Ordering::Relaxed);
    assert!(failed >= 5, "about half the first tries hit the failing endpoint: {failed}");
    let text = proxy.scrape().await;
    assert_eq!(sample(&text, "legate_upstream_retries_total{cluster=\"pair\"}"), Some(failed as f64), "{text}");
    let upstream_5xx = "legate_upstream_requests_total{cluster=\"pair\",code_class=\"5xx\"}";
    assert_eq!(sample(&text, upstream_5xx), Some(failed as f64), "every upstream 503 is counted, retried or not");
    assert_eq!(sample(&text, "legate_http_response_flags_total{flag=\"URX\"}"), None, "no request ran out of retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_in_trailers_is_retried() {
    let (failing, failing_hits) = fixed_upstream(200, Some(14)).await;
    let (healthy, _) = fixed_upstream(200, Some(0)).await;
    let routes = format!(
        "              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: grpc, retry_policy: {{ retry_on: unavailable, num_retries: 2, {PREVIOUS_HOSTS} }} }}"
    );
    let dir = temp_dir("retries-grpc");
    let proxy = Proxy::start(&static_bootstrap("", &routes, &cluster("grpc", &[failing, healthy], "\n    http2_protocol_options: {}")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let stream = tokio::net::TcpStream::connect(listener).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..10 {
        let request = hyper::Request::post(format!("http://{listener}/pkg.Svc/Call"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01q")))
            .unwrap();
        let response = sender.clone().send_request(request).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "0", "the client sees the retried call succeed");
        assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x02ok");
    }
    assert!(failing_hits.load(Ordering::Relaxed) >= 2, "some first tries hit the failing endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_is_not_retried() {
    let (failing, hits) = fixed_upstream(503, None).await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: one, retry_policy: { retry_on: 5xx, num_retries: 3, retry_back_off: { base_interval: 0.001s } } }";
    let dir = temp_dir("retries-body");
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster("one", &[failing], "")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let small = hyper::Request::post("/small").header("host", "a").body(Full::new(Bytes::from(vec![1u8; 1000]))).unwrap();
    assert_eq!(http1_request(listener, small).await.unwrap().0, 503);
    assert_eq!(hits.load(Ordering::Relaxed), 4, "a small body is replayed on each of 3 retries");

    let large = hyper::Request::post("/large").header("host", "a").body(Full::new(Bytes::from(vec![2u8; 2 * 1024 * 1024]))).unwrap();
    assert_eq!(http1_request(listener, large).await.unwrap().0, 503);
    assert_eq!(hits.load(Ordering::Relaxed), 5, "a body over the replay buffer is sent once");
    let text = proxy.scrape().await;
    assert_eq!(sample(&text, "legate_upstream_retries_skipped_total{cluster=\"one\"}"), Some(1.0), "{text}");
    let exhausted = sample(&text, "legate_http_response_flags_total{flag=\"URX\"}");
    assert_eq!(exhausted, Some(1.0), "only the small body ran out of retries:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_past_max_retries_overflow() {
    let (failing, hits) = fixed_upstream(503, None).await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: one, retry_policy: { retry_on: 5xx, num_retries: 3 } }";
    let dir = temp_dir("retries-overflow");
    let extra = "\n    circuit_breakers: { thresholds: [{ max_retries: 0 }] }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster("one", &[failing], extra)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    assert_eq!(http1_get(listener, "a", "/x").await.unwrap().0, 503);
    assert_eq!(hits.load(Ordering::Relaxed), 1, "no retry is allowed");
    let text = proxy.scrape().await;
    let series = "legate_upstream_overflow_total{cluster=\"one\",priority=\"default\",resource=\"retries\"}";
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}
