//! The HTTP connection manager: routes each downstream request and forwards
//! it to an upstream endpoint, or replies locally.

pub mod body;
mod forward;
mod headers;
mod local_reply;
mod pipe;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::debug;

use legate_config::model::RouteAction;

use crate::router::host_without_port;
use crate::snapshot::SnapshotStore;
use body::ResponseBody;
pub use local_reply::local_reply;

/// State shared by every request on one downstream connection.
pub struct ConnectionContext {
    pub listener: Arc<str>,
    pub remote: SocketAddr,
    pub store: SnapshotStore,
    /// Changes when the listener drains; upgraded pipes watch it.
    pub drained: tokio::sync::watch::Receiver<bool>,
    pub drain_timeout: std::time::Duration,
    pub open: crate::listener::OpenConnection,
}

/// Handles one downstream request. The snapshot loaded here is the one the
/// request uses to its end, whatever config changes meanwhile.
pub async fn handle(request: Request<Incoming>, connection: Arc<ConnectionContext>) -> Result<Response<ResponseBody>, Infallible> {
    let snapshot = connection.store.load_full();
    let Some(listener) = snapshot.listeners.get(&connection.listener) else {
        return Ok(local_reply(StatusCode::SERVICE_UNAVAILABLE, "listener is draining"));
    };

    let (parts, body) = request.into_parts();
    let host = headers::parts_host(&parts).map(host_without_port).unwrap_or("");
    let Some(route) = listener.routes.route(host, &parts) else {
        debug!(host, path = parts.uri.path(), "no route matched");
        return Ok(local_reply(StatusCode::NOT_FOUND, "no route matched"));
    };

    let response = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            Response::builder().status(status).body(ResponseBody::local(bytes::Bytes::copy_from_slice(body))).unwrap_or_else(|_| {
                local_reply(StatusCode::INTERNAL_SERVER_ERROR, "invalid direct response")
            })
        }
        RouteAction::Forward(action) => {
            let request = Request::from_parts(parts, body);
            forward::forward(request, action, route, &listener.http, &snapshot, &connection).await
        }
    };
    Ok(response)
}
