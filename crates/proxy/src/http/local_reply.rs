//! Responses the proxy makes itself: a status and a one-line reason.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;

pub fn local_reply(status: StatusCode, reason: &'static str) -> Response<ResponseBody> {
    let mut body = String::with_capacity(reason.len() + 1);
    body.push_str(reason);
    body.push('\n');
    let mut response = Response::new(ResponseBody::local(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
