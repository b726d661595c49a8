//! Outlier detection and active health checks take failing endpoints out of
//! rotation and bring them back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::*;

/// A switchable upstream: answers `status` (503 while `failing`), serves
/// `grpc.health.v1.Health/Check` as SERVING unless `failing`, counts
/// requests, and can be stopped and started again on the same port.
struct Switchable {
    address: SocketAddr,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    server: Option<JoinHandle<()>>,
}

impl Switchable {
    async fn start() -> Switchable {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let mut switchable =
            Switchable { address, failing: Arc::new(AtomicBool::new(false)), hits: Arc::new(AtomicUsize::new(0)), server: None };
        switchable.serve(socket);
        switchable
    }

    fn serve(&mut self, socket: TcpListener) {
        let failing = self.failing.clone();
        let hits = self.hits.clone();
        self.server = Some(tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((stream, _)) = socket.accept().await {
                let failing = failing.clone();
                let hits = hits.clone();
                connections.push(tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let failing = failing.load(Ordering::Relaxed);
                        let health_check = request.uri().path() == "/grpc.health.v1.Health/Check" || request.uri().path() == "/healthz";
                        if !health_check {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        async move { Ok::<_, Infallible>(answer(request.uri().path(), failing)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                }));
            }
        }));
    }

    /// Stops accepting and closes every open connection.
    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    async fn restart(&mut self) {
        let socket = TcpListener::bind(self.address).await.unwrap();
        self.serve(socket);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

type Frames = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn answer(path: &str, failing: bool) -> hyper::Response<Frames> {
    let frames = if path == "/grpc.health.v1.Health/Check" {
        // HealthCheckResponse { status: SERVING (1) or NOT_SERVING (2) }.
        let status = if failing { 2u8 } else { 1u8 };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        vec![Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]))), Ok(Frame::trailers(trailers))]
    } else {
        vec![Ok(Frame::data(Bytes::from_static(b"ok")))]
    };
    let status = if failing { 503 } else { 200 };
    let mut response = hyper::Response::builder().status(if path.starts_with("/grpc.") { 200 } else { status });
    if path.starts_with("/grpc.") {
        response = response.header("content-type", "application/grpc");
    }
    response.body(StreamBody::new(futures_util::stream::iter(frames))).unwrap()
}

fn cluster(endpoints: &[SocketAddr], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", a.port()))
        .collect();
    format!("  - name: pair\n    connect_timeout: 0.5s{extra}\n    load_assignment:\n      cluster_name: pair\n      endpoints: [{{ lb_endpoints: [{}] }}]", endpoints.join(", "))
}

const ROUTES: &str = "              - match: { prefix: \"/\" }\n                route: { cluster: pair }";

async fn start_proxy(cluster: &str) -> (Proxy, SocketAddr) {
    let dir = temp_dir("endpoint-health");
    let proxy = Proxy::start(&static_bootstrap("", ROUTES, cluster), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener)
}

async fn requests(listener: SocketAddr, count: usize) -> Vec<u16> {
    let mut client = KeepAlive::connect(listener).await;
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(client.get("a", "/work").await.map(|(status, _)| status).unwrap_or(0));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_ejects_then_restores() {
    let bad = Switchable::start().await;
    bad.failing.store(true, Ordering::Relaxed);
    let good = Switchable::start().await;
    let extra = "\n    outlier_detection: { consecutive_5xx: 5, base_ejection_time: 1s, max_ejection_percent: 50, interval: 30s }";
    let (proxy, listener) = start_proxy(&cluster(&[bad.address, good.address], extra)).await;

    let statuses = requests(listener, 40).await;
    assert_eq!(bad.hits(), 5, "the failing endpoint gets exactly 5 requests, then is ejected");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);
    assert!(statuses[20..].iter().all(|s| *s == 200), "traffic meanwhile goes to the healthy endpoint");

    let text = http1_get(proxy.admin, "admin", "/stats/prometheus").await.unwrap().1;
    assert!(text.contains("legate_upstream_outlier_ejections_total{cluster=\"pair\"} 1"), "{text}");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    requests(listener, 10).await;
    assert!(bad.hits() > 5, "the ejected endpoint returns after base_ejection_time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_follows_endpoint() {
    let mut flaky = Switchable::start().await;
    let steady = Switchable::start().await;
    let extra = "\n    health_checks: [{ timeout: 0.3s, interval: 0.2s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: { path: /healthz } }]";
    let (_proxy, listener) = start_proxy(&cluster(&[flaky.address, steady.address], extra)).await;

    assert!(requests(listener, 10).await.iter().all(|s| *s == 200));
    assert!(flaky.hits() > 0, "both endpoints take traffic while healthy");

    flaky.stop();
    // interval * unhealthy_threshold, plus jitter-free slack.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let before = flaky.hits();
    let statuses = requests(listener, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "the stopped endpoint is out of rotation: {statuses:?}");
    assert_eq!(flaky.hits(), before);

    flaky.restart().await;
    let back = eventually(Duration::from_secs(5), || async {
        requests(listener, 6).await;
        flaky.hits() > before
    })
    .await;
    assert!(back, "the endpoint returns once its health check passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_check_reads_serving_status() {
    let flaky = Switchable::start().await;
    let steady = Switchable::start().await;
    let extra = "\n    http2_protocol_options: {}\n    health_checks: [{ timeout: 0.3s, interval: 0.2s, unhealthy_threshold: 2, healthy_threshold: 1, grpc_health_check: { service_name: pkg.Svc } }]";
    let (_proxy, listener) = start_proxy(&cluster(&[flaky.address, steady.address], extra)).await;

    flaky.failing.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let before = flaky.hits();
    let statuses = requests(listener, 20).await;
    assert_eq!(flaky.hits(), before, "NOT_SERVING takes the endpoint out: {statuses:?}");

    flaky.failing.store(false, Ordering::Relaxed);
    let back = eventually(Duration::from_secs(5), || async {
        requests(listener, 6).await;
        flaky.hits() > before
    })
    .await;
    assert!(back, "SERVING brings it back");
}
