//! The local rate limit filter: a bucket of 60 per minute, x-ratelimit
//! headers, gRPC statuses, per-route buckets and a bucket per header value.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::grpc::echo::EchoRequest;
use crate::support::grpc::{client, EchoUpstream};
use crate::support::*;

/// Builds the filter's `http_filters` entry, always enabled and enforced,
/// with `extra` YAML fields (indented by fourteen spaces).
fn rate_limit_filter(extra: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: edge
              filter_enabled: {{ default_value: {{ numerator: 100 }} }}
              filter_enforced: {{ default_value: {{ numerator: 100 }} }}
{extra}"#
    )
}

/// Starts a proxy with the filter and `routes`, all to the `backend` upstream.
async fn start(label: &str, filter_extra: &str, routes: &str) -> (Proxy, SocketAddr, Upstream) {
    let dir = temp_dir(label);
    let backend = Upstream::start("backend").await;
    let bootstrap = static_bootstrap("", routes, &static_cluster("backend", backend.address.port(), None));
    let proxy = Proxy::start(&with_filters(bootstrap, &rate_limit_filter(filter_extra)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener, backend)
}

fn get(path: &str, client: Option<&str>) -> hyper::Request<Full<Bytes>> {
    let mut request = hyper::Request::get(path).header("host", "a");
    if let Some(client) = client {
        request = request.header("x-client", client);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_per_minute_then_429() {
    let filter = r#"              token_bucket: { max_tokens: 60, tokens_per_fill: 60, fill_interval: 60s }
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              response_headers_to_add: [{ header: { key: x-limited-by, value: edge } }]"#;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let (proxy, listener, backend) = start("ratelimit-sixty", filter, routes).await;

    let (status, _, headers) = http1_request(listener, get("/x", None)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit"], "60", "passed responses carry the headers too");
    assert_eq!(headers["x-ratelimit-remaining"], "59");
    let mut connection = KeepAlive::connect(listener).await;
    for index in 1..60 {
        let (status, body) = connection.get("a", "/x").await.unwrap();
        assert_eq!(status, 200, "request {} of 60: {body}", index + 1);
    }
    let (status, body, headers) = http1_request(listener, get("/x", None)).await.unwrap();
    assert_eq!(status, 429, "request 61: {body}");
    assert_eq!(body.trim(), "local_rate_limited");
    assert_eq!(headers["x-ratelimit-limit"], "60");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let reset: u64 = headers["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "reset in seconds: {reset}");
    assert_eq!(headers["x-limited-by"], "edge");
    assert_eq!(backend.hits(), 60);

    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_local_rate_limited_total{stat_prefix=\"edge\"}"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "legate_http_response_flags_total{flag=\"RL\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_bucket_is_separate() {
    let filter = "              token_bucket: { max_tokens: 3, tokens_per_fill: 3, fill_interval: 3600s }";
    let routes = r#"              - match: { prefix: "/own" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: own
                    token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s }
                    filter_enabled: { default_value: { numerator: 100 } }
                    filter_enforced: { default_value: { numerator: 100 } }
              - match: { prefix: "/free" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    let (proxy, listener, _backend) = start("ratelimit-route", filter, routes).await;

    assert_eq!(http1_get(listener, "a", "/own").await.unwrap().0, 200);
    assert_eq!(http1_get(listener, "a", "/own").await.unwrap().0, 429, "the route's bucket of 1 is empty");
    for index in 0..3 {
        assert_eq!(http1_get(listener, "a", "/other").await.unwrap().0, 200, "filter bucket request {}", index + 1);
    }
    assert_eq!(http1_get(listener, "a", "/other").await.unwrap().0, 429, "the filter's bucket of 3 is empty");
    for _ in 0..5 {
        assert_eq!(http1_get(listener, "a", "/free").await.unwrap().0, 200, "the filter is off on /free");
    }

    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_local_rate_limited_total{stat_prefix=\"own\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "legate_http_local_rate_limited_total{stat_prefix=\"edge\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_value_buckets_separate_clients() {
    let filter = r#"              token_bucket: { max_tokens: 100, tokens_per_fill: 100, fill_interval: 3600s }
              always_consume_default_token_bucket: false
              descriptors:
              - entries: [{ key: client, value: "" }]
                token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 3600s }"#;
    let routes = r#"              - match: { prefix: "/" }
                route:
                  cluster: backend
                  rate_limits: [{ actions: [{ request_headers: { header_name: x-client, descriptor_key: client } }] }]"#;
    let (_proxy, listener, _backend) = start("ratelimit-descriptor", filter, routes).await;

    for client in ["alice", "bob"] {
        for index in 0..2 {
            assert_eq!(http1_request(listener, get("/", Some(client))).await.unwrap().0, 200, "{client} request {}", index + 1);
        }
        assert_eq!(http1_request(listener, get("/", Some(client))).await.unwrap().0, 429, "{client}'s bucket is empty");
    }
    assert_eq!(http1_request(listener, get("/", None)).await.unwrap().0, 200, "no header: the default bucket applies");
}

/// Starts a proxy that limits gRPC calls to one, with the given
/// `rate_limited_as_resource_exhausted`, and returns the listener.
async fn grpc_proxy(label: &str, resource_exhausted: bool, upstream: &EchoUpstream) -> (Proxy, SocketAddr) {
    let dir = temp_dir(label);
    let filter = format!(
        "              token_bucket: {{ max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s }}\n              rate_limited_as_resource_exhausted: {resource_exhausted}"
    );
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: echo }";
    let cluster = format!("{}\n    http2_protocol_options: {{}}", static_cluster("echo", upstream.address.port(), None));
    let bootstrap = static_bootstrap("", routes, &cluster);
    let proxy = Proxy::start(&with_filters(bootstrap, &rate_limit_filter(&filter)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_get_configured_status() {
    let upstream = EchoUpstream::start("echo").await;
    for (resource_exhausted, expected) in [(true, tonic::Code::ResourceExhausted), (false, tonic::Code::Unavailable)] {
        let (_proxy, listener) = grpc_proxy("ratelimit-grpc", resource_exhausted, &upstream).await;
        let mut echo = client(listener).await;
        let request = || EchoRequest { message: "hi".to_string(), ..Default::default() };
        assert!(echo.unary(request()).await.is_ok(), "the first call has a token");
        let status = echo.unary(request()).await.expect_err("the second call is over the limit");
        assert_eq!(status.code(), expected, "rate_limited_as_resource_exhausted: {resource_exhausted}: {status:?}");
    }
    assert_eq!(upstream.calls(), 2, "rejected calls never reach the upstream");
}
