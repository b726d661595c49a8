//! Route configurations: virtual hosts, routes, matchers and actions.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfiguration {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// A switch that leaves the port of the request's host out when the
    /// virtual host is picked. As in Envoy, the port takes part by default.
    pub ignore_port_in_host_matching: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<DomainMatcher>,
    pub routes: Vec<Route>,
}

/// One entry of a virtual host's `domains`, matched against the request's
/// host ignoring case. The port takes part unless the route configuration
/// sets `ignore_port_in_host_matching`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatcher {
    /// `example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`, stored as `.example.com`; matches at least one
    /// character before the suffix.
    Suffix(String),
    /// `example.*`, stored as `example.`.
    Prefix(String),
    /// `*`.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// The route's CORS policy, else its virtual host's.
    pub cors: Option<Arc<super::CorsPolicy>>,
    /// Per-route settings of the authentication and rate limit filters.
    pub filter_configs: super::RouteFilterConfigs,
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    /// Matches only gRPC requests (`content-type: application/grpc` or
    /// `application/grpc+...`), as Envoy's `grpc: {}`.
    pub grpc: bool,
}

impl PartialEq for RouteMatch {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.case_sensitive == other.case_sensitive && self.headers == other.headers && self.grpc == other.grpc
    }
}

/// How a route matches the request path (without the query string).
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Must match the whole path.
    Regex(Regex),
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatch::Prefix(a), PathMatch::Prefix(b)) | (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatcher {
    /// Header name, lowercased.
    pub name: String,
    pub matcher: HeaderMatch,
    pub invert: bool,
    /// Treat an absent header as an empty value instead of a failed match.
    pub treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    /// Matches when the header is present (`true`) or absent (`false`).
    Present(bool),
    Exact { value: String, ignore_case: bool },
    Prefix { value: String, ignore_case: bool },
    Suffix { value: String, ignore_case: bool },
    Contains { value: String, ignore_case: bool },
    /// Must match the whole value.
    Regex(Regex),
}

impl PartialEq for HeaderMatch {
    fn eq(&self, other: &Self) -> bool {
        use HeaderMatch::*;
        match (self, other) {
            (Present(a), Present(b)) => a == b,
            (Exact { value: a, ignore_case: x }, Exact { value: b, ignore_case: y })
            | (Prefix { value: a, ignore_case: x }, Prefix { value: b, ignore_case: y })
            | (Suffix { value: a, ignore_case: x }, Suffix { value: b, ignore_case: y })
            | (Contains { value: a, ignore_case: x }, Contains { value: b, ignore_case: y }) => a == b && x == y,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    Forward(Box<ForwardAction>),
    /// Answers without contacting an upstream.
    DirectResponse { status: u16, body: Arc<[u8]> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAction {
    pub clusters: ClusterSelection,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<HostRewrite>,
    /// Time allowed for the upstream's whole response; `None` disables it.
    /// Envoy's default of 15 seconds applies when the route sets none.
    pub timeout: Option<Duration>,
    /// Closes the stream after this long without activity. `None` falls back
    /// to the connection manager's stream idle timeout, and zero turns the
    /// idle timeout off.
    pub idle_timeout: Option<Duration>,
    /// Per-route overrides of the connection manager's upgrade settings.
    pub upgrades: Vec<super::UpgradeConfig>,
    /// How a request is hashed for RING_HASH and MAGLEV clusters.
    pub hash_policies: Vec<HashPolicy>,
    /// Frame-aware WebSocket relaying; `None` pipes bytes.
    pub websocket_frames: Option<WebSocketFrames>,
    /// The route's `max_stream_duration`; when set, `timeout` is `None`.
    pub max_stream_duration: Option<super::MaxStreamDuration>,
    /// Circuit-breaker thresholds the route's requests count against.
    pub priority: super::Priority,
    /// The route's retry policy, or its virtual host's when it has none.
    pub retry_policy: Option<RetryPolicy>,
}

/// Envoy's `RetryPolicy`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Retries after the first try; Envoy's default is 1.
    pub num_retries: u32,
    /// Time allowed for each try; `None` leaves only the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// Envoy's defaults: 25 ms, and 10 times the base.
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// Retries prefer endpoints not tried yet for the request.
    pub avoid_previous_hosts: bool,
    /// Picks made to find an endpoint not tried yet; Envoy's default is 1.
    pub host_selection_max_attempts: u32,
    pub retriable_status_codes: Vec<u16>,
}

/// The conditions of `retry_on`, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    pub const SERVER_ERROR: u32 = 1 << 0;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    pub const REFUSED_STREAM: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const GRPC_CANCELLED: u32 = 1 << 7;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const GRPC_INTERNAL: u32 = 1 << 9;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 10;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 11;

    /// Parses Envoy's comma-separated `retry_on` (also the value of the
    /// `x-envoy-retry-on` header); returns the first unknown token on error.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut bits = 0;
        for token in text.split(',').map(str::trim).filter(|token| !token.is_empty()) {
            bits |= match token {
                "5xx" => Self::SERVER_ERROR,
                "gateway-error" => Self::GATEWAY_ERROR,
                "reset" => Self::RESET,
                "connect-failure" => Self::CONNECT_FAILURE,
                "retriable-4xx" => Self::RETRIABLE_4XX,
                "refused-stream" => Self::REFUSED_STREAM,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
                "cancelled" => Self::GRPC_CANCELLED,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
                "internal" => Self::GRPC_INTERNAL,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => Self::GRPC_UNAVAILABLE,
                unknown => return Err(unknown.to_string()),
            };
        }
        Ok(RetryOn(bits))
    }

    pub fn has(self, bits: u32) -> bool {
        self.0 & bits != 0
    }

    /// Whether a gRPC status code is one of the retried gRPC conditions.
    pub fn retries_grpc_status(self, code: u32) -> bool {
        match code {
            1 => self.has(Self::GRPC_CANCELLED),
            4 => self.has(Self::GRPC_DEADLINE_EXCEEDED),
            8 => self.has(Self::GRPC_RESOURCE_EXHAUSTED),
            13 => self.has(Self::GRPC_INTERNAL),
            14 => self.has(Self::GRPC_UNAVAILABLE),
            _ => false,
        }
    }
}

/// Settings of frame-aware WebSocket relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketFrames {
    /// Largest message accepted; a larger one closes with code 1009.
    pub max_message_bytes: usize,
}

/// One source of a request's hash, as Envoy's route `hash_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub source: HashSource,
    /// Stops at this policy when it produced a hash.
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    /// A request header, lowercased name.
    Header(String),
    /// A cookie. With a `ttl`, a request without the cookie gets one made
    /// by the proxy, sent back in `Set-Cookie`.
    Cookie { name: String, ttl: Option<Duration>, path: Option<String> },
    /// The downstream client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClusterSelection {
    Single(String),
    /// Picks a cluster at random in proportion to the weights.
    Weighted { clusters: Vec<WeightedCluster>, total_weight: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub host_rewrite: Option<HostRewrite>,
}

/// The host a route sends upstream in place of the downstream one, parsed
/// when the route table loads: as `Host` for HTTP/1.1 and as `:authority`
/// for HTTP/2.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRewrite {
    pub header: http::HeaderValue,
    pub authority: http::uri::Authority,
}

impl ClusterSelection {
    /// Every cluster name this selection can pick.
    pub fn cluster_names(&self) -> Vec<&str> {
        match self {
            ClusterSelection::Single(name) => vec![name.as_str()],
            ClusterSelection::Weighted { clusters, .. } => clusters.iter().map(|c| c.name.as_str()).collect(),
        }
    }
}
