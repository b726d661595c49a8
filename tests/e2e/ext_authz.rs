//! The external authorization filter with a real HTTP authorization service
//! (hyper) and a real gRPC one (tonic). Covered: WebSocket handshakes
//! authorized by a query token, denials passed to the client, failing
//! closed or open when the service is down, and per-route disabling.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response as WsResponse};

use legate_api::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use legate_api::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use legate_api::envoy::service::auth::v3::check_response::HttpResponse;
use legate_api::envoy::service::auth::v3::{CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse};
use legate_api::envoy::r#type::v3::HttpStatus;

use crate::support::*;

/// An HTTP authorization service: `token=good` in the query string gets 200
/// with `x-user-id: alice`, `token=bad` gets 401 with a body, anything else
/// 403. With `token=slow` it waits 3 seconds first. It records the paths it
/// was asked about.
struct HttpAuthService {
    address: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
}

impl HttpAuthService {
    async fn start() -> HttpAuthService {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        seen.lock().unwrap().push(path.clone());
                        async move {
                            if path.contains("token=slow") {
                                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                            }
                            Ok::<_, std::convert::Infallible>(decide(&path))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        HttpAuthService { address, paths }
    }
}

fn decide(path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, body) = if path.contains("token=good") {
        (200, "")
    } else if path.contains("token=bad") {
        (401, "bad token\n")
    } else {
        (403, "no token\n")
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    if status == 200 {
        response.headers_mut().insert("x-user-id", "alice".parse().unwrap());
    } else {
        response.headers_mut().insert("www-authenticate", "Token".parse().unwrap());
    }
    response
}

/// A WebSocket upstream that sends the `x-user-id` header of each handshake
/// it accepts as its first message, and counts its connections.
struct UserEchoUpstream {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl UserEchoUpstream {
    async fn start() -> UserEchoUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut user = String::new();
                    let callback = |request: &WsRequest, response: WsResponse| {
                        user = request.headers().get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                        Ok(response)
                    };
                    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                    use futures_util::SinkExt;
                    let _ = socket.send(tokio_tungstenite::tungstenite::Message::text(format!("user {user}"))).await;
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                });
            }
        });
        UserEchoUpstream { address, connections }
    }
}

/// Builds the filter's `http_filters` entry for an HTTP service on the `auth` cluster.
fn http_filter(extra: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: {{ uri: "http://auth", cluster: auth, timeout: 2s }}
                path_prefix: /check
                authorization_response:
                  allowed_upstream_headers: {{ patterns: [{{ exact: x-user-id }}] }}{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_token_in_query() {
    let dir = temp_dir("ext-authz-ws");
    let auth = HttpAuthService::start().await;
    let upstream = UserEchoUpstream::start().await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: ws }";
    let clusters = format!("{}\n{}", static_cluster("ws", upstream.address.port(), None), static_cluster("auth", auth.address.port(), None));
    let bootstrap = static_bootstrap("          upgrade_configs: [{ upgrade_type: websocket }]", routes, &clusters);
    let proxy = Proxy::start(&with_filters(bootstrap, &http_filter("")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{listener}/chat?token=good")).await.expect("authorized upgrade");
    assert_eq!(response.status(), 101);
    let first = socket.next().await.expect("a message").expect("a frame");
    assert_eq!(first.to_text().unwrap(), "user alice", "the upstream sees the user the service named");
    assert!(auth.paths.lock().unwrap().contains(&"/check/chat?token=good".to_string()), "the service sees the path with its query");

    let error = tokio_tungstenite::connect_async(format!("ws://{listener}/chat?token=bad")).await.expect_err("denied upgrade");
    let tokio_tungstenite::tungstenite::Error::Http(response) = error else { panic!("unexpected error {error:?}") };
    assert_eq!(response.status(), 401, "the service's status reaches the client");
    assert_eq!(response.body().as_deref(), Some(&b"bad token\n"[..]), "the service's body reaches the client");
    assert_eq!(response.headers()["www-authenticate"], "Token");
    assert_eq!(upstream.connections.load(Ordering::Relaxed), 1, "the denied upgrade never reaches the upstream");

    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_response_flags_total{flag=\"UAEX\"}"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "legate_http_ext_authz_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "legate_http_ext_authz_total{result=\"denied\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_fails_closed_or_open() {
    let closed_port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let backend = Upstream::start("backend").await;
    let routes = r#"              - match: { prefix: "/public" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    let clusters = format!("{}\n{}", static_cluster("backend", backend.address.port(), None), static_cluster("auth", closed_port, None));

    let dir = temp_dir("ext-authz-down");
    let proxy = Proxy::start(&with_filters(static_bootstrap("", routes, &clusters), &http_filter("")), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    let (status, body) = http1_get(listener, "a", "/x?token=good").await.unwrap();
    assert_eq!(status, 403, "the service is down, so the filter fails closed: {body}");
    assert_eq!(http1_get(listener, "a", "/public").await.unwrap().0, 200, "the filter is off on /public");
    assert_eq!(backend.hits(), 1);
    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_response_flags_total{flag=\"UAEX\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "legate_http_ext_authz_total{result=\"error\"}"), Some(1.0));

    let open = http_filter("\n              failure_mode_allow: true");
    let proxy = Proxy::start(&with_filters(static_bootstrap("", routes, &clusters), &open), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    assert_eq!(http1_get(listener, "a", "/x").await.unwrap().0, 200, "failure_mode_allow passes the request");
    assert_eq!(backend.hits(), 2);
    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_ext_authz_total{result=\"failure_mode_allowed\"}"), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_service_times_out() {
    let dir = temp_dir("ext-authz-slow");
    let auth = HttpAuthService::start().await;
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let clusters = format!("{}\n{}", static_cluster("backend", backend.address.port(), None), static_cluster("auth", auth.address.port(), None));
    let filter = http_filter("").replace("timeout: 2s", "timeout: 0.2s");
    let proxy = Proxy::start(&with_filters(static_bootstrap("", routes, &clusters), &filter), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let started = std::time::Instant::now();
    let (status, body) = http1_get(listener, "a", "/x?token=slow").await.unwrap();
    assert_eq!(status, 403, "a service slower than the timeout fails closed: {body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "the reply waited {:?}", started.elapsed());
    assert_eq!(backend.hits(), 0);
}

/// A gRPC authorization service that allows requests with `x-auth: allow`,
/// telling the upstream `x-user-id: bob`, and denies the others with 403.
/// It records each request's method, host, path and header names.
#[derive(Clone, Default)]
struct GrpcAuthService {
    paths: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Authorization for GrpcAuthService {
    async fn check(&self, request: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request.into_inner().attributes.and_then(|a| a.request).and_then(|r| r.http).unwrap_or_default();
        let mut names: Vec<&str> = http.headers.keys().map(String::as_str).collect();
        names.sort();
        self.paths.lock().unwrap().push(format!("{} {} {} {names:?}", http.method, http.host, http.path));
        let header = |key: &str, value: &str| HeaderValueOption { header: Some(HeaderValue { key: key.into(), value: value.into() }) };
        let response = if http.headers.get("x-auth").map(String::as_str) == Some("allow") {
            CheckResponse {
                status: Some(Default::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse { headers: vec![header("x-user-id", "bob")], headers_to_remove: vec!["x-auth".into()] })),
            }
        } else {
            CheckResponse {
                status: Some(legate_api::google::rpc::Status { code: 7, ..Default::default() }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 403 }),
                    headers: vec![header("x-denied-by", "grpc")],
                    body: "denied by the gRPC service\n".into(),
                })),
            }
        };
        Ok(tonic::Response::new(response))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_service_allows_by_header() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_address = socket.local_addr().unwrap();
    let service = GrpcAuthService::default();
    let server = AuthorizationServer::new(service.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(socket))
            .await
            .unwrap();
    });
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let clusters = format!(
        "{}\n{}\n    http2_protocol_options: {{}}",
        static_cluster("backend", backend.address.port(), None),
        static_cluster("grpc-auth", auth_address.port(), None)
    );
    let filter = r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: { envoy_grpc: { cluster_name: grpc-auth }, timeout: 2s }
              allowed_headers: { patterns: [{ exact: x-auth }] }"#;
    let dir = temp_dir("ext-authz-grpc");
    let proxy = Proxy::start(&with_filters(static_bootstrap("", routes, &clusters), filter), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let request = |auth: &str| {
        hyper::Request::get("/items?page=2").header("host", "shop").header("x-auth", auth).body(Full::new(Bytes::new())).unwrap()
    };
    let (status, body, headers) = http1_request(listener, request("allow")).await.unwrap();
    assert_eq!(status, 200, "allowed: {body}");
    assert_eq!(headers["x-seen-x-user-id"], "bob", "the service's header reaches the upstream");
    assert!(!headers.contains_key("x-seen-x-auth"), "headers_to_remove applies");
    assert_eq!(service.paths.lock().unwrap()[0], "GET shop /items?page=2 [\"x-auth\"]", "method, host, path with query, allowed headers");

    let (status, body, headers) = http1_request(listener, request("deny")).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(body, "denied by the gRPC service\n");
    assert_eq!(headers["x-denied-by"], "grpc");
    assert_eq!(backend.hits(), 1, "the denied request never reaches the upstream");
}
