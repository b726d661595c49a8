//! Circuit breakers: requests over `max_requests` get an immediate 503 with
//! `x-envoy-overloaded`, counted on the breaker that tripped, the same over
//! HTTP/1.1 and HTTP/2 upstreams; a raised limit applies at once.

use std::time::{Duration, Instant};

use crate::support::*;

fn breaker_cluster(name: &str, port: u16, max_requests: u32, http2: bool) -> String {
    let protocol = if http2 { "\n    http2_protocol_options: {}" } else { "" };
    format!(
        "  - name: {name}\n    connect_timeout: 1s{protocol}\n    circuit_breakers: {{ thresholds: [{{ max_requests: {max_requests}, max_pending_requests: 1024, max_connections: 100000 }}] }}\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]"
    )
}

const ROUTES: &str = r#"              - match: { prefix: "/h1/" }
                route: { cluster: h1 }
              - match: { prefix: "/h2/" }
                route: { cluster: h2 }"#;

/// Sends `count` concurrent slow requests; returns (status, overloaded
/// header, elapsed) for each.
async fn burst(listener: std::net::SocketAddr, path: &str, count: usize) -> Vec<(u16, bool, Duration)> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move {
                let started = Instant::now();
                let request = hyper::Request::get(path).header("host", "a").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                let (status, _, headers) = http1_request(listener, request).await.unwrap();
                (status, headers.get("x-envoy-overloaded").is_some_and(|v| v == "true"), started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_overflow_same_on_both_protocols() {
    let dir = temp_dir("breakers");
    let backend = Upstream::start("slow").await;
    let clusters = [breaker_cluster("h1", backend.address.port(), 10, false), breaker_cluster("h2", backend.address.port(), 10, true)];
    let proxy = Proxy::start(&static_bootstrap("", ROUTES, &clusters.join("\n")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    for (cluster, path) in [("h1", "/h1/slow/1000"), ("h2", "/h2/slow/1000")] {
        let before = backend.hits();
        let results = burst(listener, path, 50).await;
        let ok = results.iter().filter(|(status, _, _)| *status == 200).count();
        let overloaded: Vec<_> = results.iter().filter(|(status, _, _)| *status == 503).collect();
        assert_eq!(ok, 10, "{cluster}: exactly max_requests succeed: {results:?}");
        assert_eq!(overloaded.len(), 40, "{cluster}: the rest overflow: {results:?}");
        assert!(overloaded.iter().all(|(_, header, _)| *header), "{cluster}: every overflow says x-envoy-overloaded");
        assert!(overloaded.iter().all(|(_, _, elapsed)| *elapsed < Duration::from_millis(900)), "{cluster}: overflow is answered at once");
        assert_eq!(backend.hits() - before, 10, "{cluster}: only max_requests reach the upstream");

        let text = proxy.scrape().await;
        let series = format!("legate_upstream_overflow_total{{cluster=\"{cluster}\",priority=\"default\",resource=\"requests\"}}");
        assert_eq!(sample(&text, &series), Some(40.0), "{series}\n{text}");
        let pending = format!("legate_upstream_overflow_total{{cluster=\"{cluster}\",priority=\"default\",resource=\"pending_requests\"}}");
        assert_eq!(sample(&text, &pending), Some(0.0), "the overflow is counted on the requests breaker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gauge_reads_one_while_full() {
    let dir = temp_dir("breaker-gauge");
    let backend = Upstream::start("slow").await;
    let clusters = [breaker_cluster("h1", backend.address.port(), 3, false), breaker_cluster("h2", backend.address.port(), 3, true)];
    let proxy = Proxy::start(&static_bootstrap("", ROUTES, &clusters.join("\n")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let text = proxy.scrape().await;
    let remaining = "legate_circuit_breaker_remaining{cluster=\"h1\",priority=\"default\",resource=\"requests\"}";
    assert_eq!(sample(&text, remaining), Some(3.0), "remaining capacity reads the limit before any request: {text}");
    let retries = "legate_circuit_breaker_remaining{cluster=\"h1\",priority=\"high\",resource=\"retries\"}";
    assert_eq!(sample(&text, retries), Some(3.0), "the default max_retries is 3");

    let held = tokio::spawn(burst(listener, "/h1/slow/1500", 6));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let text = proxy.scrape().await;
    let open = "legate_circuit_breaker_open{cluster=\"h1\",priority=\"default\",resource=\"requests\"}";
    assert_eq!(sample(&text, open), Some(1.0), "{text}");
    let results = held.await.unwrap();
    assert_eq!(results.iter().filter(|(status, _, _)| *status == 200).count(), 3);
    assert_eq!(results.iter().filter(|(status, _, _)| *status == 503).count(), 3);
    let text = proxy.scrape().await;
    assert_eq!(sample(&text, open), Some(0.0), "the breaker closes when the requests finish");
}

fn cds_config(upstream: std::net::SocketAddr, max_requests: u32) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: limited
  connect_timeout: 1s
  circuit_breakers: {{ thresholds: [{{ max_requests: {max_requests} }}] }}
  load_assignment:
    cluster_name: limited
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: t
        route_config: {{ name: r, virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: limited }} }}] }}] }}
        http_filters: [{{ name: envoy.filters.http.router }}]
"#,
        port = upstream.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_limit_applies_at_once() {
    let dir = temp_dir("breaker-cds");
    let backend = Upstream::start("slow").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&cds_config(backend.address, 2)).status.success());
    let proxy = Proxy::start(&ads_bootstrap("breaker-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let held = tokio::spawn(burst(listener, "/slow/2000", 2));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(http1_get(listener, "a", "/now").await.unwrap().0, 503, "the limit of 2 is full");

    assert!(control_plane.apply(&cds_config(backend.address, 4)).status.success());
    let raised = eventually(Duration::from_secs(5), || async { http1_get(listener, "a", "/now").await.map(|r| r.0) == Ok(200) }).await;
    assert!(raised, "the raised limit admits a third request while two are held");

    let results = held.await.unwrap();
    assert!(results.iter().all(|(status, _, _)| *status == 200), "held requests finish across the update: {results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_wait_for_a_connection() {
    let dir = temp_dir("breaker-pending");
    let backend = Upstream::start("slow").await;
    let cluster = format!(
        "  - name: h1\n    connect_timeout: 1s\n    circuit_breakers: {{ thresholds: [{{ max_connections: 1, max_pending_requests: 1 }}] }}\n    load_assignment:\n      cluster_name: h1\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]",
        backend.address.port()
    );
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: h1 }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &cluster), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let results = burst(listener, "/slow/600", 3).await;
    let ok: Vec<_> = results.iter().filter(|(status, _, _)| *status == 200).collect();
    let overflow: Vec<_> = results.iter().filter(|(status, overloaded, _)| *status == 503 && *overloaded).collect();
    assert_eq!(ok.len(), 2, "one request runs and one waits for its connection: {results:?}");
    assert_eq!(overflow.len(), 1, "the third finds the pending queue full: {results:?}");
    assert!(ok.iter().any(|(_, _, elapsed)| *elapsed >= Duration::from_millis(1100)), "the pending one ran after the first");

    let text = proxy.scrape().await;
    let pending = "legate_upstream_overflow_total{cluster=\"h1\",priority=\"default\",resource=\"pending_requests\"}";
    assert_eq!(sample(&text, pending), Some(1.0), "{text}");
    let opened = "legate_upstream_connections_opened_total{cluster=\"h1\"}";
    assert_eq!(sample(&text, opened), Some(1.0), "one connection served both: {text}");
}
