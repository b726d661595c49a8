//! gRPC statuses as HTTP responses to JSON clients: the HTTP status each
//! code maps to, and a `google.rpc.Status` JSON body.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::percent_decode;
use prost_reflect::DynamicMessage;
use serde_json::json;

use legate_config::transcoder::GrpcJsonTranscoder;

use super::json::{message_json, value_json};
use crate::grpc::Code;
use crate::http::body::ResponseBody;

/// gRPC senders may drop the base64 padding of `-bin` headers.
const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

static GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// Maps a gRPC status code to an HTTP status, as `google.rpc.Code`
/// documents for each code.
pub(super) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 "Client Closed Request" has no constant in `http`.
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// Builds a reply the transcoder makes itself, before any upstream:
/// `status` and a `google.rpc.Status`-shaped JSON body.
pub(super) fn local_error(status: StatusCode, code: Code, message: &str) -> Response<ResponseBody> {
    let body = json!({ "code": code as u8, "message": message });
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Rewrites a reply the proxy made itself as a JSON status, with the gRPC
/// code a gRPC client would get and the HTTP status of that code. Headers
/// such as `x-envoy-overloaded` and the access log's extensions stay.
pub(super) fn local_reply_json(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, body) = response.into_parts();
    let code = Code::from_local_http(parts.status.as_u16());
    let message = match &body {
        ResponseBody::Local(Some(text)) => String::from_utf8_lossy(text).trim_end().to_string(),
        _ => String::new(),
    };

    let mut reply = local_error(http_status(code), code, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            reply.headers_mut().append(name, value.clone());
        }
    }
    *reply.extensions_mut() = parts.extensions;
    reply
}

/// Builds the reply for a call that ended with an error status, read from
/// `status_headers` (trailers, or the headers of a trailers-only response).
/// With `convert_grpc_status` the body is the `google.rpc.Status` as JSON,
/// from `grpc-status-details-bin` when its types are in the descriptor set.
/// Without it the body is empty and the gRPC headers stay.
pub(super) fn status_reply(config: &GrpcJsonTranscoder, status_headers: &HeaderMap) -> Response<ResponseBody> {
    let code = status_headers.get("grpc-status").map_or(Code::Unknown, Code::from_header);
    let status = http_status(code);
    if !config.convert_grpc_status {
        let mut response = Response::new(ResponseBody::Local(None));
        *response.status_mut() = status;
        for name in ["grpc-status", "grpc-message"] {
            if let Some(value) = status_headers.get(name) {
                response.headers_mut().insert(HeaderName::from_static(name), value.clone());
            }
        }
        return response;
    }
    let message = status_headers
        .get("grpc-message")
        .map(|value| percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let body = details_json(config, status_headers).unwrap_or_else(|| {
        let plain = json!({ "code": code as u8, "message": message });
        value_json(&plain, &config.print).unwrap_or_default()
    });
    json_response(status, body)
}

/// Decodes `grpc-status-details-bin` as a `google.rpc.Status` and prints it.
/// Returns `None` when it is absent or a detail's type is not in the
/// descriptor set, so the body carries the code and message only.
fn details_json(config: &GrpcJsonTranscoder, headers: &HeaderMap) -> Option<Vec<u8>> {
    let descriptor = config.status_message.clone()?;
    let encoded = headers.get(&GRPC_STATUS_DETAILS)?.as_bytes();
    let bytes = PADDING_OPTIONAL.decode(encoded).ok()?;
    let status = DynamicMessage::decode(descriptor, bytes.as_slice()).ok()?;
    match message_json(&status, &config.print, None) {
        Ok(json) => Some(json),
        Err(error) => {
            tracing::debug!(%error, "grpc-status-details-bin cannot be printed as JSON");
            None
        }
    }
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }

    fn status_headers(code: &'static str, message: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        headers
    }

    fn body_of(response: &Response<ResponseBody>) -> Vec<u8> {
        match response.body() {
            ResponseBody::Local(bytes) => bytes.as_ref().map(|bytes| bytes.to_vec()).unwrap_or_default(),
            _ => panic!("a local reply"),
        }
    }

    #[test]
    fn status_becomes_json_body() {
        let response = status_reply(&super::super::test_config(), &status_headers("5", "not%20here"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body_of(&response)).unwrap();
        assert_eq!(body, json!({ "code": 5, "message": "not here" }));
    }

    #[test]
    fn status_stays_in_headers_unconverted() {
        let config = GrpcJsonTranscoder { convert_grpc_status: false, ..super::super::test_config() };
        let response = status_reply(&config, &status_headers("16", "who%3F"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "who%3F");
        assert!(body_of(&response).is_empty());
    }
}
