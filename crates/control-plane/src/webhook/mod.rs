//! The sidecar injection webhook: a mutating admission webhook served over HTTPS.

pub mod inject;
pub mod review;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{rustls, TlsAcceptor};

pub use inject::{Injection, SidecarTemplate, SkipReason, SIDECAR_NAME};
pub use review::{review, ReviewError, Reviewed};
pub use tls::{server_config, TlsError};

/// Path the MutatingWebhookConfiguration in deploy/ points the API server at.
pub const INJECT_PATH: &str = "/inject";

/// Largest AdmissionReview body read. The API server limits objects to about
/// 1.5 MiB, and a review can carry the object twice.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Serves the injection webhook on `listener` until `shutdown` completes.
/// Connections that are open at that point are not waited for.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    template: SidecarTemplate,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let template = Arc::new(template);
    crate::accept::accept_until(listener, "webhook", shutdown, |stream, peer| {
        tokio::spawn(serve_connection(stream, peer, acceptor.clone(), template.clone()));
    })
    .await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, template: Arc<SidecarTemplate>) {
    let tls_stream = match acceptor.accept(stream).await {
        Ok(tls_stream) => tls_stream,
        Err(error) => {
            tracing::warn!(client.addr = %peer, %error, "webhook TLS handshake failed");
            return;
        }
    };
    let service = hyper::service::service_fn(move |request| handle(request, template.clone()));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls_stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(client.addr = %peer, %error, "webhook connection ended with an error");
    }
}

async fn handle(request: Request<Incoming>, template: Arc<SidecarTemplate>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if request.uri().path() != INJECT_PATH {
        return Ok(text(StatusCode::NOT_FOUND, format!("not found; the webhook serves POST {INJECT_PATH}\n")));
    }
    if request.method() != Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, format!("{INJECT_PATH} takes POST\n")));
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, limit = MAX_BODY_BYTES, "webhook failed to read an AdmissionReview");
            return Ok(text(StatusCode::BAD_REQUEST, format!("failed to read the request body: {error}\n")));
        }
    };
    Ok(answer(&body, &template))
}

fn answer(body: &[u8], template: &SidecarTemplate) -> Response<Full<Bytes>> {
    match review(body, template) {
        Ok(reviewed) => {
            log_decision(&reviewed);
            let json = serde_json::to_vec(&reviewed.response).expect("JSON values always serialize");
            Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json)))
                .expect("static headers are valid")
        }
        Err(error) => {
            let message = crate::error_chain(&error);
            tracing::warn!(error = %message, "webhook rejected an invalid AdmissionReview");
            text(StatusCode::BAD_REQUEST, format!("{message}\n"))
        }
    }
}

fn log_decision(reviewed: &Reviewed) {
    match &reviewed.injection {
        Some(Injection::Patched(_)) => tracing::info!(uid = %reviewed.uid, "sidecar injected"),
        Some(Injection::Skipped(reason)) => {
            tracing::info!(uid = %reviewed.uid, reason = reason.as_str(), "sidecar not injected")
        }
        None => tracing::debug!(uid = %reviewed.uid, "admitted an object that is not a new pod"),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
