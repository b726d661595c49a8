//! The control plane's admin port: Prometheus metrics for connected proxies,
//! pushes, ACKs, NACKs and push-to-ACK latency, and a readiness endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use crate::listeners::extra_listener;
use crate::support::*;

async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = http1_get(admin, "admin", "/metrics").await.expect("the admin port answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `series` in the control plane's metrics satisfies `check`.
async fn wait_for(admin: SocketAddr, series: &str, check: impl Fn(f64) -> bool) -> String {
    let reached = eventually(Duration::from_secs(15), || async {
        sample(&scrape(admin).await, series).is_some_and(&check)
    })
    .await;
    let text = scrape(admin).await;
    assert!(reached, "{series} never reached the expected value:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_counts_pushes_acks_and_nacks() {
    let dir = temp_dir("cp-metrics");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start_with(&dir.join("cp"), "127.0.0.1:0", &["--admin-listen", "127.0.0.1:0"]);
    let admin = control_plane.process.address_after("admin listening on");

    assert_eq!(http1_get(admin, "admin", "/ready").await.unwrap().0, 200);
    assert_eq!(http1_get(admin, "admin", "/nothing").await.unwrap().0, 404);
    let idle = scrape(admin).await;
    assert_eq!(sample(&idle, "legate_control_plane_proxies_connected"), Some(0.0), "{idle}");

    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let mut proxy = Proxy::start(&ads_bootstrap("metrics-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;

    let text = wait_for(admin, "legate_control_plane_acks_total{resource_type=\"LDS\"}", |acks| acks >= 1.0).await;
    assert_eq!(sample(&text, "legate_control_plane_proxies_connected"), Some(1.0), "{text}");
    for resource_type in ["CDS", "EDS", "LDS"] {
        let pushes = sample(&text, &format!("legate_control_plane_pushes_total{{resource_type=\"{resource_type}\"}}"));
        assert!(pushes.is_some_and(|count| count >= 1.0), "{resource_type} pushes:\n{text}");
    }
    let families = crate::metrics::parse_openmetrics(&text);
    assert!(families.contains(&"legate_control_plane_push_to_ack_seconds".to_string()), "{families:?}");
    let timed = sample(&text, "legate_control_plane_push_to_ack_seconds_count{resource_type=\"LDS\"}");
    assert!(timed.is_some_and(|count| count >= 1.0), "push-to-ACK latency is observed:\n{text}");
    assert_eq!(sample(&text, "legate_control_plane_nacks_total{resource_type=\"LDS\"}"), None, "no NACK yet:\n{text}");

    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = occupied.local_addr().unwrap().port();
    assert!(control_plane.apply(&extra_listener("clash", port, "never")).status.success());
    wait_for(admin, "legate_control_plane_nacks_total{resource_type=\"LDS\"}", |nacks| nacks >= 1.0).await;

    proxy.process.kill();
    wait_for(admin, "legate_control_plane_proxies_connected", |connected| connected == 0.0).await;
}
