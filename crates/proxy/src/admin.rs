//! The admin listener: readiness, config and metrics pages, and the
//! POST-only endpoints that drain or stop the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::lifecycle::Lifecycle;
use crate::manager::ConfigManager;

/// Serves the admin endpoints on `socket` until the process ends.
pub fn spawn(socket: TcpListener, manager: Arc<ConfigManager>, lifecycle: Arc<Lifecycle>, info: Arc<ServerInfo>) {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    continue;
                }
            };
            let admin = Admin { manager: manager.clone(), lifecycle: lifecycle.clone(), info: info.clone() };
            let admin = Arc::new(admin);
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, admin.clone()));
                if let Err(error) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await {
                    debug!(client.addr = %remote, %error, "admin connection failed");
                }
            });
        }
    });
}

/// Facts about the process for `/server_info`.
pub struct ServerInfo {
    pub version: &'static str,
    pub node_id: String,
    pub node_cluster: String,
}

struct Admin {
    manager: Arc<ConfigManager>,
    lifecycle: Arc<Lifecycle>,
    info: Arc<ServerInfo>,
}

const ENDPOINTS: &str = "GET: /ready /server_info /config_dump /listeners /clusters /stats/prometheus\n\
POST: /healthcheck/fail /healthcheck/ok /drain_listeners?graceful /quitquitquit\n";

async fn respond(request: Request<Incoming>, admin: Arc<Admin>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = match (request.method(), path) {
        (&Method::GET, "/ready") => ready(&admin),
        (&Method::GET, "/server_info") => json(server_info(&admin)),
        (&Method::GET, "/config_dump") => json(config_dump(&admin.manager)),
        (&Method::GET, "/listeners") => json(listeners(&admin.manager)),
        (&Method::GET, "/clusters") => json(admin.manager.clusters_view()),
        (&Method::GET, "/stats/prometheus") => prometheus(&admin.manager),
        (&Method::POST, "/healthcheck/fail") => {
            admin.lifecycle.set_health_failed(true);
            text(StatusCode::OK, "OK\n".into())
        }
        (&Method::POST, "/healthcheck/ok") => {
            admin.lifecycle.set_health_failed(false);
            text(StatusCode::OK, "OK\n".into())
        }
        (&Method::POST, "/drain_listeners") => {
            info!("admin asked to drain listeners");
            admin.lifecycle.set_draining();
            admin.manager.drain_listeners();
            text(StatusCode::OK, "OK\n".into())
        }
        (&Method::POST, "/quitquitquit") => {
            info!("admin asked to shut down");
            admin.lifecycle.request_shutdown();
            text(StatusCode::OK, "OK\n".into())
        }
        (_, "/healthcheck/fail" | "/healthcheck/ok" | "/drain_listeners" | "/quitquitquit") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into())
        }
        (&Method::GET, _) => text(StatusCode::NOT_FOUND, ENDPOINTS.into()),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, ENDPOINTS.into()),
    };
    Ok(response)
}

/// 200 once the first config is warm, 503 before, while draining, and after
/// `/healthcheck/fail`.
fn ready(admin: &Admin) -> Response<Full<Bytes>> {
    let state = state(admin);
    let code = if state == "LIVE" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    text(code, format!("{state}\n"))
}

fn state(admin: &Admin) -> &'static str {
    if admin.lifecycle.is_draining() {
        "DRAINING"
    } else if admin.lifecycle.is_health_failed() {
        "HEALTH_CHECK_FAILED"
    } else if admin.manager.is_ready() {
        "LIVE"
    } else {
        "PRE_INITIALIZING"
    }
}

fn server_info(admin: &Admin) -> serde_json::Value {
    serde_json::json!({
        "version": admin.info.version,
        "state": state(admin),
        "uptime_seconds": admin.lifecycle.uptime_seconds(),
        "node": { "id": admin.info.node_id, "cluster": admin.info.node_cluster },
    })
}

fn config_dump(manager: &ConfigManager) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = manager
        .config_dump()
        .into_iter()
        .map(|entry| {
            serde_json::json!({
                "kind": entry.kind,
                "name": entry.name,
                "version_info": entry.version,
                "state": if entry.active { "active" } else { "warming" },
                "config": entry.raw.as_ref().map(legate_config::reflect::any_to_json),
            })
        })
        .collect();
    serde_json::json!({ "ready": manager.is_ready(), "resources": entries })
}

fn listeners(manager: &ConfigManager) -> serde_json::Value {
    let bound: Vec<serde_json::Value> = manager
        .bound_listeners()
        .into_iter()
        .map(|(name, address): (String, SocketAddr)| serde_json::json!({ "name": name, "address": address.to_string() }))
        .collect();
    serde_json::Value::Array(bound)
}

fn prometheus(manager: &ConfigManager) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(manager.stats().encode())));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
