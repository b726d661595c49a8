//! Settings of the local rate limit HTTP filter and the route actions that
//! build its descriptors.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// `envoy.filters.http.local_ratelimit` (`LocalRateLimit`), at the filter
/// level or in a route's or virtual host's `typed_per_filter_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimit {
    pub stat_prefix: String,
    /// Status of a rejected request: `status`, or 429 when it is unset or below 400.
    pub status: u16,
    /// The bucket every request takes a token from. Unset at the filter
    /// level, the filter limits only routes with their own config.
    pub token_bucket: Option<TokenBucket>,
    /// Share of requests the filter checks, in millionths (Envoy's default 0).
    pub filter_enabled: u32,
    /// Share of checked requests that a limit rejects, in millionths; the
    /// others are counted and passed (Envoy's default 0).
    pub filter_enforced: u32,
    pub response_headers_to_add: Vec<(HeaderName, HeaderValue)>,
    pub descriptors: Vec<LocalRateLimitDescriptor>,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    /// Takes a token from `token_bucket` even when a descriptor matched.
    pub always_consume_default_token_bucket: bool,
    /// gRPC calls get RESOURCE_EXHAUSTED in place of UNAVAILABLE.
    pub rate_limited_as_resource_exhausted: bool,
    /// Buckets kept per descriptor with a wildcard entry, one per value seen.
    pub max_dynamic_descriptors: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// A bucket for the requests whose descriptor has exactly these entries. An
/// entry with an empty value matches any value, with a bucket per value.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimitDescriptor {
    pub entries: Vec<(String, String)>,
    pub token_bucket: TokenBucket,
}

/// A route's `rate_limits` entry: its actions build one descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub actions: Vec<RateLimitAction>,
}

/// One action of a `rate_limits` entry, adding one descriptor entry.
#[derive(Debug, Clone, PartialEq)]
pub enum RateLimitAction {
    /// The entry (`descriptor_key`, the header's value). When the header is
    /// absent, the descriptor is not built unless `skip_if_absent` is set.
    RequestHeaders { header_name: HeaderName, descriptor_key: String, skip_if_absent: bool },
    /// The entry ("remote_address", the downstream client's IP address).
    RemoteAddress,
    /// The entry (`descriptor_key`, default "generic_key", `descriptor_value`).
    GenericKey { descriptor_key: String, descriptor_value: String },
}
