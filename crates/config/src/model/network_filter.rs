//! Network filters that run on a new downstream connection before its
//! connection manager: the connection rate limit and the connection limit.

use std::time::Duration;

use super::TokenBucket;

/// A network filter of a filter chain other than the connection manager.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionFilter {
    /// `envoy.filters.network.local_ratelimit`.
    LocalRateLimit(ConnectionRateLimit),
    /// `envoy.filters.network.connection_limit`.
    ConnectionLimit(ConnectionLimit),
}

/// `envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit`: new
/// connections take a token from one bucket per filter chain config, and a
/// connection that finds it empty is closed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRateLimit {
    pub stat_prefix: String,
    pub token_bucket: TokenBucket,
    /// `runtime_enabled.default_value`, true when unset.
    pub enabled: bool,
}

/// `envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit`:
/// at most `max_connections` open connections per filter chain config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimit {
    pub stat_prefix: String,
    /// At least 1.
    pub max_connections: u64,
    /// Time a connection over the limit is held open, unread, before it is
    /// closed; `None` closes it at once.
    pub delay: Option<Duration>,
    /// `runtime_enabled.default_value`, true when unset.
    pub enabled: bool,
}
