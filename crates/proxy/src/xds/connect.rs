//! Connections to the control plane: plaintext, or TLS with the ADS
//! cluster's `UpstreamTlsContext` (server certificate checks and a client
//! certificate for mutual TLS).
//!
//! HTTP/2 pings detect a control-plane replica that stopped responding
//! without closing its connections (a frozen process, a lost host), so the
//! stream fails and the client moves on to the next endpoint of the ADS
//! cluster. A replica whose process ends closes its connections and is
//! detected at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use legate_config::model::UpstreamProtocol;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::UpstreamConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Interval of HTTP/2 pings on the ADS connection, even while idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Time a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a gRPC channel to `server` (`host:port`).
pub async fn channel(server: &str, tls: Option<&Arc<UpstreamConnector>>) -> Result<Channel, tonic::Status> {
    // The connector below runs the TLS handshake itself. tonic rejects an
    // https URI with a connector that is not its own, so the URI stays http.
    let endpoint = Endpoint::from_shared(format!("http://{server}"))
        .map_err(|error| tonic::Status::internal(error.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connected = match tls {
        None => endpoint.connect().await,
        Some(tls) => endpoint.connect_with_connector(TlsConnector(tls.clone())).await,
    };
    connected.map_err(|error| tonic::Status::unavailable(crate::tls::error_chain(&error)))
}

/// A tower connector that runs the TLS handshake, offering `h2` in ALPN.
#[derive(Clone)]
struct TlsConnector(Arc<UpstreamConnector>);

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the control plane timed out"))??;
            stream.set_nodelay(true)?;
            let address = stream.peer_addr()?;
            let stream = tls.connect(address, stream, UpstreamProtocol::Http2).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
