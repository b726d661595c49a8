//! The gRPC-Web filter's request side: a gRPC-Web request becomes a gRPC
//! request for an HTTP/2 upstream. The response side is
//! `grpc::GrpcResponseBody`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::Response;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::body::{DownstreamBody, ResponseBody};
use crate::grpc::{decode_base64_segments, local_status_reply, Code, MessageCounter};

/// Largest gRPC-Web request body read, after base64 decoding, as gRPC's
/// default largest message (4 MiB) plus its 5-byte prefix. A gRPC-Web
/// request contains one message, because browsers send the body whole.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024 + 5;

/// Rewrites a gRPC-Web request's headers to gRPC's, before the route is
/// matched, so that `grpc: {}` routes match it as Envoy does.
pub fn translate_headers(parts: &mut Parts) {
    let proto = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().ends_with(b"+proto"));
    let content_type = if proto { "application/grpc+proto" } else { "application/grpc" };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    parts.headers.remove(header::CONTENT_LENGTH);
}

/// Reads a gRPC-Web request body whole, decoding base64 in text mode. A
/// body with more than one message (client or bidirectional streaming,
/// which gRPC-Web does not carry) gets UNIMPLEMENTED; an undecodable or
/// truncated one gets an error status at once.
pub async fn read_body(body: Incoming, text: bool) -> Result<DownstreamBody, Response<ResponseBody>> {
    let limit = if text { MAX_REQUEST_BYTES / 3 * 4 + 4 } else { MAX_REQUEST_BYTES };
    let collected = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(local_status_reply(Code::ResourceExhausted, "gRPC-Web request body is larger than 4 MiB"));
        }
        Err(error) => {
            tracing::debug!(%error, "reading a gRPC-Web request body failed");
            return Err(local_status_reply(Code::Cancelled, "the request body was not received"));
        }
    };
    let message = if text {
        match decode_base64_segments(&collected) {
            Ok(decoded) => Bytes::from(decoded),
            Err(error) => return Err(local_status_reply(Code::Internal, &error.to_string())),
        }
    } else {
        collected
    };

    let mut counter = MessageCounter::default();
    counter.feed(&message);
    if counter.messages > 1 {
        return Err(local_status_reply(
            Code::Unimplemented,
            "gRPC-Web carries unary and server-streaming calls only; this request contains several messages",
        ));
    }
    if !counter.at_boundary() {
        return Err(local_status_reply(Code::Internal, "the gRPC-Web request body ends inside a message"));
    }
    Ok(DownstreamBody::buffered(message))
}
