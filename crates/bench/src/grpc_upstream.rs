//! The gRPC upstream of scenarios 4 to 6: a hyper HTTP/2 server over
//! cleartext that writes pre-encoded messages and a `grpc-status: 0`
//! trailer, without decoding protobuf.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::grpc_wire;

#[derive(Debug, clap::Args)]
pub struct GrpcArgs {
    /// Port on 127.0.0.1, serving HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    port: u16,
    /// Size of each response message, in bytes, before the 5-byte prefix.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Messages one server-streaming call returns.
    #[arg(long, default_value_t = 100)]
    stream_messages: u32,
}

/// Runs the gRPC upstream on one thread until the process is stopped.
pub fn serve(args: GrpcArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
        let message = Bytes::from(grpc_wire::frame(&grpc_wire::bytes_message(args.message_bytes)));
        let stream_messages = args.stream_messages;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let message = message.clone();
            let service = service_fn(move |request| respond(request, message.clone(), stream_messages));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Reads the whole request, then responds to the unary method with one
/// message and to the streaming method with `stream_messages`.
async fn respond(request: Request<Incoming>, message: Bytes, stream_messages: u32) -> Result<Response<Messages>, Infallible> {
    let count = if request.uri().path() == grpc_wire::STREAM_PATH { stream_messages } else { 1 };
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Messages { message, remaining: count, trailers_sent: false });
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(grpc_wire::GRPC));
    Ok(response)
}

/// A response body of `remaining` copies of one framed message, then the
/// `grpc-status: 0` trailer.
pub struct Messages {
    message: Bytes,
    remaining: u32,
    trailers_sent: bool,
}

impl Body for Messages {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining > 0 {
            self.remaining -= 1;
            return Poll::Ready(Some(Ok(Frame::data(self.message.clone()))));
        }
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        self.trailers_sent = true;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.trailers_sent
    }
}
