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
    /// Identity of the chain across listener updates: `name:` and its
    /// `name`, else `sni:` and its server names. A connection finds its chain
    /// again by it after an update reorders the chains.
    pub key: Arc<str>,
    /// `filter_chain_match.server_names`, lowercased: exact names and
    /// `*.suffix` wildcards. Empty matches any connection.
    pub server_names: Vec<String>,
    /// The `DownstreamTlsContext` of its transport socket; `None` is plaintext.
    pub tls: Option<Arc<super::DownstreamTls>>,
    pub http: HttpConnectionManager,
    /// The network filters before the connection manager, in config order,
    /// each kind at most once.
    pub connection_filters: Vec<super::ConnectionFilter>,
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
    pub limits: RequestLimits,
    pub path: PathNormalization,
    /// Access logs written for every request, in order.
    pub access_logs: Vec<super::AccessLog>,
    /// The HTTP filters in config order, the router last.
    pub http_filters: Vec<super::HttpFilter>,
    pub forward_client_cert: super::ForwardClientCert,
    pub set_current_client_cert: super::ClientCertDetails,
}

/// Limits on what a downstream may send before its request is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most bytes of request headers (`max_request_headers_kb`, default 60 KiB).
    pub max_header_bytes: u32,
    /// Most request headers (`max_headers_count`, default 100).
    pub max_headers: u32,
    /// Time allowed for the request headers to arrive; `None` disables it.
    /// Legate defaults to 60 seconds, where Envoy has no limit.
    pub headers_timeout: Option<Duration>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_header_bytes: 60 * 1024, max_headers: 100, headers_timeout: Some(Duration::from_secs(60)) }
    }
}

/// The request path rewrites applied before routing and the HTTP filters,
/// so that `/a/../admin` and `/%2e/admin` meet the same route as
/// `/admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNormalization {
    /// RFC 3986 normalization: decode escaped unreserved characters, turn
    /// backslashes into slashes and remove `.` and `..` segments. Legate
    /// defaults to on, where Envoy defaults to off.
    pub normalize: bool,
    /// Merge runs of slashes into one. Legate turns it on with `normalize`
    /// when `normalize_path` is left unset.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization { normalize: true, merge_slashes: true, escaped_slashes: EscapedSlashes::Keep }
    }
}

/// The action for a path that contains an escaped slash or backslash
/// (`%2F`, `%5C`), which normalization leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    Keep,
    /// Answer 400.
    Reject,
    /// Redirect to the unescaped path.
    UnescapeAndRedirect,
    UnescapeAndForward,
}
