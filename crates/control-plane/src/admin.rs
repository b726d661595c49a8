//! The control plane's admin port: plain HTTP serving `GET /metrics` in the
//! OpenMetrics text format Prometheus scrapes, and `GET /ready` for
//! readiness probes.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::ProxyRegistry;

const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, proxies: ProxyRegistry, shutdown: impl Future<Output = ()>) {
    crate::accept::accept_until(listener, "admin", shutdown, |stream, peer| {
        tokio::spawn(serve_connection(stream, peer, proxies.clone()));
    })
    .await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, proxies: ProxyRegistry) {
    let service = hyper::service::service_fn(move |request| {
        let response = handle(&request, &proxies);
        async move { Ok::<_, hyper::Error>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(client.addr = %peer, %error, "admin connection ended with an error");
    }
}

fn handle(request: &Request<Incoming>, proxies: &ProxyRegistry) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "the admin port takes GET\n".into(), "text/plain");
    }
    match request.uri().path() {
        "/metrics" => text(StatusCode::OK, proxies.stats().encode(), OPENMETRICS_TEXT),
        "/ready" => text(StatusCode::OK, "LIVE\n".into(), "text/plain"),
        _ => text(StatusCode::NOT_FOUND, "not found; the admin port serves /metrics and /ready\n".into(), "text/plain"),
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
