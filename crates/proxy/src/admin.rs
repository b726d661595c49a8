//! The admin listener: `/ready`, `/config_dump` and `/listeners`.

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
use tracing::{debug, warn};

use crate::manager::ConfigManager;

/// Serves the admin endpoints on `socket` until the process ends.
pub fn spawn(socket: TcpListener, manager: Arc<ConfigManager>) {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    continue;
                }
            };
            let manager = manager.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, manager.clone()));
                if let Err(error) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await {
                    debug!(client.addr = %remote, %error, "admin connection failed");
                }
            });
        }
    });
}

async fn respond(request: Request<Incoming>, manager: Arc<ConfigManager>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()));
    }
    let response = match request.uri().path() {
        "/ready" if manager.is_ready() => text(StatusCode::OK, "LIVE\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into()),
        "/config_dump" => json(config_dump(&manager)),
        "/listeners" => json(listeners(&manager)),
        "/stats/prometheus" => prometheus(&manager),
        _ => text(StatusCode::NOT_FOUND, "admin endpoints: /ready, /config_dump, /listeners, /stats/prometheus\n".into()),
    };
    Ok(response)
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
