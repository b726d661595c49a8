//! Helpers for the end-to-end tests: the real `legate` binary started as
//! separate processes, upstream servers and clients on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

pub mod etcd;
pub mod grpc;
pub mod library;
pub mod replicas;
pub mod scripted_ads;
pub mod tls;
pub mod websocket;

/// Path of the `legate` binary, built once per test process.
pub fn legate_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "legate", "--bin", "legate"])
            .current_dir(root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the legate binary failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    target.join("debug").join("legate")
}

/// Creates an empty folder under the system temp folder.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "legate-test-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Process {
        // Only warnings and errors from the processes under test, unless
        // RUST_LOG sets more.
        let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string());
        let mut child = Command::new(legate_bin())
            .args(args)
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("legate starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Process { child, lines }
    }

    /// Waits for a stdout line starting with `prefix` and returns the
    /// address at its end.
    pub fn address_after(&self, prefix: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
            if line.starts_with(prefix) {
                return line.rsplit(' ').next().unwrap().parse().expect("address at end of line");
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct ControlPlane {
    pub process: Process,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
}

impl ControlPlane {
    pub fn start(data_dir: &Path) -> ControlPlane {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    pub fn start_on(data_dir: &Path, listen: &str) -> ControlPlane {
        Self::start_with(data_dir, listen, &[])
    }

    /// Starts a control plane with `extra` command-line arguments.
    pub fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> ControlPlane {
        let mut args = vec!["control-plane", "--listen", listen, "--data-dir", data_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let process = Process::spawn(&args);
        let address = process.address_after("control plane listening on");
        ControlPlane { process, address, data_dir: data_dir.to_path_buf() }
    }

    /// Runs `legate apply` with `config` written to a file.
    pub fn apply(&self, config: &str) -> Output {
        let file = self.data_dir.with_extension(format!("apply-{}.yaml", fastid()));
        std::fs::write(&file, config).unwrap();
        legate(&["apply", "-f", file.to_str().unwrap(), "--server", &self.address.to_string()])
    }

    pub fn get(&self) -> Output {
        legate(&["get", "--server", &self.address.to_string()])
    }
}

fn fastid() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a `legate` subcommand to completion.
pub fn legate(args: &[&str]) -> Output {
    Command::new(legate_bin()).args(args).output().expect("legate runs")
}

/// Worker count for the proxies of the running test: 1, which runs the
/// current-thread runtime, or 2, which runs the multi-thread one. The test's
/// name picks it, so the suite covers both and a failure repeats.
fn workers_for_this_test() -> &'static str {
    let name = std::thread::current().name().unwrap_or_default().to_string();
    let hash = name.bytes().fold(0u32, |hash, byte| hash.wrapping_mul(31).wrapping_add(u32::from(byte)));
    if hash % 2 == 0 { "1" } else { "2" }
}

pub struct Proxy {
    pub process: Process,
    pub admin: SocketAddr,
}

impl Proxy {
    pub fn start(bootstrap: &str, dir: &Path) -> Proxy {
        Self::start_with(bootstrap, dir, &[])
    }

    /// Starts a proxy with `extra` command-line arguments.
    pub fn start_with(bootstrap: &str, dir: &Path, extra: &[&str]) -> Proxy {
        let path = dir.join(format!("bootstrap-{}.yaml", fastid()));
        std::fs::write(&path, bootstrap).unwrap();
        let mut args = vec!["proxy", "--concurrency", workers_for_this_test(), "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let process = Process::spawn(&args);
        let admin = process.address_after("admin listening on");
        Proxy { process, admin }
    }

    /// Waits until the admin endpoint reports ready.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http1_get(self.admin, "admin", "/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy not ready within 30 seconds");
    }

    /// Returns the admin `/stats/prometheus` page.
    pub async fn scrape(&self) -> String {
        let (status, body) = http1_get(self.admin, "admin", "/stats/prometheus").await.unwrap();
        assert_eq!(status, 200);
        body
    }

    /// Address a listener is bound to, from the admin `/listeners` page.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, body)) = http1_get(self.admin, "admin", "/listeners").await {
                let listeners: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(found) = listeners.as_array().unwrap().iter().find(|l| l["name"] == name) {
                    return found["address"].as_str().unwrap().parse().unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("listener {name} not bound within 30 seconds");
    }
}

/// Bootstrap of a proxy that takes listeners and clusters from the control
/// plane at `ads`.
pub fn ads_bootstrap(node_id: &str, ads: SocketAddr) -> String {
    replicas::ads_bootstrap_replicas(node_id, &[ads])
}

/// An HTTP/1.1 and HTTP/2 upstream that answers `<name> <path>` and counts
/// its requests. A path containing `/slow/<ms>` waits that long before answering.
pub struct Upstream {
    pub address: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        async move { Ok::<_, std::convert::Infallible>(answer(name, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { address, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn answer(name: &str, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let delay = path.split_once("/slow/").and_then(|(_, rest)| rest.split('/').next()?.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let headers = request.headers().clone();
    let authority = request.uri().authority().cloned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{name} {path} {}", body.len()))));
    for (header, value) in headers.iter() {
        if let Ok(name) = hyper::header::HeaderName::from_bytes(format!("x-seen-{header}").as_bytes()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    // HTTP/2 carries the host as `:authority`, which is not a header.
    if let Some(authority) = authority.and_then(|authority| hyper::header::HeaderValue::from_str(authority.as_str()).ok()) {
        response.headers_mut().insert("x-seen-authority", authority);
    }
    response
}

/// Writes raw bytes on a new connection and reads until the proxy closes it
/// (at most 3 seconds); returns what was read.
pub async fn raw_exchange(address: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends one GET over a new HTTP/1.1 connection; returns status and body.
pub async fn http1_get(address: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let response = http1_request(address, hyper::Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap()).await?;
    Ok((response.0, response.1))
}

pub async fn http1_request(address: SocketAddr, request: hyper::Request<Full<Bytes>>) -> Result<(u16, String, hyper::HeaderMap), String> {
    let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), headers))
}

/// Sends one GET over a new HTTP/2 prior-knowledge connection.
pub async fn http2_get(address: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let uri = format!("http://{host}{path}");
    let request = hyper::Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A keep-alive HTTP/1.1 client connection for many requests.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    pub async fn connect(address: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(address).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        KeepAlive { sender }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
        let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Retries `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Renders the two-cluster config of the routing tests: host `web.test` to cluster
/// `web` (EDS, three endpoints), `/api/` on any host to cluster `api`
/// (STATIC), and `/` elsewhere to `web`.
pub fn two_cluster_config(web: &[SocketAddr], api: SocketAddr, route_version_marker: &str) -> String {
    let web_endpoints: String = web
        .iter()
        .map(|a| format!("    - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n", a.port()))
        .collect();
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  type: EDS
  connect_timeout: 1s
  eds_cluster_config: {{ eds_config: {{ ads: {{}} }} }}
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: web
  endpoints:
  - lb_endpoints:
{web_endpoints}- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: api
  type: STATIC
  connect_timeout: 1s
  http2_protocol_options: {{}}
  load_assignment:
    cluster_name: api
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {api_port} }} }} }} }}] }}]
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: test
        rds: {{ route_config_name: routes, config_source: {{ ads: {{}} }} }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: routes
  virtual_hosts:
  - name: web
    domains: ["web.test"]
    routes:
    - match: {{ prefix: "/" }}
      route: {{ cluster: web }}
  - name: default
    domains: ["*"]
    routes:
    - match: {{ prefix: "/api/" }}
      route: {{ cluster: api, prefix_rewrite: "/{route_version_marker}/" }}
    - match: {{ prefix: "/" }}
      route: {{ cluster: web }}
"#,
        api_port = api.port()
    )
}

/// One HTTP/2 prior-knowledge connection shared by many streams.
#[derive(Clone)]
pub struct Http2Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl Http2Client {
    pub async fn connect(address: SocketAddr) -> Http2Client {
        let stream = TcpStream::connect(address).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Http2Client { sender }
    }

    pub async fn get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        let request = hyper::Request::get(format!("http://{host}{path}")).body(Full::new(Bytes::new())).unwrap();
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        self.sender.clone().send_request(request).await.map_err(|e| e.to_string())
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Renders a static bootstrap with one listener `http` on a free loopback port. The
/// connection manager gets the `hcm_extra` YAML lines (indented by ten
/// spaces), its one virtual host gets `routes` (items indented by fourteen),
/// and `clusters` (items indented by two) are the static clusters.
pub fn static_bootstrap(hcm_extra: &str, routes: &str, clusters: &str) -> String {
    format!(
        r#"
node: {{ id: static }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
{hcm_extra}
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters: [{{ name: envoy.filters.http.router }}]
  clusters:
{clusters}
"#
    )
}

/// Replaces the router-only filter list of `static_bootstrap` with `filters`
/// (YAML list items, each starting on a new line indented by ten spaces)
/// followed by the router.
pub fn with_filters(bootstrap: String, filters: &str) -> String {
    let list = format!("          http_filters:{filters}\n          - name: envoy.filters.http.router");
    bootstrap.replace("          http_filters: [{ name: envoy.filters.http.router }]", &list)
}

/// Renders a STATIC cluster item for `static_bootstrap`, with one endpoint on
/// loopback and optional `health_status`.
pub fn static_cluster(name: &str, port: u16, health_status: Option<&str>) -> String {
    let health = health_status.map(|status| format!("health_status: {status}, ")).unwrap_or_default();
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ {health}endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]"
    )
}

/// Finds the value of the sample whose name and labels are exactly `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Renders a listener on an address the proxies cannot bind, so they NACK it.
pub fn unbindable_listener(taken: SocketAddr) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: taken
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: taken
        rds: {{ route_config_name: routes, config_source: {{ ads: {{}} }} }}
        http_filters: [{{ name: envoy.filters.http.router }}]
"#,
        taken.port()
    )
}
