//! A gRPC client over HTTP/2 with prior knowledge (hyper), for readiness
//! checks through each proxy and for the server-streaming load of scenario 5.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::grpc_wire::{self, STREAM_PATH, UNARY_PATH};

/// Maximum time one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The three ways scenario 6 sends the same unary call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Form {
    Grpc,
    GrpcWeb,
    GrpcWebText,
}

impl Form {
    pub const ALL: [Form; 3] = [Form::Grpc, Form::GrpcWeb, Form::GrpcWebText];

    pub fn name(self) -> &'static str {
        match self {
            Form::Grpc => "native gRPC",
            Form::GrpcWeb => "grpc-web binary",
            Form::GrpcWebText => "grpc-web text",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Form::Grpc => grpc_wire::GRPC,
            Form::GrpcWeb => grpc_wire::GRPC_WEB,
            Form::GrpcWebText => grpc_wire::GRPC_WEB_TEXT,
        }
    }

    /// Request headers beside `content-type`, as `name: value` for h2load's `-H`.
    pub fn extra_headers(self) -> &'static [&'static str] {
        match self {
            Form::Grpc => &["te: trailers"],
            Form::GrpcWeb | Form::GrpcWebText => &["x-grpc-web: 1"],
        }
    }

    /// Encodes the request body: one framed message of `message_bytes`, in base64 for text.
    pub fn body(self, message_bytes: usize) -> Vec<u8> {
        let framed = grpc_wire::frame(&grpc_wire::bytes_message(message_bytes));
        match self {
            Form::Grpc | Form::GrpcWeb => framed,
            Form::GrpcWebText => grpc_wire::web_text(&framed),
        }
    }
}

/// Result of one call.
struct CallResult {
    data_bytes: usize,
    /// `grpc-status` from the trailers (gRPC) or the trailer frame (gRPC-Web).
    status: Option<String>,
}

async fn connect(port: u16) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("failed to connect to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(sender: &mut SendRequest<Full<Bytes>>, port: u16, path: &str, form: Form, body: Bytes) -> anyhow::Result<CallResult> {
    let mut request = Request::post(format!("http://127.0.0.1:{port}{path}")).body(Full::new(body))?;
    request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(form.content_type()));
    for header in form.extra_headers() {
        let (name, value) = header.split_once(": ").expect("headers are written as `name: value`");
        request.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    if response.status() != 200 {
        anyhow::bail!("{path} returned HTTP status {}, expected 200", response.status());
    }
    let header_status = response.headers().get("grpc-status").and_then(|value| value.to_str().ok()).map(str::to_string);
    let collected = response.into_body().collect().await?;
    let trailer_status = collected.trailers().and_then(|trailers| trailers.get("grpc-status")).and_then(|value| value.to_str().ok()).map(str::to_string);
    let body = collected.to_bytes();
    let status = match form {
        Form::Grpc => trailer_status.or(header_status),
        Form::GrpcWeb => grpc_wire::web_trailer_status(&body),
        Form::GrpcWebText => grpc_wire::web_trailer_status(&grpc_wire::decode_web_text(&body)?),
    };
    Ok(CallResult { data_bytes: body.len(), status })
}

/// Sends one unary call of `form` to 127.0.0.1:`port` and checks that it
/// ends with HTTP 200 and `grpc-status: 0`.
pub fn check_unary(port: u16, form: Form, message_bytes: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut sender = connect(port).await?;
        let body = Bytes::from(form.body(message_bytes));
        let result = tokio::time::timeout(CALL_TIMEOUT, call(&mut sender, port, UNARY_PATH, form, body))
            .await
            .with_context(|| format!("{} call timed out", form.name()))??;
        match result.status.as_deref() {
            Some("0") if result.data_bytes > 0 => Ok(()),
            status => anyhow::bail!("{} call returned grpc-status {status:?} and {} body bytes, expected 0 and a message", form.name(), result.data_bytes),
        }
    })
}

/// Totals of a server-streaming run.
#[derive(Debug, Clone, Default)]
pub struct StreamLoad {
    pub calls: u64,
    pub messages: u64,
    /// Calls that failed, timed out or ended with a `grpc-status` other than 0.
    pub errors: u64,
    pub seconds: f64,
}

/// Shape of a server-streaming run.
#[derive(Debug, Clone, Copy)]
pub struct StreamPlan {
    pub connections: usize,
    /// Calls in flight on each connection; each starts its next call when one ends.
    pub streams_per_connection: usize,
    /// Size of each response message before its 5-byte prefix.
    pub message_bytes: usize,
    pub duration: Duration,
}

/// Calls the streaming method back to back over `plan.connections` HTTP/2
/// connections until `plan.duration` has passed, and counts the messages
/// of the calls that ended with `grpc-status: 0`. Calls still running at the
/// deadline finish and count; `seconds` covers them.
pub async fn stream_load(port: u16, plan: StreamPlan) -> anyhow::Result<StreamLoad> {
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let sender = connect(port).await?;
        for _ in 0..plan.streams_per_connection {
            tasks.spawn(stream_calls(sender.clone(), port, plan.message_bytes, deadline));
        }
    }
    let mut total = StreamLoad::default();
    while let Some(load) = tasks.join_next().await {
        let load = load?;
        total.calls += load.calls;
        total.messages += load.messages;
        total.errors += load.errors;
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

async fn stream_calls(mut sender: SendRequest<Full<Bytes>>, port: u16, message_bytes: usize, deadline: Instant) -> StreamLoad {
    let framed_bytes = grpc_wire::PREFIX_BYTES + message_bytes;
    let body = Bytes::from(Form::Grpc.body(16));
    let mut load = StreamLoad::default();
    while Instant::now() < deadline {
        let result = tokio::time::timeout(CALL_TIMEOUT, call(&mut sender, port, STREAM_PATH, Form::Grpc, body.clone())).await;
        match result {
            Ok(Ok(result)) if result.status.as_deref() == Some("0") => {
                load.calls += 1;
                load.messages += (result.data_bytes / framed_bytes) as u64;
            }
            Ok(Ok(_)) => load.errors += 1,
            // A broken connection fails every later call at once, so this
            // stream stops rather than spin until the deadline.
            Ok(Err(_)) | Err(_) => {
                load.errors += 1;
                break;
            }
        }
    }
    load
}
