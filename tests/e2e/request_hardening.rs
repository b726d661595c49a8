//! Request hardening: path normalization before routing, malformed HTTP/1.1
//! framing, header limits and slow request headers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Routes with a direct 403 reply on `/admin`, and everything else to the upstream.
const ROUTES: &str = r#"              - match: { prefix: /admin }
                direct_response: { status: 403, body: { inline_string: admin only } }
              - match: { prefix: / }
                route: { cluster: web }"#;

async fn start(hcm_extra: &str, label: &str) -> (Proxy, Upstream, SocketAddr) {
    let dir = temp_dir(label);
    let upstream = Upstream::start("web").await;
    let bootstrap = static_bootstrap(hcm_extra, ROUTES, &static_cluster("web", upstream.address.port(), None));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, upstream, listener)
}

/// Sends `bytes` and reads until the proxy closes the connection; `None`
/// when it is still open after 5 seconds.
async fn until_closed(address: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_path_meets_its_route() {
    let (_proxy, upstream, listener) = start("          merge_slashes: true", "normalize").await;

    for path in ["/admin", "//admin", "/./admin", "/%2e/admin", "/public/../admin", "/%2E%2e/admin", "/x/.%2e//admin/", "/%61dmin"] {
        let answer = raw_exchange(listener, &get(path)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{path} dodged the /admin route: {answer}");
        assert!(answer.ends_with("admin only"), "{path}: {answer}");
    }
    assert_eq!(upstream.hits(), 0, "no spelling of /admin reached the upstream");

    let answer = raw_exchange(listener, &get("/a/./b//c/../d?q=%2e%2e")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("web /a/b/d 0"), "the upstream gets the normalized path: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_normalization_merges_slashes() {
    let (_proxy, upstream, listener) = start("", "normalize-default").await;
    for path in ["//admin", "/.//admin", "/\\admin", "/%2e/admin"] {
        let answer = raw_exchange(listener, &get(path)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{path} dodged the /admin route: {answer}");
    }
    assert_eq!(upstream.hits(), 0);

    let (_proxy, upstream, listener) = start("          normalize_path: true", "normalize-explicit").await;
    let answer = raw_exchange(listener, &get("/a//b")).await;
    assert!(answer.contains("web /a//b 0"), "an explicit normalize_path leaves merging to merge_slashes: {answer}");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_follow_the_configured_action() {
    let (_proxy, upstream, listener) = start("          path_with_escaped_slashes_action: REJECT_REQUEST", "slashes-reject").await;
    let answer = raw_exchange(listener, &get("/public%2F..%2Fadmin")).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(upstream.hits(), 0);

    let (_proxy, _upstream, listener) = start("          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", "slashes-redirect").await;
    let answer = raw_exchange(listener, &get("/docs%2Fintro?x=1")).await;
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("location: /docs/intro?x=1"), "{answer}");

    let (_proxy, _upstream, listener) = start("          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "slashes-forward").await;
    let answer = raw_exchange(listener, &get("/public%2F..%2Fadmin")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "unescaped, then normalized to /admin: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_a_closed_connection() {
    let (_proxy, upstream, listener) = start("", "malformed").await;
    let cases: [(&str, &[u8]); 5] = [
        ("differing Content-Length values", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n"),
        ("bare CR in a header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n"),
        ("space in a header name", b"GET / HTTP/1.1\r\nHost: t\r\nX A: a\r\n\r\n"),
        ("control byte in a header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n"),
    ];
    for (case, bytes) in cases {
        let answer = until_closed(listener, bytes).await.unwrap_or_else(|| panic!("{case}: the connection stayed open"));
        assert!(answer.starts_with("HTTP/1.1 400"), "{case}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{case}: one response only: {answer}");
    }
    assert_eq!(upstream.hits(), 0, "no malformed request reached the upstream");

    let bad_chunk = raw_exchange(listener, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
    assert!(bad_chunk.starts_with("HTTP/1.1 400"), "a malformed chunked body is the client's error: {bad_chunk}");

    let two_hosts = raw_exchange(listener, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /after-two-hosts HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "two Host headers: {two_hosts}");
    assert!(!two_hosts.contains("after-two-hosts"), "the connection closes after the 400: {two_hosts}");

    let answer = raw_exchange(listener, &get("/after")).await;
    assert!(answer.contains("web /after 0"), "the listener still serves: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_and_slow_headers() {
    let limits = "          max_request_headers_kb: 8\n          request_headers_timeout: 1s\n          common_http_protocol_options: { max_headers_count: 20 }";
    let (_proxy, upstream, listener) = start(limits, "limits").await;

    let many: String = (0..30).map(|index| format!("X-H{index}: v\r\n")).collect();
    let answer = raw_exchange(listener, format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "30 headers over HTTP/1.1: {answer}");

    let long_path = format!("/{}", "p".repeat(10 * 1024));
    let answer = raw_exchange(listener, &get(&long_path)).await;
    assert!(answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 414"), "a 10 KiB request line: {answer}");

    let large = "v".repeat(10 * 1024);
    let answer = raw_exchange(listener, format!("GET / HTTP/1.1\r\nHost: t\r\nX-Large: {large}\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "10 KiB of headers: {answer}");

    let client = Http2Client::connect(listener).await;
    let mut request = hyper::Request::get("http://t/h2").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    for index in 0..30 {
        let name = hyper::header::HeaderName::from_bytes(format!("x-h{index}").as_bytes()).unwrap();
        request.headers_mut().insert(name, hyper::header::HeaderValue::from_static("v"));
    }
    let response = client.send(request).await.expect("the proxy answers over HTTP/2");
    assert_eq!(response.status(), 431, "30 headers over HTTP/2");
    assert_eq!(upstream.hits(), 0);

    let started = tokio::time::Instant::now();
    let answer = until_closed(listener, b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ").await;
    assert!(answer.is_some(), "a request whose headers never end is closed");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after request_headers_timeout: {:?}", started.elapsed());

    let answer = raw_exchange(listener, &get("/fine")).await;
    assert!(answer.contains("web /fine 0"), "a request within the limits passes: {answer}");
}
