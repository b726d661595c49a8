//! gRPC responses: trailers-only replies for errors, upstream HTTP errors
//! mapped to gRPC statuses, and a response body that ends every gRPC call
//! with a status, counts its messages and encodes gRPC-Web.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::frames::{trailer_frame, Base64Encoder, MessageCounter};
use super::status::{encode_message, Code};
use super::GrpcCall;
use crate::http::body::ResponseBody;
use crate::upstream::UpstreamError;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The form of the response body sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebMode {
    /// gRPC: trailers stay HTTP/2 trailers.
    Grpc,
    /// gRPC-Web: trailers become a trailer frame at the end of the body.
    Binary,
    /// gRPC-Web text: as `Binary`, the whole body base64-encoded.
    Text,
}

/// Builds a trailers-only gRPC response: HTTP 200 and the status in the headers,
/// with no body.
pub fn local_status_reply(code: Code, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Local(None));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS.clone(), code.header_value());
    headers.insert(GRPC_MESSAGE.clone(), encode_message(message));
    response
}

/// Turns a response to a gRPC request into a gRPC one. A reply the proxy
/// made itself becomes trailers-only with the status its HTTP status
/// means. An upstream's non-200 response without `grpc-status` is mapped
/// by gRPC's HTTP-to-gRPC table.
pub fn adapt_response(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let status = response.status();
    if status == StatusCode::OK {
        return response;
    }
    let mut reply = match response.body() {
        ResponseBody::Local(reason) => {
            let reason = reason.as_ref().map(|bytes| String::from_utf8_lossy(bytes).trim_end().to_string()).unwrap_or_default();
            local_status_reply(Code::from_local_http(status.as_u16()), &reason)
        }
        _ if response.headers().contains_key(&GRPC_STATUS) => return response,
        _ => {
            let code = Code::from_upstream_http(status.as_u16());
            local_status_reply(code, &format!("upstream answered HTTP {}", status.as_u16()))
        }
    };
    // The response flag and upstream details stay for the access log.
    *reply.extensions_mut() = response.into_parts().0.extensions;
    reply
}

/// The body of a response to a gRPC or gRPC-Web call.
pub struct GrpcResponseBody {
    inner: ResponseBody,
    mode: WebMode,
    encoder: Base64Encoder,
    counter: MessageCounter,
    call: Option<Arc<GrpcCall>>,
    /// Status of a trailers-only response, for the gRPC-Web trailer frame
    /// and the statistics.
    header_status: Option<HeaderMap>,
    pending: Option<Frame<Bytes>>,
    done: bool,
}

impl GrpcResponseBody {
    /// Wraps a gRPC response body; for gRPC-Web also rewrites the headers.
    pub fn wrap(response: Response<ResponseBody>, mode: WebMode, call: Option<Arc<GrpcCall>>) -> Response<ResponseBody> {
        let (mut parts, inner) = response.into_parts();
        let header_status = parts.headers.get(&GRPC_STATUS).map(|status| {
            let mut trailers = HeaderMap::with_capacity(2);
            trailers.insert(GRPC_STATUS.clone(), status.clone());
            if let Some(message) = parts.headers.get(&GRPC_MESSAGE) {
                trailers.insert(GRPC_MESSAGE.clone(), message.clone());
            }
            trailers
        });
        if mode != WebMode::Grpc {
            let content_type = if mode == WebMode::Text { "application/grpc-web-text+proto" } else { "application/grpc-web+proto" };
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let mut body = GrpcResponseBody {
            inner,
            mode,
            encoder: Base64Encoder::default(),
            counter: MessageCounter::default(),
            call,
            header_status,
            pending: None,
            done: false,
        };
        if mode == WebMode::Grpc && body.inner.is_end_stream() {
            // Trailers-only: the status goes out in the headers, with
            // END_STREAM on them.
            body.on_end();
        }
        Response::from_parts(parts, ResponseBody::Grpc(Box::new(body)))
    }

    fn on_data(&mut self, data: Bytes) -> Option<Bytes> {
        let started = self.counter.feed(&data);
        if let Some(call) = &self.call {
            call.add_sent(started);
        }
        match self.mode {
            WebMode::Text => self.encoder.encode(&data),
            _ => Some(data),
        }
    }

    /// Ends the call with `trailers`, returning the frame that carries them.
    fn end_with(&mut self, mut trailers: HeaderMap) -> Frame<Bytes> {
        self.done = true;
        if !trailers.contains_key(&GRPC_STATUS) {
            if let Some(status) = self.header_status.take() {
                trailers.extend(status);
            }
        }
        if let Some(call) = &self.call {
            call.finish(trailers.get(&GRPC_STATUS).map_or(Code::Unknown, Code::from_header));
        }
        match self.mode {
            WebMode::Grpc => Frame::trailers(trailers),
            WebMode::Binary => Frame::data(trailer_frame(&trailers)),
            WebMode::Text => {
                let mut text = BytesMut::new();
                if let Some(rest) = self.encoder.finish() {
                    text.extend_from_slice(&rest);
                }
                let frame = trailer_frame(&trailers);
                text.extend_from_slice(&self.encoder.encode(&frame).unwrap_or_default());
                text.extend_from_slice(&self.encoder.finish().unwrap_or_default());
                Frame::data(text.freeze())
            }
        }
    }

    /// Handles the end of the upstream body without trailers: a
    /// trailers-only response, or an upstream that broke the protocol.
    fn on_end(&mut self) -> Option<Frame<Bytes>> {
        match (self.header_status.take(), self.mode) {
            (Some(status), WebMode::Grpc) => {
                self.done = true;
                if let Some(call) = &self.call {
                    call.finish(status.get(&GRPC_STATUS).map_or(Code::Unknown, Code::from_header));
                }
                None
            }
            (Some(status), _) => Some(self.end_with(status)),
            (None, WebMode::Grpc) => {
                self.done = true;
                if let Some(call) = &self.call {
                    call.finish(Code::Internal);
                }
                None
            }
            (None, _) => Some(self.end_with(status_trailers(Code::Internal, "upstream response ended without a gRPC status"))),
        }
    }
}

/// Trailers carrying a status and a message.
fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS.clone(), code.header_value());
    trailers.insert(GRPC_MESSAGE.clone(), encode_message(message));
    trailers
}

/// Returns the status a call ends with when its upstream stream fails midway.
pub fn error_status(error: &UpstreamError) -> (Code, &'static str) {
    match error {
        UpstreamError::Timeout => (Code::DeadlineExceeded, "upstream request timeout"),
        UpstreamError::IdleTimeout => (Code::DeadlineExceeded, "stream idle timeout"),
        error if error.is_request_timeout() => (Code::DeadlineExceeded, "request timeout"),
        UpstreamError::Request(error) => match reset_reason(error) {
            Some(reason) => (Code::from_reset(reason), "upstream reset the stream"),
            None => (Code::Unavailable, "upstream connection ended"),
        },
        _ => (Code::Unavailable, "upstream connection failed"),
    }
}

/// Finds the HTTP/2 reset code behind a client error, if the upstream reset
/// the stream.
fn reset_reason(error: &hyper::Error) -> Option<h2::Reason> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(h2_error) = cause.downcast_ref::<h2::Error>() {
            return h2_error.reason();
        }
        source = cause.source();
    }
    None
}

impl Drop for GrpcResponseBody {
    fn drop(&mut self) {
        // A body dropped before its status means the client went away.
        if let Some(call) = &self.call {
            call.finish(Code::Cancelled);
        }
    }
}

impl Body for GrpcResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.pending.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    let (code, message) = error_status(&error);
                    tracing::debug!(%error, code = code.name(), "gRPC stream ended by an upstream error");
                    return Poll::Ready(Some(Ok(this.end_with(status_trailers(code, message)))));
                }
                None => return Poll::Ready(this.on_end().map(Ok)),
            };
            match frame.into_data() {
                Ok(data) => {
                    if let Some(out) = this.on_data(data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return Poll::Ready(Some(Ok(this.end_with(trailers))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
