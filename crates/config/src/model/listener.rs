//! Listeners and their HTTP connection manager.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::Http2Settings;
use super::route::RouteConfiguration;

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// Filter chains in config order. At most one has no server names: the
    /// default chain, used when no other chain matches the SNI.
    pub filter_chains: Vec<FilterChain>,
}

impl Listener {
    /// Returns whether any filter chain terminates TLS.
    pub fn has_tls(&self) -> bool {
        self.filter_chains.iter().any(|chain| chain.tls.is_some())
    }

    /// Returns the longest drain timeout among the filter chains.
    pub fn drain_timeout(&self) -> Duration {
        self.filter_chains.iter().map(|chain| chain.http.drain_timeout).max().unwrap_or_default()
    }
}

/// One filter chain: which connections it takes and how it serves them.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterChain {
    /// `filter_chain_match.server_names`, lowercased: exact names and
    /// `*.suffix` wildcards. Empty matches any connection.
    pub server_names: Vec<String>,
    /// The `DownstreamTlsContext` of its transport socket; `None` is plaintext.
    pub tls: Option<Arc<super::DownstreamTls>>,
    pub http: HttpConnectionManager,
    /// `transport_socket_connect_timeout`: time allowed for the TLS
    /// handshake, 10 seconds by default. Zero disables it.
    pub handshake_timeout: Duration,
}

/// Which HTTP versions a listener accepts from downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1, or HTTP/2 with prior knowledge, told apart by the preface.
    Auto,
    Http1,
    Http2,
}

/// Where a connection manager gets its route table.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSource {
    /// A route configuration fetched by name over ADS (RDS).
    Rds(String),
    Inline(Arc<RouteConfiguration>),
}

/// An upgrade protocol (such as `websocket`) and whether it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Protocol token, lowercased, as sent in the `Upgrade` header.
    pub upgrade_type: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: RouteSource,
    /// Closes a stream with no activity for this long; `None` disables it.
    /// Envoy's default is 5 minutes.
    pub stream_idle_timeout: Option<Duration>,
    /// Closes an upgraded connection (WebSocket) with no byte either way for
    /// this long: `stream_idle_timeout` when set, otherwise 1 hour, because
    /// long-lived WebSockets are often quiet for minutes.
    pub upgrade_idle_timeout: Option<Duration>,
    /// Time allowed to receive a whole request; `None` disables it.
    pub request_timeout: Option<Duration>,
    /// Closes a downstream connection with no active stream for this long.
    pub idle_timeout: Option<Duration>,
    /// Grace period for in-flight streams when the listener drains.
    pub drain_timeout: Duration,
    pub upgrades: Vec<UpgradeConfig>,
    pub http2: Http2Settings,
    /// The HTTP filters in config order, the router last.
    /// Access logs written for every request, in order.
    pub access_logs: Vec<super::AccessLog>,
    pub http_filters: Vec<super::HttpFilter>,
    pub forward_client_cert: super::ForwardClientCert,
    pub set_current_client_cert: super::ClientCertDetails,
}
