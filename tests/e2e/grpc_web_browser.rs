//! gRPC-Web from a real browser: headless Chromium loads a page from its own
//! origin, and the page calls the proxy with the grpc-web npm runtime in
//! text and binary mode, through CORS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::grpc::{grpc_bootstrap, EchoUpstream};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const MODES: [&str; 2] = ["grpcwebtext", "grpcweb"];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails the test with the install command when Chromium, Node.js or the
/// npm packages are missing.
fn check_prerequisites(dir: &Path) {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing; install it with: apt-get install -y chromium");
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|output| output.status.success()), "node is missing; install Node.js 18 or newer");
    for package in ["grpc-web", "playwright-core", "esbuild"] {
        let installed = dir.join("node_modules").join(package).join("package.json");
        assert!(installed.exists(), "{} is missing; run: (cd tests/browser && npm ci)", installed.display());
    }
}

fn checked(output: std::io::Result<Output>, program: &str) -> Output {
    let output = output.unwrap_or_else(|error| panic!("{program} could not start: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{program} failed ({}):\n{stderr}", output.status);
    output
}

/// Bundles page/echo_client.js with the grpc-web runtime into one script.
fn bundle_page(dir: &Path, out: &Path) -> Bytes {
    let script = out.join("echo_client.js");
    let output = Command::new(dir.join("node_modules/.bin/esbuild"))
        .arg(dir.join("page/echo_client.js"))
        .args(["--bundle", "--format=iife", "--log-level=warning"])
        .arg(format!("--outfile={}", script.display()))
        .output();
    checked(output, "esbuild");
    Bytes::from(std::fs::read(script).expect("esbuild wrote the bundle"))
}

/// Serves the test page and its script over HTTP/1.1 on a loopback port of
/// its own, so the page's origin differs from the proxy's.
async fn serve_page(html: Bytes, script: Bytes) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let (html, script) = (html.clone(), script.clone());
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = match request.uri().path() {
                    "/index.html" => (200, "text/html; charset=utf-8", html.clone()),
                    "/echo_client.js" => (200, "text/javascript; charset=utf-8", script.clone()),
                    _ => (404, "text/plain", Bytes::from_static(b"not found\n")),
                };
                let response = hyper::Response::builder().status(status).header("content-type", content_type).body(Full::new(body));
                async move { response }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Runs drive.mjs, which opens the page once per mode in Chromium, and
/// returns the page's results keyed by mode.
async fn drive_browser(dir: PathBuf, page: SocketAddr, proxy: SocketAddr, modes: &[&str]) -> Value {
    let mut command = Command::new("node");
    command
        .arg(dir.join("drive.mjs"))
        .arg(format!("http://{page}/index.html"))
        .arg(format!("http://{proxy}"))
        .args(modes)
        .current_dir(&dir);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap();
    let output = checked(output, "node drive.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("drive.mjs printed no JSON ({error}): {stdout}"))
}

fn check_unary(mode: &str, results: &Value) {
    let unary = &results["unary"];
    assert_eq!(unary["error"], Value::Null, "{mode}: the unary call succeeds: {unary}");
    assert_eq!(unary["response"]["message"], format!("hello {mode}"), "{mode}: {unary}");
    assert_eq!(unary["response"]["endpoint"], "echo-1", "{mode}: {unary}");
    assert_eq!(unary["status"]["code"], 0, "{mode}: grpc-status of the unary call: {unary}");
    assert_eq!(unary["headers"]["x-echo"], format!("from {mode}"), "{mode}: the exposed x-echo header: {unary}");
}

fn check_streams(mode: &str, results: &Value) {
    let stream = &results["stream"];
    assert_eq!(stream["error"], Value::Null, "{mode}: {stream}");
    let messages = stream["messages"].as_array().expect("messages is a list");
    let indexes: Vec<&Value> = messages.iter().map(|message| &message["index"]).collect();
    assert_eq!(indexes, [0, 1, 2], "{mode}: three streamed messages in order: {stream}");
    assert!(messages.iter().all(|message| message["message"] == "tick"), "{mode}: {stream}");
    assert_eq!(stream["status"]["code"], 0, "{mode}: grpc-status of the stream: {stream}");

    let failed = &results["streamThenError"];
    assert_eq!(failed["messages"].as_array().map(Vec::len), Some(2), "{mode}: messages before the error: {failed}");
    assert_eq!(failed["error"]["code"], 9, "{mode}: FAILED_PRECONDITION ends the stream: {failed}");
    assert_eq!(failed["error"]["message"], "stopped here", "{mode}: {failed}");
    assert_eq!(failed["status"]["code"], 9, "{mode}: grpc-status of the failed stream: {failed}");
}

fn check_errors(mode: &str, results: &Value) {
    let failure = &results["failure"];
    assert_eq!(failure["error"]["code"], 5, "{mode}: grpc-status NOT_FOUND from the upstream: {failure}");
    assert_eq!(failure["error"]["message"], "no such echo", "{mode}: grpc-message: {failure}");
    assert_eq!(failure["status"]["code"], 5, "{mode}: the status event: {failure}");

    let unavailable = &results["unavailable"];
    assert_eq!(unavailable["error"]["code"], 14, "{mode}: the proxy's UNAVAILABLE for a cluster without endpoints: {unavailable}");
    assert_eq!(unavailable["status"]["code"], 14, "{mode}: the status event: {unavailable}");
}

fn check_content_types(mode: &str, results: &Value) {
    let expected = if mode == "grpcwebtext" { "application/grpc-web-text" } else { "application/grpc-web+proto" };
    let types = results["contentTypes"].as_array().expect("contentTypes is a list");
    assert_eq!(types.len(), 5, "{mode}: five calls reached the network: {types:?}");
    assert!(types.iter().all(|value| value == expected), "{mode}: every call used {expected}: {types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_grpc_web_calls() {
    let dir = browser_dir();
    check_prerequisites(&dir);
    let work = temp_dir("grpc-web-browser");
    let script = bundle_page(&dir, &work);
    let html = Bytes::from(std::fs::read(dir.join("page/index.html")).unwrap());
    let page = serve_page(html.clone(), script.clone()).await;

    let upstream = EchoUpstream::start("echo-1").await;
    let proxy = Proxy::start(&grpc_bootstrap(&[upstream.address], &format!("http://{page}")), &work);
    proxy.wait_ready().await;
    let address = proxy.listener("grpc").await;
    assert_ne!(page.port(), address.port(), "the page and the proxy are different origins");

    let output = drive_browser(dir, page, address, &MODES).await;
    for mode in MODES {
        let results = &output[mode];
        assert_eq!(results["pageError"], Value::Null, "{mode}: the page failed: {results}");
        check_unary(mode, results);
        check_streams(mode, results);
        check_errors(mode, results);
        check_content_types(mode, results);
    }

    // The same page from an origin the CORS policy does not list: Chromium
    // stops every call at the preflight, so nothing reaches the upstream.
    let calls_before = upstream.calls();
    let other_page = serve_page(html, script).await;
    let output = drive_browser(browser_dir(), other_page, address, &["grpcwebtext"]).await;
    let unary = &output["grpcwebtext"]["unary"];
    assert_eq!(unary["response"], Value::Null, "a call from another origin fails: {unary}");
    assert_ne!(unary["error"]["code"], 0, "{unary}");
    assert_eq!(upstream.calls(), calls_before, "no call from another origin reached the upstream");
}
