//! HTTP filters of the connection manager and the gRPC, gRPC-Web and CORS
//! settings of routes.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderValue;

use super::HeaderMatch;

/// One entry of the connection manager's `http_filters`, in config order.
/// The router is always last.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.grpc_web`: translates gRPC-Web to gRPC and back.
    GrpcWeb,
    /// `envoy.filters.http.cors`: replies to preflights and adds CORS headers
    /// by the route's or virtual host's policy.
    Cors,
    /// `envoy.filters.http.grpc_stats`: per-method gRPC metrics.
    GrpcStats(GrpcStatsConfig),
    /// `envoy.filters.http.api_key_auth`: checks the request's API key.
    ApiKeyAuth(std::sync::Arc<super::ApiKeyAuth>),
    /// `envoy.filters.http.local_ratelimit`: token buckets per filter, virtual host or route.
    LocalRateLimit(std::sync::Arc<super::LocalRateLimit>),
    /// `envoy.filters.http.ext_authz`: asks an authorization service.
    ExtAuthz(std::sync::Arc<super::ExtAuthz>),
    /// `envoy.filters.http.jwt_authn`: verifies the request's JWT.
    JwtAuthn(std::sync::Arc<super::JwtAuthn>),
    /// `envoy.filters.http.grpc_json_transcoder`: serves JSON clients from a gRPC upstream.
    GrpcJsonTranscoder(std::sync::Arc<crate::transcoder::GrpcJsonTranscoder>),
    /// `envoy.filters.http.router`.
    Router,
}

/// The set of gRPC methods that get their own metric series. The others share one
/// fallback series, so a client cannot create series by inventing names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GrpcStatsConfig {
    /// `stats_for_all_methods: true`: every method gets its own series.
    AllMethods,
    /// `individual_method_stats_allowlist`: service name to method names.
    Allowlist(HashMap<String, Vec<String>>),
    /// Neither set, or `stats_for_all_methods: false`.
    #[default]
    None,
}

/// A route's `max_stream_duration`. When a route sets it, the route
/// `timeout` no longer applies, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxStreamDuration {
    /// Maximum duration of a stream; `None` is unlimited.
    pub max_stream_duration: Option<Duration>,
    /// When set, a gRPC request's `grpc-timeout` sets the stream's
    /// deadline, capped at this value; zero means no cap.
    pub grpc_timeout_header_max: Option<Duration>,
    /// Subtracted from the `grpc-timeout` value.
    pub grpc_timeout_header_offset: Duration,
}

/// A CORS policy (`cors` on a virtual host or route, or the CORS filter's
/// per-filter config). Header values are checked and built at config load.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsPolicy {
    /// Origins allowed; a request from any other origin gets no CORS header.
    pub allow_origins: Vec<HeaderMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}
