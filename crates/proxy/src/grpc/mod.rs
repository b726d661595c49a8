//! gRPC and gRPC-Web support: request classification, status mapping,
//! deadlines, message framing and per-method statistics.

mod call;
mod frames;
mod response;
mod status;
pub mod timeout;

use http::{header, HeaderMap};

pub use call::{GrpcCall, MethodTable};
pub use frames::{decode_base64_segments, MessageCounter};
pub use response::{adapt_response, error_status, local_status_reply, GrpcResponseBody, WebMode, GRPC_STATUS};
pub use status::{encode_message, Code, CODE_NAMES};

/// Returns the numeric `grpc-status` of a response's headers or trailers,
/// or `None` when it is missing or not a number.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The protocol of a request, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Other,
    /// `application/grpc` or `application/grpc+...`.
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+...`; `text` for
    /// `application/grpc-web-text` and `application/grpc-web-text+...`.
    GrpcWeb { text: bool },
}

impl Protocol {
    pub fn of(headers: &HeaderMap) -> Protocol {
        let Some(value) = headers.get(header::CONTENT_TYPE) else { return Protocol::Other };
        let value = value.as_bytes();
        let Some(rest) = strip_prefix_ignore_case(value, b"application/grpc") else { return Protocol::Other };
        if rest.is_empty() || rest[0] == b'+' || rest[0] == b';' {
            return Protocol::Grpc;
        }
        if let Some(web) = strip_prefix_ignore_case(rest, b"-web-text") {
            if web.is_empty() || web[0] == b'+' || web[0] == b';' {
                return Protocol::GrpcWeb { text: true };
            }
        }
        if let Some(web) = strip_prefix_ignore_case(rest, b"-web") {
            if web.is_empty() || web[0] == b'+' || web[0] == b';' {
                return Protocol::GrpcWeb { text: false };
            }
        }
        Protocol::Other
    }

    pub fn is_grpc_family(self) -> bool {
        self != Protocol::Other
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &value[prefix.len()..])
}

/// Splits a gRPC path `/package.Service/Method` into service and method.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(content_type: &'static str) -> Protocol {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        Protocol::of(&headers)
    }

    #[test]
    fn content_types_classify() {
        assert_eq!(protocol("application/grpc"), Protocol::Grpc);
        assert_eq!(protocol("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(protocol("Application/GRPC+json"), Protocol::Grpc);
        assert_eq!(protocol("application/grpc-web"), Protocol::GrpcWeb { text: false });
        assert_eq!(protocol("application/grpc-web+proto"), Protocol::GrpcWeb { text: false });
        assert_eq!(protocol("application/grpc-web-text"), Protocol::GrpcWeb { text: true });
        assert_eq!(protocol("application/grpc-web-text+proto"), Protocol::GrpcWeb { text: true });
        assert_eq!(protocol("application/grpcx"), Protocol::Other);
        assert_eq!(protocol("application/json"), Protocol::Other);
    }

    #[test]
    fn status_read_from_header() {
        let status = |value: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(&GRPC_STATUS, value.parse().unwrap());
            }
            status_of(&headers)
        };
        assert_eq!(status(Some("0")), Some(0));
        assert_eq!(status(Some(" 14 ")), Some(14));
        assert_eq!(status(Some("abc")), None);
        assert_eq!(status(None), None);
    }

    #[test]
    fn grpc_paths_split() {
        assert_eq!(split_path("/pkg.Svc/Method"), Some(("pkg.Svc", "Method")));
        assert_eq!(split_path("/pkg.Svc/"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("nope"), None);
    }
}
