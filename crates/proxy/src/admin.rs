//! The admin listener: readiness, config and metrics pages, and the
//! POST-only endpoints that change log levels, drain or stop the proxy.

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
    let admin = Arc::new(Admin { manager, lifecycle, info });
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    // Out of file descriptors and similar errors persist for
                    // a moment, so a pause keeps the loop from spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, admin.clone()));
                if let Err(error) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await {
                    debug!(client.addr = %remote, %error, "admin connection failed");
                }
            });
        }
    });
}

/// Facts about the process for `/server_info`, and its log levels for
/// `/logging`.
pub struct ServerInfo {
    pub version: &'static str,
    pub node_id: String,
    pub node_cluster: String,
    pub log_levels: Option<Arc<dyn LogLevels>>,
}

/// Run-time control of the process's log filter, which the binary owns.
pub trait LogLevels: Send + Sync {
    /// Returns the filter directives in force, such as
    /// `info,legate_proxy::upstream=debug`.
    fn directives(&self) -> String;

    /// Replaces the filter with `directives`, or explains why they are invalid.
    fn set_directives(&self, directives: &str) -> Result<(), String>;
}

struct Admin {
    manager: Arc<ConfigManager>,
    lifecycle: Arc<Lifecycle>,
    info: Arc<ServerInfo>,
}

const ENDPOINTS: &str = "GET: /ready /server_info /config_dump /listeners /clusters /stats/prometheus /logging\n\
POST: /logging?level=L /logging?paths=TARGET:L,... /healthcheck/fail /healthcheck/ok /drain_listeners?graceful /quitquitquit\n";

async fn respond(request: Request<Incoming>, admin: Arc<Admin>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = match (request.method(), path) {
        (&Method::GET, "/ready") => ready(&admin),
        (&Method::GET, "/server_info") => json(server_info(&admin)),
        (&Method::GET, "/config_dump") => json(config_dump(&admin.manager)),
        (&Method::GET, "/listeners") => json(listeners(&admin.manager)),
        (&Method::GET, "/clusters") => json(admin.manager.clusters_view()),
        (&Method::GET, "/stats/prometheus") => prometheus(&admin.manager),
        (&Method::GET, "/logging") if request.uri().query().is_none() => log_levels(&admin, None),
        (&Method::POST, "/logging") => log_levels(&admin, request.uri().query()),
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
            // As in Envoy, `?graceful` keeps the listeners accepting for a
            // while, and without it they stop at once.
            let graceful = request.uri().query().is_some_and(|query| query.split('&').any(|pair| pair == "graceful"));
            let grace = admin.manager.longest_drain_timeout();
            let window = if graceful { crate::accept_window(grace) } else { std::time::Duration::ZERO };
            admin.manager.drain_listeners(window, grace);
            text(StatusCode::OK, "OK\n".into())
        }
        (&Method::POST, "/quitquitquit") => {
            info!("admin asked to shut down");
            admin.lifecycle.request_shutdown();
            text(StatusCode::OK, "OK\n".into())
        }
        (_, "/logging" | "/healthcheck/fail" | "/healthcheck/ok" | "/drain_listeners" | "/quitquitquit") => {
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
                "kind": entry.kind(),
                "name": entry.name,
                "version_info": entry.version,
                "state": if entry.active { "active" } else { "warming" },
                "last_updated": entry.last_updated.map(rfc3339),
                "config": entry.raw.as_ref().map(|raw| redacted(legate_config::reflect::any_to_json(raw))),
            })
        })
        .collect();
    let rejected: Vec<serde_json::Value> = manager
        .rejected()
        .into_iter()
        .map(|((resource_type, name), entry)| {
            serde_json::json!({
                "type": resource_type.short_name(),
                "name": name,
                "version_info": entry.version,
                "error": entry.error,
                "rejected_at": rfc3339(entry.at),
            })
        })
        .collect();
    serde_json::json!({ "ready": manager.is_ready(), "resources": entries, "rejected": rejected })
}

/// Formats a time as RFC 3339 in UTC, as protobuf's JSON mapping writes
/// timestamps.
fn rfc3339(at: std::time::SystemTime) -> String {
    prost_types::Timestamp::from(at).to_string()
}

/// Replaces the inline data of private keys and generic secrets with
/// `[redacted]`, as Envoy's config dump does, wherever they appear (SDS
/// secrets, and TLS contexts in listeners and clusters). File names stay.
fn redacted(mut json: serde_json::Value) -> serde_json::Value {
    redact_sensitive(&mut json);
    json
}

fn redact_sensitive(json: &mut serde_json::Value) {
    use serde_json::Value;

    match json {
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                let sensitive = matches!(name.as_str(), "private_key" | "privateKey")
                    || (matches!(name.as_str(), "secret") && value.is_object());
                if sensitive {
                    redact_inline(value);
                } else {
                    redact_sensitive(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_sensitive),
        _ => {}
    }
}

/// Redacts the inline variants of one `DataSource`.
fn redact_inline(source: &mut serde_json::Value) {
    let serde_json::Value::Object(fields) = source else { return };
    for (name, value) in fields.iter_mut() {
        if matches!(name.as_str(), "inline_bytes" | "inlineBytes" | "inline_string" | "inlineString") {
            *value = serde_json::Value::String("[redacted]".to_string());
        }
    }
}

fn listeners(manager: &ConfigManager) -> serde_json::Value {
    let bound: Vec<serde_json::Value> = manager
        .bound_listeners()
        .into_iter()
        .map(|(name, address): (String, SocketAddr)| serde_json::json!({ "name": name, "address": address.to_string() }))
        .collect();
    serde_json::Value::Array(bound)
}

/// Shows the log filter, or with a query changes it as Envoy's `/logging`
/// does: `level=L` sets every target, `paths=a:L,b:L` or `a=L` one target
/// each. Targets are module paths such as `legate_proxy::upstream`.
fn log_levels(admin: &Admin, query: Option<&str>) -> Response<Full<Bytes>> {
    let Some(levels) = &admin.info.log_levels else {
        return text(StatusCode::NOT_FOUND, "this process has no adjustable log filter\n".into());
    };
    let Some(query) = query else {
        return text(StatusCode::OK, format!("{}\n", levels.directives()));
    };
    let directives = match changed_directives(&levels.directives(), query) {
        Ok(directives) => directives,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    if let Err(message) = levels.set_directives(&directives) {
        return text(StatusCode::BAD_REQUEST, format!("invalid log filter {directives:?}: {message}\n"));
    }
    info!(filter = %directives, "admin changed log levels");
    text(StatusCode::OK, format!("{directives}\n"))
}

/// Builds the filter that `query` requests, starting from `current`.
fn changed_directives(current: &str, query: &str) -> Result<String, String> {
    let mut directives = current.to_string();
    for (key, value) in form_urlencoded_pairs(query) {
        if key == "level" {
            directives = level_name(&value)?.to_string();
            continue;
        }
        let targets: Vec<(String, String)> = if key == "paths" {
            value
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.rsplit_once(':') {
                    Some((target, level)) => Ok((target.to_string(), level.to_string())),
                    None => Err(format!("invalid paths entry {pair:?}: expected TARGET:LEVEL")),
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![(key, value)]
        };
        for (target, level) in targets {
            directives = format!("{directives},{target}={}", level_name(&level)?);
        }
    }
    Ok(directives)
}

/// Maps Envoy's level names to tracing's.
fn level_name(level: &str) -> Result<&'static str, String> {
    match level {
        "trace" => Ok("trace"),
        "debug" => Ok("debug"),
        "info" => Ok("info"),
        "warning" | "warn" => Ok("warn"),
        "error" | "critical" => Ok("error"),
        "off" => Ok("off"),
        other => Err(format!("invalid log level {other:?}: expected trace, debug, info, warning, error, critical or off")),
    }
}

/// Splits a query string into decoded `key=value` pairs.
fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
            (decode(key), decode(value))
        })
        .collect()
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
