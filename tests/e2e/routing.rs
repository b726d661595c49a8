//! Config applied through `legate apply` routes HTTP/1.1 and HTTP/2 traffic
//! by host and path, with round robin across endpoints.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path() {
    let dir = temp_dir("routing");
    let web = [Upstream::start("web-1").await, Upstream::start("web-2").await, Upstream::start("web-3").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));

    let config = two_cluster_config(&web.iter().map(|u| u.address).collect::<Vec<_>>(), api.address, "v1");
    let output = control_plane.apply(&config);
    assert!(output.status.success(), "apply failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied version"));

    let proxy = Proxy::start(&ads_bootstrap("routing-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (status, body) = http1_get(listener, "other.test", "/api/users").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api /v1/users 0", "prefix rewritten and sent to the api cluster");

    let (status, body) = http2_get(listener, "other.test", "/api/items").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api /v1/items 0");

    let (status, body) = http1_get(listener, "web.test", "/api/users").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("web-"), "host web.test goes to the web cluster, got {body}");

    let (status, body) = http2_get(listener, "web.test", "/page").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("web-") && body.contains("/page"), "got {body}");

    // As in Envoy, the port takes part in the match: `web.test:8080` is not
    // the domain `web.test`, so the `*` virtual host routes it.
    let (status, body) = http1_get(listener, "web.test:8080", "/api/users").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api /v1/users 0", "host web.test:8080 goes to the * virtual host");

    let (status, body) = http2_get(listener, "web.test:8080", "/api/items").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api /v1/items 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_three_endpoints() {
    let dir = temp_dir("round-robin");
    let web = [Upstream::start("web-1").await, Upstream::start("web-2").await, Upstream::start("web-3").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let config = two_cluster_config(&web.iter().map(|u| u.address).collect::<Vec<_>>(), api.address, "v1");
    assert!(control_plane.apply(&config).status.success());

    let proxy = Proxy::start(&ads_bootstrap("rr-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut client = KeepAlive::connect(listener).await;
    for _ in 0..30 {
        let (status, _) = client.get("web.test", "/").await.unwrap();
        assert_eq!(status, 200);
    }
    for upstream in &web {
        assert_eq!(upstream.hits(), 10, "each endpoint gets a third of the requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_reach_upstream() {
    let dir = temp_dir("headers");
    let web = [Upstream::start("web-1").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web[0].address], api.address, "v1")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("headers-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let request = hyper::Request::get("/")
        .header("host", "web.test")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-forwarded-for", "192.0.2.1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, _, headers) = http1_request(listener, request).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen-x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(headers["x-seen-x-forwarded-proto"], "http");
    assert_eq!(headers["x-seen-host"], "web.test");
    assert!(headers.contains_key("x-seen-x-request-id"));
    let traceparent = headers["x-seen-traceparent"].to_str().unwrap();
    assert!(traceparent.starts_with("00-") && traceparent.len() == 55, "a trace context is created: {traceparent}");
    assert!(!headers.contains_key("x-seen-x-hop"), "headers named in Connection are hop-by-hop");
    assert!(!headers.contains_key("x-seen-connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rewrite_sets_host_and_authority() {
    let dir = temp_dir("host-rewrite");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let routes = r#"              - match: { prefix: "/h1" }
                route: { cluster: web, host_rewrite_literal: web.internal }
              - match: { prefix: "/h2" }
                route: { cluster: api, host_rewrite_literal: "api.internal:9000" }
              - match: { prefix: "/weighted" }
                route: { host_rewrite_literal: route.internal, weighted_clusters: { clusters: [{ name: web, weight: 1, host_rewrite_literal: picked.internal }] } }
              - match: { prefix: "/" }
                route: { cluster: web }"#;
    let clusters = format!(
        "{}\n{}\n    http2_protocol_options: {{}}",
        static_cluster("web", web.address.port(), None),
        static_cluster("api", api.address.port(), None)
    );
    let proxy = Proxy::start(&static_bootstrap("", routes, &clusters), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let seen = |path: &'static str, header: &'static str| async move {
        let request = hyper::Request::get(path).header("host", "client.test").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        let (status, _, headers) = http1_request(listener, request).await.unwrap();
        assert_eq!(status, 200, "GET {path}");
        headers.get(header).map(|value| value.to_str().unwrap().to_string())
    };

    assert_eq!(seen("/h1", "x-seen-host").await.as_deref(), Some("web.internal"));
    assert_eq!(seen("/h2", "x-seen-authority").await.as_deref(), Some("api.internal:9000"));
    assert_eq!(seen("/weighted", "x-seen-host").await.as_deref(), Some("picked.internal"), "the cluster's rewrite wins");
    assert_eq!(seen("/other", "x-seen-host").await.as_deref(), Some("client.test"), "no rewrite keeps the host");
}

/// An upstream that answers every request as HTTP/1.0 and closes.
async fn http10_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nold-1").await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_with_http10_upstream() {
    let dir = temp_dir("http10");
    let upstream = http10_upstream().await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: old }";
    let proxy = Proxy::start(&static_bootstrap("", routes, &static_cluster("old", upstream.port(), None)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut client = KeepAlive::connect(listener).await;
    for _ in 0..3 {
        assert_eq!(client.get("a", "/").await.unwrap(), (200, "old-1".to_string()), "keep-alive survives an HTTP/1.0 upstream");
    }

    let request = hyper::Request::get("/")
        .header("host", "a")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, body, _) = http1_request(listener, request).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "old-1"), "an h2c upgrade offer is served as HTTP/1.1");
}
