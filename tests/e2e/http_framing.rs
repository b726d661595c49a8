//! Requests with conflicting framing (Content-Length and Transfer-Encoding
//! together) never reach the upstream with both headers, and bytes after
//! them are never routed as a second request.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_not_smuggled() {
    let dir = temp_dir("framing");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("framing-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let smuggle = b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/admin HTTP/1.1\r\nHost: t\r\n\r\n";
    let answer = raw_exchange(listener, smuggle).await;
    assert!(!answer.contains("/v1/admin"), "the trailing request was routed: {answer}");
    let status_lines = answer.matches("HTTP/1.1 ").count();
    assert!(status_lines <= 1, "only one response on the connection: {answer}");
    if answer.starts_with("HTTP/1.1 200") {
        assert!(answer.contains("api /v1/a 0"), "forwarded as the chunked body: {answer}");
    } else {
        assert!(answer.starts_with("HTTP/1.1 400"), "rejected with 400: {answer}");
    }

    let mixed = b"POST /api/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
    let answer = raw_exchange(listener, mixed).await;
    if answer.starts_with("HTTP/1.1 200") {
        assert!(answer.contains("api /v1/b 4"), "the chunked body reaches the upstream whole: {answer}");
        assert!(!answer.to_ascii_lowercase().contains("x-seen-content-length"), "both framings upstream: {answer}");
    } else {
        assert!(answer.starts_with("HTTP/1.1 400"), "rejected with 400: {answer}");
    }
}
