//! Prometheus metrics on the admin port count exactly the traffic sent, and
//! random paths and hosts create no new series.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::websocket::WsUpstream;
use crate::support::*;

const ROUTES: &str = r#"              - name: ok
                match: { prefix: "/ok" }
                route: { cluster: backend }
              - name: ws
                match: { prefix: "/ws" }
                route: { cluster: ws }
              - name: down
                match: { prefix: "/down" }
                route: { cluster: unhealthy }"#;


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_counted_exactly() {
    let dir = temp_dir("metrics");
    let backend = Upstream::start("backend").await;
    let ws = WsUpstream::start("ws").await;
    let clusters = [
        static_cluster("backend", backend.address.port(), None),
        static_cluster("ws", ws.address.port(), None),
        static_cluster("unhealthy", backend.address.port(), Some("UNHEALTHY")),
    ];
    let bootstrap = static_bootstrap("          upgrade_configs: [{ upgrade_type: websocket }]", ROUTES, &clusters.join("\n"));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    for _ in 0..3 {
        assert_eq!(http1_get(listener, "a", "/ok").await.unwrap().0, 200);
    }
    assert_eq!(http2_get(listener, "a", "/ok/h2").await.unwrap().0, 200);
    for _ in 0..2 {
        assert_eq!(http1_get(listener, "a", "/missing").await.unwrap().0, 404);
    }
    assert_eq!(http1_get(listener, "a", "/down").await.unwrap().0, 503);

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{listener}/ws")).await.unwrap();
    socket.send(Message::text("12345")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("12345"));
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);

    let closed = eventually(Duration::from_secs(5), || async {
        sample(&proxy.scrape().await, "legate_websocket_closes_total{reason=\"peers_closed\"}") == Some(1.0)
    })
    .await;
    let text = proxy.scrape().await;
    assert!(closed, "the WebSocket close is counted:\n{text}");

    let expected = [
        ("legate_http_requests_total{virtual_host=\"all\",route=\"ok\",code_class=\"2xx\"}", 4.0),
        ("legate_http_requests_total{virtual_host=\"all\",route=\"none\",code_class=\"4xx\"}", 2.0),
        ("legate_http_requests_total{virtual_host=\"all\",route=\"down\",code_class=\"5xx\"}", 1.0),
        ("legate_http_requests_total{virtual_host=\"all\",route=\"ws\",code_class=\"1xx\"}", 1.0),
        ("legate_http_responses_by_code_total{code=\"200\"}", 4.0),
        ("legate_http_responses_by_code_total{code=\"404\"}", 2.0),
        ("legate_http_responses_by_code_total{code=\"503\"}", 1.0),
        ("legate_http_response_flags_total{flag=\"NR\"}", 2.0),
        ("legate_http_response_flags_total{flag=\"UH\"}", 1.0),
        ("legate_http_response_flags_total{flag=\"DC\"}", 0.0),
        ("legate_http_request_duration_seconds_count{virtual_host=\"all\",route=\"ok\"}", 4.0),
        ("legate_upstream_requests_total{cluster=\"backend\",code_class=\"2xx\"}", 4.0),
        ("legate_upstream_endpoints{cluster=\"backend\"}", 1.0),
        ("legate_upstream_endpoints_healthy{cluster=\"unhealthy\"}", 0.0),
        ("legate_downstream_connections_by_protocol_total{listener=\"http\",protocol=\"http2\"}", 1.0),
        ("legate_websocket_upgrades_total{result=\"accepted\"}", 1.0),
        ("legate_websocket_active", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(sample(&text, "legate_websocket_transferred_bytes_total{direction=\"downstream_to_upstream\"}").unwrap() >= 5.0);
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    let families = parse_openmetrics(&text);
    assert!(families.contains(&"legate_http_requests".to_string()), "{families:?}");
}

/// Parses `text` with the Python Prometheus client's strict OpenMetrics
/// parser, an independent implementation, and returns the family names.
pub(crate) fn parse_openmetrics(text: &str) -> Vec<String> {
    use std::io::Write;

    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
for family in text_string_to_metric_families(sys.stdin.read()):\n    print(family.name)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("No module named"), "missing parser, run: python3 -m pip install prometheus-client\n{stderr}");
    assert!(output.status.success(), "the OpenMetrics parser rejects the scrape: {stderr}\n{text}");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_add_no_series() {
    let dir = temp_dir("metrics-series");
    let backend = Upstream::start("backend").await;
    let clusters = [
        static_cluster("backend", backend.address.port(), None),
        static_cluster("ws", backend.address.port(), None),
        static_cluster("unhealthy", backend.address.port(), Some("UNHEALTHY")),
    ];
    let proxy = Proxy::start(&static_bootstrap("", ROUTES, &clusters.join("\n")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut client = KeepAlive::connect(listener).await;
    for _ in 0..3 {
        client.get("warm.test", "/ok").await.unwrap();
        client.get("warm.test", "/missing").await.unwrap();
    }
    let series = |text: &str| text.lines().filter(|line| !line.starts_with('#')).count();
    let before = series(&proxy.scrape().await);

    for index in 0..2000 {
        let host = format!("host-{}.test", fastrand_like(index));
        let path = format!("/{}/{}", if index % 2 == 0 { "ok" } else { "nowhere" }, fastrand_like(index * 7));
        client.get(&host, &path).await.unwrap();
    }
    let after = series(&proxy.scrape().await);
    assert_eq!(before, after, "requests with random hosts and paths created series");
}

/// A cheap deterministic scramble, so each request has another host and path.
fn fastrand_like(seed: usize) -> u64 {
    (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Every metric the Grafana dashboard in deploy/grafana queries is in the
/// README's metrics reference, and every family a proxy exports there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_documented_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/legate-dashboard.json")).unwrap()).unwrap();
    let documented = |family: &str| {
        ["", "_total", "_bytes_total", "_seconds"].iter().any(|suffix| readme.contains(&format!("`{family}{suffix}`")))
    };

    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("legate_") || word.starts_with("grpc_server_") {
                    queried.push(word.to_string());
                }
            }
        }
    }
    assert!(queried.len() >= 10, "the dashboard queries metrics: {queried:?}");
    for name in &queried {
        let family = ["_bucket", "_count", "_sum"].iter().fold(name.clone(), |name, suffix| name.strip_suffix(suffix).map(str::to_string).unwrap_or(name));
        assert!(readme.contains(&format!("`{family}`")), "the dashboard queries {name}, which the README does not document");
    }

    let dir = temp_dir("dashboard");
    let backend = Upstream::start("backend").await;
    let clusters = [
        static_cluster("backend", backend.address.port(), None),
        static_cluster("ws", backend.address.port(), None),
        static_cluster("unhealthy", backend.address.port(), Some("UNHEALTHY")),
    ];
    let proxy = Proxy::start(&static_bootstrap("", ROUTES, &clusters.join("\n")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    http1_get(listener, "a", "/ok").await.unwrap();
    http1_get(listener, "a", "/missing").await.unwrap();
    for line in proxy.scrape().await.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let family = line.split(' ').next().unwrap();
        assert!(documented(family), "the proxy exports {family}, which the README does not document");
    }
}

/// A cluster's counters carry over when a push rebuilds it, and a cluster
/// that took no request has no request series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_counters_survive_push() {
    let dir = temp_dir("metrics-push");
    let web = [Upstream::start("web-1").await, Upstream::start("web-2").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web[0].address], api.address, "old")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("metrics-push-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    for _ in 0..2 {
        assert_eq!(http1_get(listener, "web.test", "/").await.unwrap().0, 200);
    }

    let output = control_plane.apply(&two_cluster_config(&[web[0].address, web[1].address], api.address, "new"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let web_endpoints = "legate_upstream_endpoints{cluster=\"web\"}";
    let pushed = eventually(Duration::from_secs(10), || async { sample(&proxy.scrape().await, web_endpoints) == Some(2.0) }).await;
    assert!(pushed, "the proxy takes the second web endpoint:\n{}", proxy.scrape().await);
    assert_eq!(http1_get(listener, "web.test", "/").await.unwrap().0, 200);

    let text = proxy.scrape().await;
    assert_eq!(sample(&text, "legate_upstream_requests_total{cluster=\"web\",code_class=\"2xx\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "legate_upstream_endpoints{cluster=\"api\"}"), Some(1.0), "{text}");
    assert!(!text.contains("legate_upstream_requests_total{cluster=\"api\""), "an unused cluster has no request series:\n{text}");
}
