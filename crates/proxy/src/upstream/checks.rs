//! Active health checks of one endpoint: HTTP GET, TCP connect with an
//! optional payload exchange, and gRPC `grpc.health.v1.Health/Check`. Each
//! check opens its own connection, apart from the request pools, and runs
//! every interval plus a random jitter until its cluster handle is dropped.

use std::sync::{Arc, Weak};

use bytes::{Buf, Bytes};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use legate_config::model::{HealthCheck, HealthCheckKind, UpstreamProtocol};

use super::{ClusterHandle, EndpointPool};
use crate::tls::UpstreamIo;

/// Most bytes a TCP check reads while looking for its `receive` blocks.
const TCP_READ_LIMIT: usize = 64 * 1024;

pub(super) async fn run(cluster: Weak<ClusterHandle>, index: usize, endpoint: Arc<EndpointPool>, check: HealthCheck) {
    loop {
        let jitter = check.interval_jitter.mul_f64(fastrand::f64());
        tokio::time::sleep(check.interval + jitter).await;

        let authority = match cluster.upgrade() {
            Some(cluster) => cluster.name().to_string(),
            None => return,
        };
        let passed = match tokio::time::timeout(check.timeout, probe(&check.kind, &endpoint, &authority)).await {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                debug!(upstream.addr = %endpoint.address(), check = index, reason, "health check failed");
                false
            }
            Err(_) => {
                debug!(upstream.addr = %endpoint.address(), check = index, "health check timed out");
                false
            }
        };
        let Some(cluster) = cluster.upgrade() else { return };
        cluster.record_check(&endpoint, passed, &check);
    }
}

async fn probe(kind: &HealthCheckKind, endpoint: &EndpointPool, cluster_name: &str) -> Result<(), String> {
    let stream = TcpStream::connect(endpoint.address()).await.map_err(|error| format!("connect failed: {error}"))?;
    // Checks go through the cluster's transport socket, as requests do,
    // offering in ALPN the HTTP version the check speaks.
    let protocol = match kind {
        HealthCheckKind::Grpc { .. } => UpstreamProtocol::Http2,
        HealthCheckKind::Tcp { .. } | HealthCheckKind::Http { .. } => UpstreamProtocol::Http1,
    };
    let stream = match &endpoint.settings().tls {
        Some(tls) => UpstreamIo::Tls(Box::new(
            tls.connect(endpoint.address(), stream, protocol).await.map_err(|error| format!("TLS handshake failed: {error}"))?,
        )),
        None => UpstreamIo::Plain(stream),
    };
    match kind {
        HealthCheckKind::Tcp { send, receive } => tcp(stream, send.as_deref(), receive).await,
        HealthCheckKind::Http { host, path, expected_statuses } => {
            http_get(stream, host.as_deref().unwrap_or(cluster_name), path, expected_statuses).await
        }
        HealthCheckKind::Grpc { service_name, authority } => {
            grpc(stream, authority.as_deref().unwrap_or(cluster_name), service_name).await
        }
    }
}

async fn tcp(mut stream: UpstreamIo, send: Option<&[u8]>, receive: &[Vec<u8>]) -> Result<(), String> {
    if let Some(send) = send {
        stream.write_all(send).await.map_err(|error| format!("send failed: {error}"))?;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !receive.iter().all(|block| contains(&answer, block)) {
        let read = stream.read(&mut buffer).await.map_err(|error| format!("read failed: {error}"))?;
        if read == 0 || answer.len() > TCP_READ_LIMIT {
            return Err("the answer lacks the expected payload".into());
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

async fn http_get(stream: UpstreamIo, host: &str, path: &str, expected: &[(u16, u16)]) -> Result<(), String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "legate-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    if expected.iter().any(|(start, end)| (*start..*end).contains(&status)) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// grpc.health.v1.HealthCheckRequest.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// grpc.health.v1.HealthCheckResponse; status 1 is SERVING.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

async fn grpc(stream: UpstreamIo, authority: &str, service: &str) -> Result<(), String> {
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);

    let message = HealthCheckRequest { service: service.to_string() }.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(Bytes::from(framed)))
        .map_err(|error| error.to_string())?;

    let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let header_status = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await.map_err(|error| error.to_string())?;
    let grpc_status = header_status.or_else(|| collected.trailers().and_then(|t| t.get("grpc-status").cloned()));
    if grpc_status.as_ref().is_some_and(|status| status != "0") {
        return Err(format!("grpc-status {:?}", grpc_status));
    }
    let mut body = collected.to_bytes();
    if body.len() < 5 {
        return Err("no health check response message".into());
    }
    body.advance(5);
    let answer = HealthCheckResponse::decode(body).map_err(|error| error.to_string())?;
    if answer.status == SERVING {
        Ok(())
    } else {
        Err(format!("serving status {}", answer.status))
    }
}
