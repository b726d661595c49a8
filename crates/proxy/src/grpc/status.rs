//! gRPC status codes, and how HTTP statuses, HTTP/2 reset reasons and
//! proxy errors map onto them.

use http::HeaderValue;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// A gRPC status code (the `grpc-status` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// The code names used as metric label values, indexed by code.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// Parses a `grpc-status` value; a number outside 0-16 is `Unknown`, as
    /// gRPC clients treat it.
    pub fn from_header(value: &HeaderValue) -> Code {
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .and_then(|number| ALL.get(number).copied())
            .unwrap_or(Code::Unknown)
    }

    pub fn header_value(self) -> HeaderValue {
        const VALUES: [&str; 17] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"];
        HeaderValue::from_static(VALUES[self as usize])
    }

    pub fn name(self) -> &'static str {
        CODE_NAMES[self as usize]
    }

    /// Maps the HTTP status of an upstream response that has no
    /// `grpc-status`, by the table in gRPC's "HTTP to gRPC Status Code
    /// Mapping" document.
    pub fn from_upstream_http(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// Maps the HTTP status of a reply the proxy made itself. Unlike an
    /// upstream's 504, the proxy's own 504 and 408 mean a deadline passed.
    pub fn from_local_http(status: u16) -> Code {
        match status {
            200 => Code::Ok,
            404 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            502 | 503 => Code::Unavailable,
            other => Code::from_upstream_http(other),
        }
    }

    /// Maps an HTTP/2 `RST_STREAM` error code received from the upstream, as
    /// gRPC's HTTP/2 protocol document specifies.
    pub fn from_reset(reason: h2::Reason) -> Code {
        match reason {
            h2::Reason::REFUSED_STREAM => Code::Unavailable,
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
            _ => Code::Internal,
        }
    }
}

/// Characters percent-encoded in `grpc-message`: everything outside
/// printable ASCII, and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes a `grpc-message` value.
pub fn encode_message(message: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("invalid message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_header_parses() {
        assert_eq!(Code::from_header(&HeaderValue::from_static("14")), Code::Unavailable);
        assert_eq!(Code::from_header(&HeaderValue::from_static("99")), Code::Unknown);
        assert_eq!(Code::from_header(&HeaderValue::from_static("x")), Code::Unknown);
        assert_eq!(Code::Unauthenticated.header_value(), "16");
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(encode_message("no route: 100% ünïcode\n"), "no route: 100%25 %C3%BCn%C3%AFcode%0A");
    }

    #[test]
    fn http_statuses_map_to_codes() {
        assert_eq!(Code::from_upstream_http(503), Code::Unavailable);
        assert_eq!(Code::from_upstream_http(504), Code::Unavailable);
        assert_eq!(Code::from_upstream_http(418), Code::Unknown);
        assert_eq!(Code::from_local_http(504), Code::DeadlineExceeded);
        assert_eq!(Code::from_local_http(404), Code::Unimplemented);
    }
}
