//! The gRPC-JSON transcoder filter: a plain HTTP/JSON request that matches
//! a `google.api.http` rule becomes a gRPC call, and the gRPC response
//! becomes JSON. As with gRPC-Web, the request is rewritten before routing
//! and the response converted at its end. Unlike gRPC-Web, the messages
//! change form, by reflection over the configured descriptor set.

mod json;
mod request;
mod status;
mod stream;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use legate_config::transcoder::{GrpcJsonTranscoder, HttpRule};

use super::body::{DownstreamBody, ResponseBody};
use crate::grpc::Code;
use crate::router::{RouteMatchResult, RouteTable};
use request::{RequestInput, HTTP_BODY};
pub use stream::JsonStreamBody;

static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// The filter's decision for one request.
pub(super) enum Start {
    /// Not a transcoded call: the request goes on as it is.
    Pass,
    /// Rejected before any upstream.
    Reply(Box<Response<ResponseBody>>),
    Call(Transcoding),
}

/// A request matched to a gRPC method.
pub(super) struct Transcoding {
    config: Arc<GrpcJsonTranscoder>,
    rule: usize,
    values: Vec<String>,
    /// The original path and query.
    original: http::uri::PathAndQuery,
    content_type: Option<HeaderValue>,
}

/// Matches a non-gRPC request against the rules. On a route that turns
/// the filter off (matched by the request's own path) the request passes.
pub(super) fn start(config: &Arc<GrpcJsonTranscoder>, parts: &Parts, routes: &RouteTable) -> Start {
    if parts.method == Method::OPTIONS {
        return Start::Pass;
    }
    let found = config.rules.find(&parts.method, parts.uri.path());
    if found.is_none() && !config.reject_unknown_method {
        return Start::Pass;
    }
    // Only a request the filter would act on pays for this extra route match.
    let host = super::headers::parts_host(parts).unwrap_or("");
    if let RouteMatchResult::Matched(route, _, _) = routes.route(host, parts) {
        if route.filter_configs.grpc_json_transcoder_disabled {
            return Start::Pass;
        }
    }
    let Some(found) = found else {
        let message = format!("no gRPC method matches {} {}", parts.method, parts.uri.path());
        return Start::Reply(Box::new(status::local_error(StatusCode::NOT_FOUND, Code::NotFound, &message)));
    };
    let Some(original) = parts.uri.path_and_query().cloned() else { return Start::Pass };
    tracing::debug!(path = original.path(), method = config.rules.get(found.index).binding.method.full_name(), "transcoding a JSON request");
    Start::Call(Transcoding {
        config: config.clone(),
        rule: found.index,
        values: found.values,
        original,
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
    })
}

impl Transcoding {
    fn rule(&self) -> &HttpRule {
        self.config.rules.get(self.rule)
    }

    pub(super) fn match_incoming_request_route(&self) -> bool {
        self.config.match_incoming_request_route
    }

    /// Rewrites the request headers into a gRPC call's.
    pub(super) fn rewrite(&self, parts: &mut Parts) {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(self.rule().binding.grpc_path.clone());
        parts.uri = http::Uri::from_parts(uri).expect("a gRPC path keeps the URI valid");
        parts.method = Method::POST;
        if let Ok(original) = HeaderValue::from_str(self.original.as_str()) {
            parts.headers.insert(ORIGINAL_PATH.clone(), original);
        }
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        for name in [header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::ACCEPT_ENCODING, header::TRANSFER_ENCODING] {
            parts.headers.remove(name);
        }
    }

    /// Reads the JSON body (up to `max_request_body_size`) and builds the
    /// gRPC request body. A bad request gets 400 (413 when too large) here,
    /// before any upstream is chosen.
    pub(super) async fn read_request(&self, body: Incoming) -> Result<DownstreamBody, Response<ResponseBody>> {
        let limit = self.config.max_request_body_size;
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                let message = format!("the request body is larger than {limit} bytes");
                return Err(status::local_error(StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, &message));
            }
            Err(error) => {
                tracing::debug!(%error, "reading a request body to transcode failed");
                return Err(status::local_error(StatusCode::BAD_REQUEST, Code::Cancelled, "the request body was not received"));
            }
        };
        let input = RequestInput {
            rule: self.rule(),
            values: &self.values,
            query: self.original.query(),
            body: &bytes,
            content_type: self.content_type.as_ref().and_then(|value| value.to_str().ok()),
        };
        let message = request::build_message(&self.config, &input).map_err(|error| {
            tracing::debug!(%error, path = self.original.path(), "rejected a request to transcode");
            status::local_error(StatusCode::BAD_REQUEST, Code::InvalidArgument, &error.to_string())
        })?;
        Ok(DownstreamBody::buffered(grpc_frame(&message)))
    }

    /// Converts the upstream's gRPC response to JSON. A reply the proxy made
    /// itself (no healthy upstream, a timeout, an open circuit breaker)
    /// becomes a JSON status too. An upstream response that is not gRPC goes
    /// back unchanged.
    pub(super) async fn respond(self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        if matches!(response.body(), ResponseBody::Local(_)) && !response.status().is_success() {
            return status::local_reply_json(response);
        }
        if response.status() != StatusCode::OK {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        if parts.headers.contains_key("grpc-status") {
            // Trailers-only: the call failed before any message.
            return with_extensions(status::status_reply(&self.config, &parts.headers), parts.extensions);
        }
        strip_grpc_headers(&mut parts.headers);
        let rule = self.rule();
        let method = &rule.binding.method;
        if method.is_server_streaming() {
            let content_type = if self.config.print.stream_newline_delimited { "application/x-ndjson" } else { "application/json" };
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            let stream = JsonStreamBody::new(body, self.config.clone(), method.output(), rule.response_body.clone());
            return Response::from_parts(parts, ResponseBody::Transcoded(Box::new(stream)));
        }

        let limit = self.config.max_response_body_size;
        let collected = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected,
            Err(error) => {
                tracing::debug!(%error, limit, "reading a unary response to transcode failed");
                let message = if error.is::<http_body_util::LengthLimitError>() {
                    format!("the upstream response is larger than {limit} bytes")
                } else {
                    "the upstream response was not received whole".to_string()
                };
                let reply = status::local_error(StatusCode::BAD_GATEWAY, Code::Unavailable, &message);
                return with_extensions(reply, parts.extensions);
            }
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let code = trailers.get("grpc-status").map_or(Code::Unknown, Code::from_header);
        if code != Code::Ok {
            return with_extensions(status::status_reply(&self.config, &trailers), parts.extensions);
        }
        match self.unary_body(collected.to_bytes()) {
            Ok((content_type, body)) => {
                parts.headers.insert(header::CONTENT_TYPE, content_type);
                Response::from_parts(parts, ResponseBody::local(body))
            }
            Err(reason) => {
                tracing::debug!(reason, "a unary response cannot be transcoded");
                with_extensions(status::local_error(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, &reason), parts.extensions)
            }
        }
    }

    /// Decodes the single message of a unary response body into JSON, or
    /// the raw data of a `google.api.HttpBody`.
    fn unary_body(&self, body: Bytes) -> Result<(HeaderValue, Bytes), String> {
        let rule = self.rule();
        if body.len() < 5 || body[0] & 1 == 1 {
            return Err("the upstream sent no message, or a compressed one".to_string());
        }
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() != 5 + length {
            return Err("the upstream sent other than one message for a unary call".to_string());
        }
        let message = DynamicMessage::decode(rule.binding.method.output(), body.slice(5..)).map_err(|error| error.to_string())?;
        if let Some(raw) = http_body(&message, rule) {
            return Ok(raw);
        }
        let json = json::message_json(&message, &self.config.print, rule.response_body.as_ref()).map_err(|error| error.to_string())?;
        Ok((HeaderValue::from_static("application/json"), Bytes::from(json)))
    }
}

/// Extracts the content type and data of a `google.api.HttpBody` response
/// (the whole message or its `response_body` field), which are sent raw.
fn http_body(message: &DynamicMessage, rule: &HttpRule) -> Option<(HeaderValue, Bytes)> {
    let body = match &rule.response_body {
        None if message.descriptor().full_name() == HTTP_BODY => message.clone(),
        Some(field) if matches!(field.kind(), Kind::Message(inner) if inner.full_name() == HTTP_BODY) => match message.get_field(field).into_owned() {
            Value::Message(inner) => inner,
            _ => return None,
        },
        _ => return None,
    };
    let content_type = match body.get_field_by_name("content_type").as_deref() {
        Some(Value::String(text)) if !text.is_empty() => HeaderValue::from_str(text).ok()?,
        _ => HeaderValue::from_static("application/octet-stream"),
    };
    let data = match body.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(bytes)) => bytes.clone(),
        _ => Bytes::new(),
    };
    Some((content_type, data))
}

/// Encodes `message` as one gRPC length-prefixed message.
fn grpc_frame(message: &DynamicMessage) -> Bytes {
    let length = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + length);
    frame.put_u8(0);
    frame.put_u32(length as u32);
    message.encode(&mut frame).expect("the buffer has room for the message");
    frame.freeze()
}

fn strip_grpc_headers(headers: &mut http::HeaderMap) {
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        headers.remove(name);
    }
    headers.remove("grpc-encoding");
    headers.remove("grpc-accept-encoding");
}

/// Keeps the response flag and upstream details for the access log.
fn with_extensions(mut response: Response<ResponseBody>, extensions: http::Extensions) -> Response<ResponseBody> {
    *response.extensions_mut() = extensions;
    response
}

/// Builds a transcoder config with no rules, for unit tests.
#[cfg(test)]
fn test_config() -> GrpcJsonTranscoder {
    GrpcJsonTranscoder {
        pool: prost_reflect::DescriptorPool::new(),
        rules: legate_config::transcoder::RuleTable::default(),
        print: legate_config::transcoder::PrintOptions::default(),
        match_incoming_request_route: false,
        ignored_query_parameters: std::collections::HashSet::from(["api_key".to_string()]),
        ignore_unknown_query_parameters: false,
        convert_grpc_status: true,
        reject_unknown_method: false,
        query_param_unescape_plus: true,
        max_request_body_size: 1024,
        max_response_body_size: 1024,
        status_message: None,
        descriptor_bytes: Arc::from(&[][..]),
        services: Vec::new(),
    }
}
