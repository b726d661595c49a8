//! gRPC-Web over plain HTTP/1.1 (no browser): binary and text
//! framing, base64 bodies split at any byte, trailer frames, error
//! statuses, streaming limits and CORS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::grpc::grpc_setup;
use crate::support::*;

/// The frame `00 00 00 00 05 0a 03 66 6f 6f`: an EchoRequest with message "foo".
const FOO_TEXT: &str = "AAAAAAUKA2Zvbw==";

struct WebResponse {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends a gRPC-Web POST over HTTP/1.1 with the body in `chunks`, each sent
/// as its own write.
async fn web_post(address: SocketAddr, path: &str, content_type: &str, chunks: Vec<Vec<u8>>, origin: Option<&str>) -> WebResponse {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let frames = tokio_stream::iter(chunks.into_iter().map(|chunk| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))));
    let mut builder = hyper::Request::post(path)
        .header("host", "web.test")
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1");
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    let response = sender.send_request(builder.body(StreamBody::new(frames)).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    WebResponse { status, headers, body }
}

/// Splits a gRPC-Web body into its data messages and its trailer frame
/// (parsed into lower-case name and value pairs).
fn parse_frames(body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    let mut rest = body;
    let mut trailer_frames = 0;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a frame prefix is cut: {rest:?}");
        let flag = rest[0];
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + length];
        if flag & 0x80 != 0 {
            trailer_frames += 1;
            assert!(length > 0, "an empty trailer frame");
            for line in std::str::from_utf8(payload).unwrap().split("\r\n").filter(|line| !line.is_empty()) {
                let (name, value) = line.split_once(':').unwrap();
                assert_eq!(name, name.to_ascii_lowercase(), "trailer names are lower case");
                trailers.push((name.to_string(), value.trim().to_string()));
            }
        } else {
            messages.push(payload.to_vec());
        }
        rest = &rest[5 + length..];
    }
    assert_eq!(trailer_frames, 1, "exactly one trailer frame");
    (messages, trailers)
}

fn trailer<'a>(trailers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    trailers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Decodes a gRPC-Web text body quadruplet by quadruplet, so that padded
/// segments in the middle decode too.
fn decode_text(body: &[u8]) -> Vec<u8> {
    assert_eq!(body.len() % 4, 0, "the text body is whole quadruplets");
    body.chunks(4).flat_map(|quad| base64::engine::general_purpose::STANDARD.decode(quad).unwrap()).collect()
}

/// Reads field 1 (a string) of an encoded EchoResponse.
fn message_field(message: &[u8]) -> String {
    assert_eq!(message[0], 0x0a, "field 1 comes first");
    let length = message[1] as usize;
    String::from_utf8(message[2..2 + length].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_text_chunks() {
    let setup = grpc_setup("grpc-web-text").await;
    let text_type = "application/grpc-web-text";
    let padless = FOO_TEXT.trim_end_matches('=').as_bytes().to_vec();
    let mut bodies = vec![vec![FOO_TEXT.as_bytes().to_vec()], vec![padless]];
    for size in [1, 3, 7] {
        bodies.push(FOO_TEXT.as_bytes().chunks(size).map(<[u8]>::to_vec).collect());
    }
    for chunks in bodies {
        let response = web_post(setup.address, "/legate.test.Echo/Unary", text_type, chunks.clone(), None).await;
        assert_eq!(response.status, 200);
        assert!(response.headers["content-type"].to_str().unwrap().starts_with("application/grpc-web-text"));
        let (messages, trailers) = parse_frames(&decode_text(&response.body));
        assert_eq!(messages.len(), 1, "{chunks:?}");
        assert_eq!(message_field(&messages[0]), "foo");
        assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));
    }

    let two = FOO_TEXT.repeat(2).into_bytes();
    let response = web_post(setup.address, "/legate.test.Echo/Unary", text_type, vec![two], None).await;
    assert_eq!(response.headers["grpc-status"], "12", "two messages are client streaming, which gRPC-Web lacks");

    let started = Instant::now();
    let response = web_post(setup.address, "/legate.test.Echo/Unary", text_type, vec![b"AAAA*AUKA2Zvbw==".to_vec()], None).await;
    assert_eq!(response.headers["grpc-status"], "13");
    assert!(started.elapsed() < Duration::from_secs(2), "an undecodable body fails at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_binary_and_errors() {
    let setup = grpc_setup("grpc-web-binary").await;
    let binary = "application/grpc-web+proto";
    // EchoRequest { message: "hi", count: 3 } for the server stream.
    let stream_request = [&[0u8, 0, 0, 0, 6][..], &[0x0a, 2, b'h', b'i', 0x20, 3]].concat();
    // Split inside the 5-byte prefix.
    let chunks = vec![stream_request[..2].to_vec(), stream_request[2..].to_vec()];
    let response = web_post(setup.address, "/legate.test.Echo/ServerStream", binary, chunks, None).await;
    assert_eq!(response.status, 200);
    let (messages, trailers) = parse_frames(&response.body);
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| message_field(m) == "hi"));
    assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));

    // EchoRequest { fail_code: 3, fail_message: "x" }: an error status in trailers.
    let failing = [&[0u8, 0, 0, 0, 5][..], &[0x28, 3, 0x32, 1, b'x']].concat();
    let response = web_post(setup.address, "/legate.test.Echo/Unary", binary, vec![failing], None).await;
    let (messages, trailers) = parse_frames(&response.body);
    assert!(messages.is_empty());
    assert_eq!(trailer(&trailers, "grpc-status"), Some("3"));
    assert_eq!(trailer(&trailers, "grpc-message"), Some("x"));

    // A proxy-made error is a trailer frame too.
    let response = web_post(setup.address, "/legate.test.Empty/Call", binary, vec![vec![0, 0, 0, 0, 0]], None).await;
    let (_, trailers) = parse_frames(&response.body);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("14"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_exposed_headers() {
    let setup = grpc_setup("grpc-cors").await;
    let preflight = |origin: &'static str| {
        hyper::Request::builder()
            .method("OPTIONS")
            .uri("/legate.test.Echo/Unary")
            .header("host", "web.test")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-user-agent,grpc-timeout")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let calls_before: usize = setup.upstreams.iter().map(|u| u.calls()).sum();

    let (status, _, headers) = http1_request(setup.address, preflight("http://allowed.test")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "http://allowed.test");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for name in ["content-type", "x-user-agent", "grpc-timeout"] {
        assert!(allowed.contains(name), "{name} is allowed: {allowed}");
    }
    assert_eq!(headers["access-control-max-age"], "600");

    let (status, _, headers) = http1_request(setup.address, preflight("http://evil.test")).await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.keys().all(|name| !name.as_str().starts_with("access-control-")), "no CORS header: {headers:?}");
    let calls_after: usize = setup.upstreams.iter().map(|u| u.calls()).sum();
    assert_eq!(calls_before, calls_after, "preflights never reach the upstream");

    let binary = "application/grpc-web+proto";
    for path in ["/legate.test.Echo/Unary", "/legate.test.Empty/Call"] {
        let response = web_post(setup.address, path, binary, vec![vec![0, 0, 0, 0, 0]], Some("http://allowed.test")).await;
        let exposed = response.headers["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.contains("grpc-status"), "{path}: {exposed}");
        assert!(exposed.contains("grpc-message"), "{path}: {exposed}");
        assert_eq!(response.headers["access-control-allow-origin"], "http://allowed.test");
        let response = web_post(setup.address, path, binary, vec![vec![0, 0, 0, 0, 0]], Some("http://evil.test")).await;
        assert!(!response.headers.contains_key("access-control-allow-origin"));
    }
}
