//! The gRPC test service (tests/proto/echo.proto) served by tonic, and the
//! proxy config that routes to it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

/// The generated code of tests/proto, in modules named after the proto
/// packages so that its cross-package paths resolve.
pub mod protos {
    pub mod legate {
        pub mod test {
            include!(concat!(env!("OUT_DIR"), "/test_protos/legate.test.rs"));
        }
    }
    pub mod google {
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/test_protos/google.api.rs"));
        }
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/test_protos/google.rpc.rs"));
        }
    }
}

pub use protos::legate::test as echo;

use echo::echo_server::{Echo, EchoServer};
use echo::{EchoRequest, EchoResponse};

/// Largest message the test service and clients accept.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// One endpoint of the test service.
pub struct EchoUpstream {
    pub address: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    /// When the last server stream saw its client go away.
    pub cancelled_at: Arc<Mutex<Option<Instant>>>,
}

/// Descriptors of tests/proto, for the test service's reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/test_protos/descriptor_set.bin"));

#[derive(Clone)]
struct EchoService {
    name: &'static str,
    calls: Arc<AtomicUsize>,
    cancelled_at: Arc<Mutex<Option<Instant>>>,
}

impl EchoUpstream {
    pub async fn start(name: &'static str) -> EchoUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let cancelled_at = Arc::new(Mutex::new(None));
        let service = EchoService { name, calls: calls.clone(), cancelled_at: cancelled_at.clone() };
        let server = EchoServer::new(service).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        // Both reflection versions, since grpcurl releases differ in which
        // one they ask for.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .build_v1()
            .expect("the test descriptor set is valid");
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the test descriptor set is valid");
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .add_service(reflection)
                .add_service(reflection_alpha)
                .serve_with_incoming(TcpListenerStream::new(socket))
                .await
                .unwrap();
        });
        EchoUpstream { address, calls, cancelled_at }
    }

    /// Serves the echo service over TLS with `config`, on HTTP/2 only.
    /// `seen_server_names` records the SNI of each handshake.
    pub async fn start_tls(name: &'static str, config: Arc<tokio_rustls::rustls::ServerConfig>, seen_server_names: Arc<Mutex<Vec<Option<String>>>>) -> EchoUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let cancelled_at = Arc::new(Mutex::new(None));
        let server = EchoServer::new(EchoService { name, calls: calls.clone(), cancelled_at: cancelled_at.clone() });
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let (acceptor, server, seen) = (acceptor.clone(), server.clone(), seen_server_names.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    seen.lock().unwrap().push(stream.get_ref().1.server_name().map(str::to_owned));
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let mut server = server.clone();
                        async move { tonic::codegen::Service::call(&mut server, request).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoUpstream { address, calls, cancelled_at }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl EchoService {
    fn answer(&self, request: &EchoRequest, metadata: &MetadataMap, index: u32) -> EchoResponse {
        EchoResponse {
            message: request.message.clone(),
            payload: request.payload.clone(),
            endpoint: self.name.to_string(),
            grpc_timeout: metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            index,
        }
    }
}

/// Copies `x-echo` and `x-echo-bin` request metadata into `target`.
fn echo_metadata(from: &MetadataMap, target: &mut MetadataMap) {
    if let Some(value) = from.get("x-echo") {
        target.insert("x-echo", value.clone());
    }
    if let Some(value) = from.get_bin("x-echo-bin") {
        target.insert_bin("x-echo-bin", value.clone());
    }
}

fn failure(request: &EchoRequest, metadata: &MetadataMap) -> Option<Status> {
    if request.fail_code == 0 {
        return None;
    }
    let mut status_metadata = MetadataMap::new();
    echo_metadata(metadata, &mut status_metadata);
    status_metadata.insert_bin("x-detail-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
    Some(Status::with_metadata(tonic::Code::from_i32(request.fail_code as i32), request.fail_message.clone(), status_metadata))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        if message.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(message.sleep_ms))).await;
        }
        if let Some(status) = failure(&message, &metadata) {
            return Err(status);
        }
        let mut response = Response::new(self.answer(&message, &metadata, 0));
        echo_metadata(&metadata, response.metadata_mut());
        Ok(response)
    }

    type ServerStreamStream = ResponseStream;

    async fn server_stream(&self, request: Request<EchoRequest>) -> Result<Response<ResponseStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            for index in 0..message.count {
                if message.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(message.sleep_ms))).await;
                }
                let answer = service.answer(&message, &metadata, index);
                tokio::select! {
                    sent = sender.send(Ok(answer)) => if sent.is_err() { break },
                    _ = sender.closed() => break,
                }
            }
            if sender.is_closed() {
                *service.cancelled_at.lock().unwrap() = Some(Instant::now());
                return;
            }
            if let Some(status) = failure(&message, &metadata) {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn client_stream(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<EchoResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut count = 0;
        let mut joined = String::new();
        while let Some(message) = stream.next().await {
            let message = message?;
            joined.push_str(&message.message);
            count += 1;
        }
        let request = EchoRequest { message: joined, ..Default::default() };
        Ok(Response::new(self.answer(&request, &metadata, count)))
    }

    type BidiStreamStream = ResponseStream;

    async fn bidi_stream(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<ResponseStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let metadata = request.metadata().clone();
        let service = self.clone();
        let mut index = 0;
        let stream = request.into_inner().map(move |message| {
            let message = message?;
            index += 1;
            Ok(service.answer(&message, &metadata, index - 1))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A tonic client over one HTTP/2 connection to `address`.
pub async fn client(address: SocketAddr) -> echo::echo_client::EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    echo::echo_client::EchoClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

/// A static bootstrap routing `legate.test.Echo` to the given endpoints
/// (cluster `echo`, HTTP/2) with every gRPC filter on, `legate.test.Empty`
/// to a cluster without endpoints, and a CORS policy allowing
/// `allowed_origin`.
pub fn grpc_bootstrap(endpoints: &[SocketAddr], allowed_origin: &str) -> String {
    let lb_endpoints: String = endpoints
        .iter()
        .map(|a| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }},", a.port()))
        .collect();
    format!(
        r#"
node: {{ id: grpc }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: grpc
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{{ exact: "{allowed_origin}" }}]
                  allow_methods: "POST, OPTIONS"
                  allow_headers: "content-type,x-grpc-web,x-user-agent,grpc-timeout,x-echo"
                  expose_headers: "grpc-status,grpc-message,x-echo"
                  max_age: "600"
              routes:
              - match: {{ prefix: "/legate.test.Echo/", grpc: {{}} }}
                route:
                  cluster: echo
                  max_stream_duration: {{ grpc_timeout_header_max: 0s }}
              - match: {{ prefix: "/legate.test.Echo/" }}
                route: {{ cluster: echo }}
              - match: {{ prefix: "/legate.test.Empty/" }}
                route: {{ cluster: empty }}
              - match: {{ prefix: "/grpc.reflection." }}
                route: {{ cluster: echo }}
          http_filters:
          - name: envoy.filters.http.grpc_web
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb }}
          - name: envoy.filters.http.cors
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }}
          - name: envoy.filters.http.grpc_stats
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig
              individual_method_stats_allowlist:
                services: [{{ name: legate.test.Echo, method_names: [Unary, ServerStream, ClientStream, BidiStream] }}]
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: echo
    connect_timeout: 1s
    http2_protocol_options: {{}}
    load_assignment:
      cluster_name: echo
      endpoints: [{{ lb_endpoints: [{lb_endpoints}] }}]
  - name: empty
    connect_timeout: 1s
    http2_protocol_options: {{}}
    load_assignment: {{ cluster_name: empty, endpoints: [] }}
"#
    )
}
