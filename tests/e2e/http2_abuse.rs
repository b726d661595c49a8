//! HTTP/2 abuse against a listener: a rapid reset flood and a CONTINUATION
//! flood each end that connection, and the listener keeps serving others.
//! The frames are written by hand, because well-behaved clients never send
//! them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// HPACK for `GET http://t/`: indexed :method GET, :scheme http, :path /,
/// then :authority `t` as a literal with indexing.
const GET_ROOT: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b't'];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Encodes one literal header field without indexing, with a new name each time.
fn literal_header(index: usize) -> Vec<u8> {
    let name = format!("x-flood-{index:06}");
    let value = "v".repeat(100);
    let mut field = vec![0x00, name.len() as u8];
    field.extend_from_slice(name.as_bytes());
    field.push(value.len() as u8);
    field.extend_from_slice(value.as_bytes());
    field
}

/// What the proxy did with a connection once the client stopped writing.
struct Outcome {
    closed: bool,
    goaway_code: Option<u32>,
}

/// Writes `bytes` (ignoring a write the proxy cut short by closing), then
/// reads frames until the connection closes or 10 seconds pass.
async fn send(address: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .is_ok();
    Outcome { closed, goaway_code: goaway_code(&received) }
}

/// Finds the error code of the first GOAWAY frame the proxy sent.
fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let payload = bytes.get(9..9 + length)?;
        if bytes[3] == GOAWAY && payload.len() >= 8 {
            return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        }
        bytes = &bytes[9 + length..];
    }
    None
}

async fn start(label: &str) -> (Proxy, Upstream, SocketAddr) {
    let dir = temp_dir(label);
    let upstream = Upstream::start("web").await;
    let routes = "              - match: { prefix: / }\n                route: { cluster: web }";
    let bootstrap = static_bootstrap("          codec_type: HTTP2", routes, &static_cluster("web", upstream.address.port(), None));
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, upstream, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_gets_goaway() {
    let (_proxy, _upstream, listener) = start("rapid-reset").await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    for index in 0..2000u32 {
        let stream = 2 * index + 1;
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, stream, GET_ROOT));
        bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }

    let outcome = send(listener, &bytes).await;
    assert!(outcome.closed, "the proxy closes a connection that resets streams as fast as it opens them");
    assert_eq!(outcome.goaway_code, Some(ENHANCE_YOUR_CALM), "with GOAWAY ENHANCE_YOUR_CALM");

    let client = Http2Client::connect(listener).await;
    assert_eq!(client.get("t", "/after").await.unwrap().0, 200, "the listener keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let (_proxy, upstream, listener) = start("continuation").await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frame(HEADERS, END_STREAM, 1, GET_ROOT));
    // About 12 MiB of header fields in CONTINUATION frames that never end
    // the header block.
    for index in 0..100_000 {
        bytes.extend(frame(CONTINUATION, 0, 1, &literal_header(index)));
    }

    let outcome = send(listener, &bytes).await;
    assert!(outcome.closed, "the proxy does not keep reading a header block without end");
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");

    let client = Http2Client::connect(listener).await;
    assert_eq!(client.get("t", "/after").await.unwrap().0, 200, "the listener keeps serving");
}
