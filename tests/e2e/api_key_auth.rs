//! The API key authentication filter: 401 without a key, 403 for a key that
//! is not allowed, forwarding of the client name, per-route disabling for
//! plain requests and WebSocket upgrades, and CORS preflights answered
//! without a key.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::websocket::WsUpstream;
use crate::support::*;

const KEY: &str = "k3y-7f9c2e51a4";
const WRONG_KEY: &str = "wr0ng-55d1be08";

/// Builds the filter's `http_filters` entry: one credential, the key in
/// `header`, the client name forwarded in `x-client-id`.
fn api_key_filter(header: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.api_key_auth
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth
              credentials: [{{ key: {KEY}, client: alice }}]
              key_sources: [{{ header: {header} }}]
              forwarding: {{ header: x-client-id }}"#
    )
}

fn get(path: &str, key: Option<&str>) -> hyper::Request<Full<Bytes>> {
    let mut request = hyper::Request::get(path).header("host", "a");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_missing_wrong_and_right() {
    let dir = temp_dir("api-key-auth");
    let log = dir.join("access.log");
    let backend = Upstream::start("backend").await;
    let hcm = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%REQ(:PATH)% %REQ(X-API-KEY)% %RESPONSE_CODE%\n" }} }}"#,
        log.display()
    );
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let bootstrap = static_bootstrap(&hcm, routes, &static_cluster("backend", backend.address.port(), None));
    let proxy = Proxy::start(&with_filters(bootstrap, &api_key_filter("x-api-key")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (status, body, _) = http1_request(listener, get("/a", None)).await.unwrap();
    assert_eq!(status, 401, "no key: {body}");
    let (status, body, _) = http1_request(listener, get("/b", Some(WRONG_KEY))).await.unwrap();
    assert_eq!(status, 403, "wrong key: {body}");
    assert!(!body.contains(WRONG_KEY), "the reply body shows the key: {body}");
    assert_eq!(backend.hits(), 0, "rejected requests reach the upstream");

    let (status, body, headers) = http1_request(listener, get("/c", Some(KEY))).await.unwrap();
    assert_eq!(status, 200, "right key: {body}");
    assert_eq!(body, "backend /c 0");
    assert_eq!(headers.get("x-seen-x-client-id").map(|v| v.to_str().unwrap()), Some("alice"), "client id forwarded");
    assert_eq!(backend.hits(), 1);

    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).map(|text| text.lines().count() == 3).unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(written, "one access log line per request:\n{text}");
    assert!(text.contains("/a - 401\n"), "{text}");
    assert!(text.contains("/b REDACTED 403\n"), "{text}");
    assert!(text.contains("/c REDACTED 200\n"), "{text}");
    let metrics = proxy.scrape().await;
    for secret in [KEY, WRONG_KEY] {
        assert!(!metrics.contains(secret), "a key appears in the metrics");
        assert!(!text.contains(secret), "a key appears in the access log:\n{text}");
    }
}

/// A CORS preflight carries no credentials, so with the CORS filter listed
/// before the API key filter it is answered without a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_passes_without_key() {
    let dir = temp_dir("api-key-preflight");
    let backend = Upstream::start("backend").await;
    let routes = r#"              - match: { prefix: "/api" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_origin_string_match: [{ exact: "https://app.example" }]
                    allow_methods: "GET"
                    allow_headers: "apikey""#;
    let filters = format!(
        "\n          - name: envoy.filters.http.cors\n            typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }}{}",
        api_key_filter("apikey")
    );
    let bootstrap = static_bootstrap("", routes, &static_cluster("backend", backend.address.port(), None));
    let proxy = Proxy::start(&with_filters(bootstrap, &filters), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let preflight = hyper::Request::options("/api")
        .header("host", "a")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "apikey")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, headers) = http1_request(listener, preflight).await.unwrap();
    assert_eq!(status, 200, "preflight answered without a key");
    assert_eq!(headers.get("access-control-allow-origin").unwrap(), "https://app.example");
    assert_eq!(headers.get("access-control-allow-headers").unwrap(), "apikey");

    let real = |key: Option<&str>| {
        let mut request = hyper::Request::get("/api").header("host", "a").header("origin", "https://app.example");
        if let Some(key) = key {
            request = request.header("apikey", key);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let (status, _, headers) = http1_request(listener, real(None)).await.unwrap();
    assert_eq!(status, 401, "real request without a key");
    assert_eq!(headers.get("access-control-allow-origin").unwrap(), "https://app.example", "the browser can read the 401");
    assert_eq!(http1_request(listener, real(Some(WRONG_KEY))).await.unwrap().0, 403, "real request with a wrong key");
    assert_eq!(http1_request(listener, real(Some(KEY))).await.unwrap().0, 200, "real request with the key");
    assert_eq!(backend.hits(), 1, "only the accepted request reaches the upstream");
}

/// A WebSocket handshake is a GET under its route's policy: routes that turn
/// the filter off accept an upgrade without a key, the others reply 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_disable_covers_upgrades() {
    let dir = temp_dir("api-key-upgrades");
    let web = Upstream::start("web").await;
    let ws = WsUpstream::start("ws").await;
    let disabled = r#"
                typed_per_filter_config:
                  envoy.filters.http.api_key_auth:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true"#;
    let routes = format!(
        r#"              - match: {{ prefix: "/open" }}
                route: {{ cluster: web }}{disabled}
              - match: {{ prefix: "/ws-open" }}
                route: {{ cluster: ws, upgrade_configs: [{{ upgrade_type: websocket }}] }}{disabled}
              - match: {{ prefix: "/ws" }}
                route: {{ cluster: ws, upgrade_configs: [{{ upgrade_type: websocket }}] }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: web }}"#
    );
    let clusters = format!("{}\n{}", static_cluster("web", web.address.port(), None), static_cluster("ws", ws.address.port(), None));
    let proxy = Proxy::start(&with_filters(static_bootstrap("", &routes, &clusters), &api_key_filter("x-api-key")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (_, response) = tokio_tungstenite::connect_async(format!("ws://{listener}/ws-open")).await.expect("upgrade without a key");
    assert_eq!(response.status(), 101);
    assert_eq!(http1_request(listener, get("/open", None)).await.unwrap().0, 200, "plain request on a disabled route");

    let error = tokio_tungstenite::connect_async(format!("ws://{listener}/ws")).await.expect_err("upgrade needs a key");
    let tokio_tungstenite::tungstenite::Error::Http(response) = error else { panic!("unexpected error {error:?}") };
    assert_eq!(response.status(), 401, "upgrade without a key where the filter runs");
    assert_eq!(http1_request(listener, get("/", None)).await.unwrap().0, 401, "plain request without a key");

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{listener}/ws").into_client_request().unwrap();
    request.headers_mut().insert("x-api-key", KEY.parse().unwrap());
    let (_, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade with the key");
    assert_eq!(response.status(), 101);
    assert_eq!(ws.accepted(), 2, "the upstream sees only the accepted upgrades");
}
