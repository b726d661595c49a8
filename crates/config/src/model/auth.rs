//! Settings of the authentication and rate limit HTTP filters, and what a
//! route's or virtual host's `typed_per_filter_config` sets for them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// `envoy.filters.http.ext_authz` with `ExtAuthzPerRoute { disabled: true }`
    /// (or a `FilterConfig` with `disabled: true`) on the route or its virtual host.
    pub ext_authz_disabled: bool,
    /// `envoy.filters.http.jwt_authn`: its `PerRouteConfig`.
    pub jwt_authn: Option<super::JwtPerRoute>,
    /// `envoy.filters.http.grpc_json_transcoder` turned off on the route or its virtual host.
    pub grpc_json_transcoder_disabled: bool,
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

/// `envoy.filters.http.ext_authz`: asks an authorization service about
/// each request before it goes upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthz {
    pub service: ExtAuthzService,
    /// Passes requests when the service cannot be asked or fails; Envoy's
    /// default, false, rejects them with `status_on_error`.
    pub failure_mode_allow: bool,
    /// Status of a request rejected because the service failed; default 403.
    pub status_on_error: u16,
    /// `allowed_headers`: request headers sent to the service. Empty sends
    /// every header to a gRPC service, and to an HTTP service only the
    /// headers it always gets.
    pub allowed_headers: Vec<super::HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExtAuthzService {
    /// `http_service`: the request's method, path and allowed headers are
    /// sent to the cluster, and a 200 reply allows it.
    Http(HttpAuthService),
    /// `grpc_service` with `envoy_grpc`: `envoy.service.auth.v3.Authorization/Check`.
    Grpc { cluster: String, timeout: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpAuthService {
    pub cluster: String,
    /// Time allowed for the call; `server_uri.timeout`, default 200 ms.
    pub timeout: Duration,
    /// Put in front of the request's path (with its query string).
    pub path_prefix: String,
    /// `authorization_request.allowed_headers`, the older form of the
    /// filter's `allowed_headers`: request headers sent besides the ones
    /// always sent (`Authorization`, `Host`, `Method`, `Path`).
    pub allowed_headers: Vec<super::HeaderMatch>,
    pub headers_to_add: Vec<(HeaderName, http::HeaderValue)>,
    /// Headers of an allowing reply that are set on the upstream request.
    pub allowed_upstream_headers: Vec<super::HeaderMatch>,
    /// Headers of a denying reply passed to the client, with `Location` and
    /// `WWW-Authenticate`; empty passes all.
    pub allowed_client_headers: Vec<super::HeaderMatch>,
}
