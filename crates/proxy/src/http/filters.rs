//! The HTTP filters a listener runs, decided once at config load so that
//! a request only checks flags.
//!
//! Each filter acts at a fixed point of the request: gRPC-Web rewrites the
//! request before routing and the response at its end, CORS replies to
//! preflights once the route is known and adds headers to every response,
//! gRPC statistics count from the request headers to the status, and the
//! gRPC-JSON transcoder rewrites a matching request before routing and
//! converts its response. The
//! request checks (CORS preflight and the authentication filters) run once
//! the route is known, in the order of `http_filters`. The router is always
//! last.

use std::sync::Arc;

use legate_config::model::{ApiKeyAuth, ExtAuthz, HttpFilter, JwtAuthn};
use legate_config::transcoder::GrpcJsonTranscoder;

use crate::grpc::MethodTable;
use crate::ratelimit::RateLimiter;
use crate::stats::ProxyStats;

/// The filters of one connection manager.
pub struct FilterPlan {
    pub grpc_web: bool,
    pub cors: bool,
    pub grpc_stats: Option<MethodTable>,
    /// The gRPC-JSON transcoder, which rewrites matching requests before routing.
    pub transcoder: Option<Arc<GrpcJsonTranscoder>>,
    /// The filters that may reply to a routed request before it is forwarded,
    /// in config order.
    pub request_checks: Vec<RequestCheck>,
}

/// A filter that may reply to a routed request itself.
pub enum RequestCheck {
    /// Replies to CORS preflights by the route's policy.
    CorsPreflight,
    ApiKeyAuth(Arc<ApiKeyAuth>),
    /// The filter-level limiter; routes with their own config use theirs.
    LocalRateLimit(Arc<RateLimiter>),
    ExtAuthz(Arc<ExtAuthz>),
    JwtAuthn(Arc<JwtAuthn>),
}

impl FilterPlan {
    pub fn new(filters: &[HttpFilter], stats: &ProxyStats) -> Arc<FilterPlan> {
        let mut plan = FilterPlan { grpc_web: false, cors: false, grpc_stats: None, transcoder: None, request_checks: Vec::new() };
        for filter in filters {
            match filter {
                HttpFilter::GrpcWeb => plan.grpc_web = true,
                HttpFilter::Cors => {
                    plan.cors = true;
                    plan.request_checks.push(RequestCheck::CorsPreflight);
                }
                HttpFilter::ApiKeyAuth(config) => plan.request_checks.push(RequestCheck::ApiKeyAuth(config.clone())),
                HttpFilter::ExtAuthz(config) => plan.request_checks.push(RequestCheck::ExtAuthz(config.clone())),
                HttpFilter::JwtAuthn(config) => plan.request_checks.push(RequestCheck::JwtAuthn(config.clone())),
                HttpFilter::LocalRateLimit(config) => {
                    let limiter = RateLimiter::new(config.clone(), stats.http.local_rate_limited(&config.stat_prefix));
                    plan.request_checks.push(RequestCheck::LocalRateLimit(Arc::new(limiter)));
                }
                HttpFilter::GrpcStats(config) => plan.grpc_stats = Some(MethodTable::new(config, &stats.grpc)),
                HttpFilter::GrpcJsonTranscoder(config) => plan.transcoder = Some(config.clone()),
                HttpFilter::Router => {}
            }
        }
        Arc::new(plan)
    }
}
