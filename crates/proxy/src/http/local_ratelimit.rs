//! The local rate limit filter: builds the request's descriptors from the
//! route's `rate_limits`, takes a token, and replies 429 (or the configured
//! status, or a gRPC status) when none is left.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;
use tracing::debug;

use legate_config::model::{RateLimit, RateLimitAction};

use super::body::ResponseBody;
use super::local_reply;
use crate::grpc::{local_status_reply, Code};
use crate::ratelimit::{DescriptorEntry, RateLimiter, TokenOutcome};
use crate::stats::{ProxyStats, ResponseFlag};

/// Body of a rejected request, as Envoy's.
const REJECTED: &str = "local_rate_limited";

/// Checks one request against `limiter`. Returns the bucket's state for the
/// `x-ratelimit-*` headers when they are enabled, or the reply to a
/// rejected request.
pub fn check(
    limiter: &RateLimiter,
    rate_limits: &[RateLimit],
    parts: &Parts,
    remote: &str,
    is_grpc: bool,
    stats: &ProxyStats,
) -> Result<Option<TokenOutcome>, Box<Response<ResponseBody>>> {
    let config = &limiter.config;
    if !sampled(config.filter_enabled) {
        return Ok(None);
    }
    let descriptors = if config.descriptors.is_empty() { Vec::new() } else { descriptors(rate_limits, parts, remote) };
    let Some(taken) = limiter.take(&descriptors, Instant::now()) else {
        return Ok(None);
    };
    let headers = config.x_ratelimit_headers.then_some(taken);
    if taken.allowed {
        return Ok(headers);
    }

    limiter.rate_limited.inc();
    if !sampled(config.filter_enforced) {
        debug!(stat_prefix = %config.stat_prefix, "request over the local rate limit passed, not enforced");
        return Ok(headers);
    }
    debug!(stat_prefix = %config.stat_prefix, "request over the local rate limit rejected");
    stats.http.count_flag(ResponseFlag::RateLimited);
    let mut reply = if is_grpc {
        // Envoy's gRPC mapping of 429 is UNAVAILABLE.
        let code = if config.rate_limited_as_resource_exhausted { Code::ResourceExhausted } else { Code::Unavailable };
        local_status_reply(code, REJECTED)
    } else {
        local_reply(StatusCode::from_u16(config.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS), REJECTED)
    };
    reply.extensions_mut().insert(ResponseFlag::RateLimited);
    for (name, value) in &config.response_headers_to_add {
        reply.headers_mut().append(name.clone(), value.clone());
    }
    if let Some(taken) = headers {
        add_headers(&taken, reply.headers_mut());
    }
    Err(Box::new(reply))
}

/// Adds the `x-ratelimit-limit`, `-remaining` and `-reset` (whole seconds,
/// rounded up) headers of the IETF draft version 03.
pub fn add_headers(taken: &TokenOutcome, headers: &mut HeaderMap) {
    let reset = taken.reset.as_secs() + u64::from(taken.reset.subsec_nanos() > 0);
    headers.insert("x-ratelimit-limit", HeaderValue::from(taken.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(taken.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

/// Draws whether a request falls in a share given in millionths.
fn sampled(share: u32) -> bool {
    share >= 1_000_000 || (share > 0 && fastrand::u32(..1_000_000) < share)
}

/// Builds one descriptor per `rate_limits` entry whose actions all produce
/// an entry. An absent header drops the descriptor, or with `skip_if_absent`
/// only the header's entry.
fn descriptors<'a>(rate_limits: &'a [RateLimit], parts: &'a Parts, remote: &'a str) -> Vec<Vec<DescriptorEntry<'a>>> {
    let mut descriptors = Vec::with_capacity(rate_limits.len());
    'limits: for limit in rate_limits {
        let mut entries = Vec::with_capacity(limit.actions.len());
        for action in &limit.actions {
            match action {
                RateLimitAction::RequestHeaders { header_name, descriptor_key, skip_if_absent } => {
                    match parts.headers.get(header_name).and_then(|value| value.to_str().ok()) {
                        Some(value) => entries.push((descriptor_key.as_str(), Cow::Borrowed(value))),
                        None if *skip_if_absent => {}
                        None => continue 'limits,
                    }
                }
                RateLimitAction::RemoteAddress => entries.push(("remote_address", Cow::Borrowed(remote))),
                RateLimitAction::GenericKey { descriptor_key, descriptor_value } => {
                    entries.push((descriptor_key.as_str(), Cow::Borrowed(descriptor_value.as_str())))
                }
            }
        }
        if !entries.is_empty() {
            descriptors.push(entries);
        }
    }
    descriptors
}
