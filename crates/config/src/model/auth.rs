//! Settings of the authentication and rate limit HTTP filters, and what a
//! route's or virtual host's `typed_per_filter_config` sets for them.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;

/// `envoy.filters.http.api_key_auth`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiKeyAuth {
    pub credentials: Vec<ApiKeyCredential>,
    /// Sources of the key, in order. The first one the request carries wins.
    pub key_sources: Vec<KeySource>,
    pub forwarding: ApiKeyForwarding,
}

/// One API key and the client it identifies. `Debug` leaves the key out so
/// that no log or error message can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyCredential {
    pub key: String,
    pub client: String,
}

impl fmt::Debug for ApiKeyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyCredential").field("key", &"<redacted>").field("client", &self.client).finish()
    }
}

/// A place in the request that carries the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A header; a `Bearer ` prefix is removed from its value.
    Header(HeaderName),
    /// A query parameter, by name.
    Query(String),
    /// A cookie, by name.
    Cookie(String),
}

/// Changes made to an accepted request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKeyForwarding {
    /// Header set to the client's name.
    pub header: Option<HeaderName>,
    /// Removes the key from the request before it goes upstream.
    pub hide_credentials: bool,
}

/// Entries of a route's or virtual host's `typed_per_filter_config` for the
/// authentication and rate limit filters. A route's entry replaces its
/// virtual host's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteFilterConfigs {
    /// `envoy.filters.http.api_key_auth`.
    pub api_key_auth: Option<PerRoute<ApiKeyAuthPerRoute>>,
    /// `envoy.filters.http.local_ratelimit`: a bucket for the route, or for
    /// every route of the virtual host when the virtual host sets it.
    pub local_ratelimit: Option<PerRoute<super::LocalRateLimit>>,
    /// The route action's `rate_limits`, else its virtual host's.
    pub rate_limits: Arc<[super::RateLimit]>,
}

/// A filter's entry in `typed_per_filter_config`.
#[derive(Debug, Clone, PartialEq)]
pub enum PerRoute<T> {
    /// `envoy.config.route.v3.FilterConfig` with `disabled: true`: the
    /// filter does not run for the route.
    Disabled,
    /// The filter's own per-route message.
    Override(Arc<T>),
}

/// `ApiKeyAuthPerRoute`: an empty list keeps the filter's setting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiKeyAuthPerRoute {
    pub credentials: Vec<ApiKeyCredential>,
    pub key_sources: Vec<KeySource>,
    /// Clients allowed on the route; empty allows every known client.
    pub allowed_clients: Vec<String>,
    pub forwarding: Option<ApiKeyForwarding>,
}
