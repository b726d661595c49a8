//! The gRPC-JSON transcoder: plain HTTP/JSON clients call the gRPC test
//! service (tests/proto/library.proto) through the proxy, and get what a
//! gRPC client gets for the same calls.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::support::grpc::{echo as library, DESCRIPTOR_SET};
use crate::support::library::{library_client, LibraryUpstream};
use crate::support::*;

const TRANSCODER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";

/// A response as a JSON client sees it.
struct JsonResponse {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl JsonResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| panic!("{error}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one HTTP/1.1 request with an optional JSON body.
async fn call(address: SocketAddr, method: &str, path: &str, body: Option<&str>) -> JsonResponse {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder().method(method).uri(path).header("host", "api.test");
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default().to_string()))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    JsonResponse { status, headers, body }
}

/// Converts a message a tonic client received to proto3 JSON with the
/// test descriptors, as the transcoder prints it by default.
fn to_json<M: Message>(message: &M, name: &str) -> Value {
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name(name).unwrap();
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).unwrap();
    serde_json::to_value(&dynamic).unwrap()
}

/// One listener's transcoder settings, added to the common ones.
struct TranscodedListener<'a> {
    name: &'a str,
    descriptor: &'a str,
    extra: &'a str,
}

/// Writes a bootstrap with one listener per entry of `listeners`, each running
/// grpc_web and the transcoder in front of the `library` cluster.
fn bootstrap(upstream: SocketAddr, listeners: &[TranscodedListener<'_>]) -> String {
    let mut config = String::from(
        "node: { id: transcoder }\nadmin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\nstatic_resources:\n  listeners:\n",
    );
    for listener in listeners {
        config.push_str(&listener_yaml(listener.name, &transcoder_yaml(listener.descriptor, listener.extra)));
    }
    config.push_str(&format!(
        r#"  clusters:
  - name: library
    connect_timeout: 1s
    http2_protocol_options: {{}}
    load_assignment:
      cluster_name: library
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
"#,
        upstream.port()
    ));
    config
}

/// Writes the transcoder's typed_config as one YAML flow mapping.
fn transcoder_yaml(descriptor: &str, extra: &str) -> String {
    format!(
        r#"{{ "@type": {TRANSCODER_TYPE}, {descriptor}, services: [legate.test.Library], convert_grpc_status: true, auto_mapping: true, request_validation_options: {{ reject_unknown_method: true }}, max_request_body_size: 4096 {extra} }}"#
    )
}

fn inline_descriptor() -> String {
    format!("proto_descriptor_bin: \"{}\"", base64::engine::general_purpose::STANDARD.encode(DESCRIPTOR_SET))
}

fn listener_yaml(name: &str, transcoder: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/v1/books/42/cover" }}
                direct_response: {{ status: 200, body: {{ inline_string: "not transcoded" }} }}
                typed_per_filter_config:
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoderPerRoute
                    disabled: true
              - match: {{ prefix: "/legate.test.Library/" }}
                route: {{ cluster: library }}
              - match: {{ prefix: "/v1/files/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "matched the incoming route" }} }}
              - match: {{ prefix: "/v1/" }}
                route: {{ cluster: library }}
          http_filters:
          - name: envoy.filters.http.grpc_web
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb }}
          - name: envoy.filters.http.grpc_json_transcoder
            typed_config: {transcoder}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

/// Starts the test service and a proxy with the default listener `json`.
async fn setup(label: &str) -> (LibraryUpstream, Proxy, SocketAddr) {
    let upstream = LibraryUpstream::start().await;
    let dir = temp_dir(label);
    let descriptor = inline_descriptor();
    let proxy = Proxy::start(&bootstrap(upstream.address, &[TranscodedListener { name: "json", descriptor: &descriptor, extra: "" }]), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("json").await;
    (upstream, proxy, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_calls_match_grpc_calls() {
    let (upstream, _proxy, address) = setup("transcode-unary").await;
    let mut grpc = library_client(upstream.address).await;

    // GET with path variables, a repeated and a nested query parameter, an
    // enum by name and a wrapper by its JSON name.
    let path = "/v1/shelves/s%201/books/9007199254740993?genre=HISTORY&tags=a&tags=b&paging.size=5&paging.token=t&minRating=4";
    let response = call(address, "GET", path, None).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    let request = library::GetBookRequest {
        shelf: "s 1".into(),
        id: 9_007_199_254_740_993,
        genre: library::Genre::History as i32,
        tags: vec!["a".into(), "b".into()],
        paging: Some(library::Paging { size: 5, token: "t".into() }),
        min_rating: Some(4),
        with_cover: false,
    };
    let expected = grpc.get_book(request.clone()).await.unwrap().into_inner();
    assert_eq!(response.json(), to_json(&expected, "legate.test.Book"));
    assert_eq!(response.json()["id"], "9007199254740993", "int64 is a string");
    assert_eq!(response.json()["authors"][1]["name"], "b");

    // An additional binding of the same method.
    let response = call(address, "GET", "/v1/books/7", None).await;
    let expected = grpc.get_book(library::GetBookRequest { id: 7, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(response.json(), to_json(&expected, "legate.test.Book"));

    // POST with a body field and a path variable.
    let body = r#"{"title": "Dune", "genre": "FICTION", "authors": [{"name": "Frank"}]}"#;
    let response = call(address, "POST", "/v1/shelves/scifi/books", Some(body)).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let book = library::Book {
        title: "Dune".into(),
        genre: library::Genre::Fiction as i32,
        authors: vec![library::Author { name: "Frank".into(), tags: vec![] }],
        ..Default::default()
    };
    let expected = grpc.create_book(library::CreateBookRequest { shelf: "scifi".into(), book: Some(book) }).await.unwrap().into_inner();
    assert_eq!(response.json(), to_json(&expected, "legate.test.Book"));
    assert_eq!(response.json()["shelf"], "scifi");

    // response_body: only the title, as a JSON string.
    let response = call(address, "GET", "/v1/shelves/s/books/3/title", None).await;
    assert_eq!(response.json(), json!("book 3"));

    // `**` binds the rest of the path, slashes included.
    let response = call(address, "DELETE", "/v1/files/a/b/c.txt", None).await;
    assert_eq!(response.json()["title"], "a/b/c.txt");

    // google.api.HttpBody goes out raw.
    let response = call(address, "GET", "/v1/books/3/cover", None).await;
    assert_eq!(response.headers["content-type"], "image/png");
    assert_eq!(&response.body[..], &[0x89, b'P', b'N', b'G', 3]);

    // A google.api.HttpBody request field takes the body raw, with its content type.
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let upload = hyper::Request::put("/v1/books/8/cover")
        .header("host", "api.test")
        .header("content-type", "image/gif")
        .body(Full::new(Bytes::from_static(&[0x47, 0x49, 0x46, 0xff])))
        .unwrap();
    let uploaded = sender.send_request(upload).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let uploaded: Value = serde_json::from_slice(&uploaded).unwrap();
    assert_eq!(uploaded, json!({ "id": "8", "title": "image/gif", "cover": "R0lG/w==" }));

    // auto_mapping: a method without a rule, at its gRPC path.
    let response = call(address, "POST", "/legate.test.Library/Echo", Some(r#"{"title": "echo"}"#)).await;
    assert_eq!(response.json(), json!({ "title": "echo" }));

    // A route that turns the filter off is not transcoded.
    let response = call(address, "GET", "/v1/books/42/cover", None).await;
    assert_eq!(&response.body[..], b"not transcoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stream_is_a_json_array() {
    let (upstream, _proxy, address) = setup("transcode-stream").await;
    let mut grpc = library_client(upstream.address).await;

    let response = call(address, "GET", "/v1/shelves/s/books?count=3", None).await;
    assert_eq!(response.status, 200);
    let request = library::ListBooksRequest { shelf: "s".into(), count: 3, ..Default::default() };
    let mut stream = grpc.list_books(request).await.unwrap().into_inner();
    let mut expected = Vec::new();
    while let Some(book) = stream.message().await.unwrap() {
        expected.push(to_json(&book, "legate.test.Book"));
    }
    assert_eq!(expected.len(), 3);
    assert_eq!(response.json(), Value::Array(expected));

    let response = call(address, "GET", "/v1/shelves/s/books?count=0", None).await;
    assert_eq!(response.json(), json!([]));

    // An error after two books: the array ends with the status.
    let response = call(address, "GET", "/v1/shelves/s/books?count=2&failCode=14", None).await;
    let items = response.json();
    assert_eq!(items.as_array().unwrap().len(), 3, "{items}");
    assert_eq!(items[2], json!({ "error": { "code": 14, "message": "the shelf fell over" } }));

    // Each book goes out as it arrives: the first frame has only the first
    // book while the upstream waits before the second.
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/v1/shelves/s/books?count=2&delayMs=1500").header("host", "api.test").body(Full::new(Bytes::new())).unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap().into_data().unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert!(first.contains("book 0"), "the first frame: {first}");
    assert!(!first.contains("book 1"), "the first frame: {first}");
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("book 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_map_to_http_statuses() {
    let (upstream, _proxy, address) = setup("transcode-errors").await;
    let mut grpc = library_client(upstream.address).await;

    let body = r#"{"code": 5, "message": "no such book", "field": "id"}"#;
    let response = call(address, "POST", "/v1/fail", Some(body)).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.headers["content-type"], "application/json");
    let expected = json!({
        "code": 5,
        "message": "no such book",
        "details": [{ "@type": "type.googleapis.com/legate.test.BadField", "field": "id", "reason": "invalid" }],
    });
    assert_eq!(response.json(), expected);
    let status = grpc.fail(library::FailRequest { code: 5, message: "no such book".into(), field: "id".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no such book");

    for (code, http_status) in [(3, 400), (16, 401), (7, 403), (14, 503), (8, 429), (12, 501), (4, 504), (6, 409), (13, 500)] {
        let body = format!(r#"{{"code": {code}, "message": "m{code}"}}"#);
        let response = call(address, "POST", "/v1/fail", Some(&body)).await;
        assert_eq!(response.status, http_status, "gRPC code {code}");
        assert_eq!(response.json()["code"], code);
        assert_eq!(response.json()["message"], format!("m{code}"));
    }
}

/// Replies the proxy makes itself reach JSON clients as JSON statuses, with
/// the code a gRPC client would get for the same failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_reach_json_clients_as_json() {
    let upstream = LibraryUpstream::start().await;
    let descriptor = inline_descriptor();
    let config = bootstrap(upstream.address, &[TranscodedListener { name: "json", descriptor: &descriptor, extra: "" }]);
    let generic = "              - match: { prefix: \"/legate.test.Library/\" }\n";
    let timed = "              - match: { path: \"/legate.test.Library/ListBooks\" }\n                route: { cluster: library, timeout: 1s }\n";
    assert!(config.contains(generic));
    let config = config.replacen(generic, &format!("{timed}{generic}"), 1);
    let proxy = Proxy::start(&config, &temp_dir("transcode-local-replies"));
    proxy.wait_ready().await;
    let address = proxy.listener("json").await;

    // The route timeout passes after the first book of a slow stream: the
    // array ends with DEADLINE_EXCEEDED, as a gRPC client's call does.
    let response = call(address, "GET", "/v1/shelves/s/books?count=3&delayMs=3000", None).await;
    assert_eq!(response.status, 200);
    let items = response.json();
    assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
    assert_eq!(items[1]["error"]["code"], 4, "{items}");
    assert_eq!(items[1]["error"]["message"], "upstream request timeout");

    // With no upstream listening, the proxy's own reply is a JSON status too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = bootstrap(closed, &[TranscodedListener { name: "json", descriptor: &descriptor, extra: "" }]);
    let unreachable = Proxy::start(&config, &temp_dir("transcode-no-upstream"));
    unreachable.wait_ready().await;
    let response = call(unreachable.listener("json").await, "GET", "/v1/books/1", None).await;
    assert_eq!(response.status, 503, "{:?}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.headers["content-type"], "application/json");
    let status = response.json();
    assert_eq!(status["code"], 14, "{status}");
    assert!(status["message"].as_str().is_some_and(|message| message.contains("upstream")), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto3_json_edge_cases() {
    let upstream = LibraryUpstream::start().await;
    let dir = temp_dir("transcode-edge");
    let descriptor_file = dir.join("library.pb");
    std::fs::write(&descriptor_file, DESCRIPTOR_SET).unwrap();
    let from_file = format!("proto_descriptor: \"{}\"", descriptor_file.display());
    let printed = ", match_incoming_request_route: true, print_options: { preserve_proto_field_names: true, always_print_enums_as_ints: true, always_print_primitive_fields: true, add_whitespace: true, stream_newline_delimited: true }";
    let inline = inline_descriptor();
    let listeners = [
        TranscodedListener { name: "json", descriptor: &inline, extra: "" },
        TranscodedListener { name: "printed", descriptor: &from_file, extra: printed },
    ];
    let proxy = Proxy::start(&bootstrap(upstream.address, &listeners), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("json").await;
    let mut grpc = library_client(upstream.address).await;

    // int64 beyond 2^53 in the path, uint64 max as a string, bytes as
    // base64, an enum by number, Timestamp, Duration, a wrapper, a Struct
    // and a nested repeated message.
    let body = r#"{
        "title": "Edge", "cover": "AAEC/w==", "genre": 2, "published": "2024-01-02T03:04:05.006Z",
        "readTime": "1.500s", "rating": 7, "extra": {"k": [1, "two", null, true]},
        "authors": [{"name": "a", "tags": ["x", "y"]}, {"name": "b"}], "copies": "18446744073709551615"
    }"#;
    let response = call(address, "PATCH", "/v1/books/9007199254740993", Some(body)).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let printed = response.json();
    assert_eq!(printed["id"], "9007199254740993");
    assert_eq!(printed["copies"], "18446744073709551615");
    assert_eq!(printed["cover"], "AAEC/w==");
    assert_eq!(printed["genre"], "HISTORY", "a number in, the name out");
    assert_eq!(printed["published"], "2024-01-02T03:04:05.006Z");
    assert_eq!(printed["readTime"], "1.500s");
    assert_eq!(printed["rating"], 7);
    assert_eq!(printed["extra"], json!({"k": [1.0, "two", null, true]}));
    assert_eq!(printed["authors"], json!([{"name": "a", "tags": ["x", "y"]}, {"name": "b"}]));
    assert!(printed.get("subtitle").is_none(), "a missing optional field stays missing: {printed}");

    let book = library::Book {
        id: 9_007_199_254_740_993,
        title: "Edge".into(),
        cover: vec![0, 1, 2, 255],
        genre: library::Genre::History as i32,
        published: Some(prost_types::Timestamp { seconds: 1_704_164_645, nanos: 6_000_000 }),
        read_time: Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }),
        rating: Some(7),
        extra: Some(prost_types::Struct {
            fields: [(
                "k".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::ListValue(prost_types::ListValue {
                        values: vec![
                            prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(1.0)) },
                            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("two".into())) },
                            prost_types::Value { kind: Some(prost_types::value::Kind::NullValue(0)) },
                            prost_types::Value { kind: Some(prost_types::value::Kind::BoolValue(true)) },
                        ],
                    })),
                },
            )]
            .into(),
        }),
        authors: vec![
            library::Author { name: "a".into(), tags: vec!["x".into(), "y".into()] },
            library::Author { name: "b".into(), tags: vec![] },
        ],
        subtitle: None,
        copies: u64::MAX,
        shelf: String::new(),
    };
    let expected = grpc.update_book(book).await.unwrap().into_inner();
    assert_eq!(printed, to_json(&expected, "legate.test.Book"));

    // An enum by name in, and an empty optional field present.
    let response = call(address, "PATCH", "/v1/books/1", Some(r#"{"genre": "FICTION", "subtitle": ""}"#)).await;
    assert_eq!(response.json(), json!({ "id": "1", "genre": "FICTION", "subtitle": "" }));

    // print_options on the second listener, and a descriptor set read from a file.
    let printed_address = proxy.listener("printed").await;
    let response = call(printed_address, "PATCH", "/v1/books/1", Some(r#"{"genre": "FICTION", "readTime": "2s"}"#)).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    assert!(text.contains("\n  \""), "add_whitespace indents: {text}");
    let printed = response.json();
    assert_eq!(printed["genre"], 1, "enums as ints");
    assert_eq!(printed["read_time"], "2s", "proto field names");
    assert_eq!(printed["title"], "", "primitive fields always printed");
    assert_eq!(printed["copies"], "0");

    // match_incoming_request_route: the route is chosen by the JSON path.
    let response = call(printed_address, "DELETE", "/v1/files/x", None).await;
    assert_eq!(&response.body[..], b"matched the incoming route");
    let response = call(address, "DELETE", "/v1/files/x", None).await;
    assert_eq!(response.json()["title"], "x", "the other listener routes by the gRPC path");

    let response = call(printed_address, "GET", "/v1/shelves/s/books?count=2", None).await;
    assert_eq!(response.headers["content-type"], "application/x-ndjson");
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with('{')).collect();
    assert!(text.ends_with("}\n"), "{text}");
    assert_eq!(text.matches("\"shelf\": \"s\"").count(), 2, "two messages: {text}");
    assert!(!lines.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_reaches_upstream() {
    let (upstream, _proxy, address) = setup("transcode-bad").await;

    let cases = [
        ("POST", "/v1/shelves/s/books", Some(r#"{"title": "#), 400, "not valid JSON"),
        ("PATCH", "/v1/books/1", Some(r#"{"titel": "x"}"#), 400, "titel"),
        ("PATCH", "/v1/books/1", Some(r#"{"rating": "seven"}"#), 400, "rating"),
        ("PATCH", "/v1/books/1", Some(r#"["not", "an", "object"]"#), 400, "JSON object"),
        ("POST", "/v1/shelves/s/books", Some(r#"{"genre": "POETRY"}"#), 400, "genre"),
        ("GET", "/v1/books/abc", None, 400, "\"id\""),
        ("GET", "/v1/books/1?colour=red", None, 400, "colour"),
        ("GET", "/v1/books/1?paging=x", None, 400, "paging"),
        ("GET", "/v1/nothing/here", None, 404, "/v1/nothing/here"),
        ("PUT", "/v1/books/1", None, 404, "PUT /v1/books/1"),
    ];
    for (method, path, body, status, needle) in cases {
        let response = call(address, method, path, body).await;
        assert_eq!(response.status, status, "{method} {path}: {:?}", response.body);
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{method} {path}: {message:?} names {needle:?}");
    }

    let large = format!(r#"{{"title": "{}"}}"#, "x".repeat(5000));
    let response = call(address, "PATCH", "/v1/books/1", Some(&large)).await;
    assert_eq!(response.status, 413);

    assert_eq!(upstream.calls(), 0, "no bad request reached the upstream");
    let response = call(address, "GET", "/v1/books/1", None).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.calls(), 1);
}

/// Sends a gRPC-Web call over HTTP/1.1 and returns its single message.
async fn grpc_web_call(address: SocketAddr, path: &str, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let request = hyper::Request::post(path)
        .header("host", "api.test")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body[0], 0, "a data frame first");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body[5..5 + length].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_grpc_web_and_json_share_a_listener() {
    let (upstream, _proxy, address) = setup("transcode-mixed").await;
    let request = library::GetBookRequest { id: 11, shelf: "mixed".into(), ..Default::default() };
    let encoded = request.encode_to_vec();

    for _ in 0..3 {
        let grpc = async {
            let mut client = library_client(address).await;
            client.get_book(request.clone()).await.unwrap().into_inner()
        };
        let web = grpc_web_call(address, "/legate.test.Library/GetBook", &encoded);
        let rest = call(address, "GET", "/v1/shelves/mixed/books/11", None);
        let (grpc, web, rest) = tokio::join!(grpc, web, rest);
        let web = library::Book::decode(web.as_slice()).unwrap();
        assert_eq!(grpc, web, "gRPC and gRPC-Web answers match");
        assert_eq!(rest.json(), to_json(&grpc, "legate.test.Book"), "JSON matches gRPC");
    }
    assert_eq!(upstream.calls(), 3 * 3);
}

/// Writes an xDS config of the `library` cluster and a listener whose
/// transcoder translates `services`.
fn xds_config(upstream: SocketAddr, services: &str) -> String {
    let transcoder = transcoder_yaml(&inline_descriptor(), "").replace("services: [legate.test.Library]", &format!("services: [{services}]"));
    let listener = listener_yaml("json", &transcoder);
    // The listener YAML is written for a bootstrap list; xDS resources sit
    // two columns to the left.
    let listener: String = listener.lines().map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line))).collect();
    let listener = listener.replacen("- name: json", "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: json", 1);
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: library
  type: STATIC
  connect_timeout: 1s
  http2_protocol_options: {{}}
  load_assignment:
    cluster_name: library
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
{listener}"#,
        upstream.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_update_through_xds() {
    let upstream = LibraryUpstream::start().await;
    let dir = temp_dir("transcode-xds");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let applied = control_plane.apply(&xds_config(upstream.address, "legate.test.Echo"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let proxy = Proxy::start(&ads_bootstrap("transcode-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let address = proxy.listener("json").await;

    // The Echo service has no HTTP rules, so nothing maps to the library.
    let response = call(address, "GET", "/v1/books/5", None).await;
    assert_eq!(response.status, 404);

    let applied = control_plane.apply(&xds_config(upstream.address, "legate.test.Library"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let mapped = eventually(Duration::from_secs(10), || async { call(address, "GET", "/v1/books/5", None).await.status == 200 }).await;
    assert!(mapped, "the new services list takes effect");
    assert_eq!(call(address, "GET", "/v1/books/5", None).await.json()["title"], "book 5");

    // An unknown service is rejected, and the last good config stays.
    let rejected = control_plane.apply(&xds_config(upstream.address, "legate.test.Missing"));
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("legate.test.Missing"), "{}", String::from_utf8_lossy(&rejected.stderr));
    assert_eq!(call(address, "GET", "/v1/books/5", None).await.status, 200);
}
