//! The request checks of the HTTP filters, run in the order of
//! `http_filters` once the route is known: CORS preflights, API keys, JWTs,
//! external authorization and local rate limits.

use http::request::Parts;
use http::Response;

use legate_config::model::{CorsPolicy, PerRoute, Route};

use super::body::ResponseBody;
use super::filters::RequestCheck;
use super::{api_key, cors, ext_authz, jwt_authn, local_ratelimit, ConnectionContext, Exchange};
use crate::grpc::Protocol;
use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;

/// The outcome of the checks for one request.
pub(super) enum Checked {
    /// Every check passed; the request goes on to the router.
    Pass,
    /// A check replied; the reply still gets the gRPC form and CORS headers.
    Reply(Response<ResponseBody>),
    /// The CORS filter's reply to a preflight, sent as it is.
    Preflight(Response<ResponseBody>),
}

/// The routed request's state that the checks read.
pub(super) struct CheckContext<'a> {
    pub route: &'a Route,
    /// The route's own or its virtual host's local rate limiter.
    pub route_limiter: Option<&'a RateLimiter>,
    pub cors: Option<&'a CorsPolicy>,
    pub protocol: Protocol,
    pub snapshot: &'a Snapshot,
    pub connection: &'a ConnectionContext,
}

/// Runs `checks` in order until one replies. Checks may change the request
/// headers, and the rate limit records its headers in `exchange`.
pub(super) async fn run(checks: &[RequestCheck], parts: &mut Parts, exchange: &mut Exchange<'_>, context: &CheckContext<'_>) -> Checked {
    let filter_configs = &context.route.filter_configs;
    for check in checks {
        let reply = match check {
            RequestCheck::CorsPreflight => match context.cors {
                Some(policy) if cors::is_preflight(parts) => return Checked::Preflight(cors::preflight_reply(policy, parts)),
                _ => None,
            },
            RequestCheck::ApiKeyAuth(config) => api_key::check(config, filter_configs.api_key_auth.as_ref(), parts).err(),
            RequestCheck::JwtAuthn(config) => {
                let connection = context.connection;
                jwt_authn::check(config, filter_configs.jwt_authn.as_ref(), parts, connection.secure, &connection.stats.http).err()
            }
            RequestCheck::ExtAuthz(_) if filter_configs.ext_authz_disabled => None,
            RequestCheck::ExtAuthz(config) => {
                // Boxed: the check's state is several KiB, and unboxed it
                // would enlarge the future of every request, with or
                // without external authorization.
                Box::pin(ext_authz::check(config, parts, context.snapshot, &context.connection.stats)).await.err()
            }
            RequestCheck::LocalRateLimit(filter_limiter) => rate_limit(filter_limiter, parts, exchange, context),
        };
        if let Some(reply) = reply {
            return Checked::Reply(*reply);
        }
    }
    Checked::Pass
}

/// Applies the route's limiter, the filter's when the route has none, or
/// none when the route turns the filter off.
fn rate_limit(
    filter_limiter: &RateLimiter,
    parts: &Parts,
    exchange: &mut Exchange<'_>,
    context: &CheckContext<'_>,
) -> Option<Box<Response<ResponseBody>>> {
    let filter_configs = &context.route.filter_configs;
    let limiter = match &filter_configs.local_ratelimit {
        Some(PerRoute::Disabled) => return None,
        Some(PerRoute::Override(_)) => context.route_limiter?,
        None => filter_limiter,
    };
    // The client's IP address, already formatted once per connection.
    let remote = context.connection.client_address.to_str().unwrap_or("");
    let is_grpc = context.protocol.is_grpc_family();
    match local_ratelimit::check(limiter, &filter_configs.rate_limits, parts, remote, is_grpc, &context.connection.stats) {
        Ok(outcome) => {
            exchange.rate_limit = outcome;
            None
        }
        Err(reply) => Some(reply),
    }
}
