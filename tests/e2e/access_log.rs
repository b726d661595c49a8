//! Access logs: one line per request with Envoy's operators and flags, JSON
//! lines filtered by status, and no secret from headers or query strings.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_without_secrets() {
    let dir = temp_dir("access-log");
    let text_log = dir.join("access.log");
    let json_log = dir.join("errors.json");
    let backend = Upstream::start("backend").await;
    let hcm = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {text}
          - name: envoy.access_loggers.file
            filter: {{ status_code_filter: {{ comparison: {{ op: GE, value: {{ default_value: 400 }} }} }} }}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {json}
              log_format:
                json_format: {{ code: "%RESPONSE_CODE%", flags: "%RESPONSE_FLAGS%", path: "%REQ(:PATH)%", cluster: "%UPSTREAM_CLUSTER%", route: "%ROUTE_NAME%" }}"#,
        text = text_log.display(),
        json = json_log.display()
    );
    let routes = "              - name: to-backend\n                match: { prefix: \"/app\" }\n                route: { cluster: backend }";
    let proxy = Proxy::start(&static_bootstrap(&hcm, routes, &static_cluster("backend", backend.address.port(), None)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let first = hyper::Request::get("/app/ok").header("host", "a").body(Full::new(Bytes::new())).unwrap();
    let (status, _, headers) = http1_request(listener, first).await.unwrap();
    assert_eq!(status, 200);
    let request_id = headers.get("x-seen-x-request-id").expect("the proxy generates an x-request-id").to_str().unwrap().to_string();
    assert_eq!(http1_get(listener, "a", "/missing").await.unwrap().0, 404);
    let secret = hyper::Request::get("/app/login?token=s3cr3t-token&page=2")
        .header("host", "a")
        .header("authorization", "Bearer hunter2-credential")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(http1_request(listener, secret).await.unwrap().0, 200);

    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&text_log).map(|text| text.lines().count() == 3).unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&text_log).unwrap_or_default();
    assert!(written, "one line per request:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("\"GET /app/ok HTTP/1.1\" 200 - 0 "), "{}", lines[0]);
    assert!(lines[0].contains(&backend.address.to_string()), "upstream host logged: {}", lines[0]);
    assert!(lines[0].contains(&format!("\"{request_id}\"")), "the generated request id is logged: {}", lines[0]);
    assert!(lines[1].contains("\" 404 NR "), "no-route flag: {}", lines[1]);
    assert!(lines[2].contains("token=REDACTED&page=2"), "query secret redacted: {}", lines[2]);
    assert!(!text.contains("s3cr3t") && !text.contains("hunter2"), "secrets leaked:\n{text}");

    let json = eventually(Duration::from_secs(5), || async { std::fs::read_to_string(&json_log).map(|t| t.lines().count() == 1).unwrap_or(false) }).await;
    let json_text = std::fs::read_to_string(&json_log).unwrap_or_default();
    assert!(json, "only the 404 passes the status filter:\n{json_text}");
    let entry: serde_json::Value = serde_json::from_str(json_text.trim()).unwrap();
    assert_eq!(entry["code"], "404");
    assert_eq!(entry["flags"], "NR");
    assert_eq!(entry["path"], "/missing");
}

#[test]
fn unknown_operator_is_rejected() {
    let dir = temp_dir("access-log-invalid");
    let hcm = r#"          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: { text_format_source: { inline_string: "%NO_SUCH_OPERATOR%\n" } }"#;
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200 }";
    let path = dir.join("bootstrap.yaml");
    std::fs::write(&path, static_bootstrap(hcm, routes, &static_cluster("unused", 9, None))).unwrap();
    let output = legate(&["proxy", "--mode", "validate", "--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("%NO_SUCH_OPERATOR%"), "the error names the operator: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_before_response_is_logged() {
    use tokio::io::AsyncWriteExt;

    let dir = temp_dir("access-log-dc");
    let log = dir.join("access.log");
    let backend = Upstream::start("backend").await;
    let hcm = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}"#,
        log.display()
    );
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let proxy = Proxy::start(&static_bootstrap(&hcm, routes, &static_cluster("backend", backend.address.port(), None)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let mut client = tokio::net::TcpStream::connect(listener).await.unwrap();
    client.write_all(b"GET /slow/3000 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);

    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).map(|text| text.lines().count() == 1).unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(written, "one line for the abandoned request:\n{text}");
    assert!(text.contains("\"GET /slow/3000 HTTP/1.1\" 0 DC "), "code 0 and the DC flag: {text}");

    let metrics = proxy.scrape().await;
    let counted = sample(&metrics, "legate_http_response_flags_total{flag=\"DC\"}");
    assert_eq!(counted, Some(1.0), "the DC flag is counted:\n{metrics}");
    assert_eq!(http1_get(listener, "a", "/after").await.unwrap().0, 200, "the proxy keeps serving");
}
