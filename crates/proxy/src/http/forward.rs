//! Forwarding a routed request to an endpoint of the route's cluster.

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use prometheus_client::metrics::counter::Counter;
use tracing::debug;

use legate_config::model::{
    ClusterSelection, ForwardAction, HostRewrite, HttpConnectionManager, PathMatch, Route, UpstreamProtocol,
};

use super::body::{DownstreamBody, RequestBody, ResponseBody};
use super::hash::{request_hash, RequestHash};
use super::headers::{add_forwarding_headers, remove_hop_by_hop_from};
use super::local_reply::local_reply;
use super::retry::{effective_policy, Outcome, RequestTemplate, Tries};
use super::upgrade::{PipeSettings, UpgradeRequest};
use super::ConnectionContext;
use crate::access_log::UpstreamInfo;
use crate::activity::Activity;
use crate::snapshot::Snapshot;
use crate::stats::{ProxyStats, ResponseFlag, RouteStats, UpgradeResultLabels};
use crate::upstream::{ConnectionLimits, Resource, StreamIdle, UpstreamError};

static X_ENVOY_OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-envoy-overloaded");

/// What a forwarded request shares with the rest of its handling.
pub(super) struct RequestContext<'a> {
    pub route: &'a Route,
    pub route_stats: &'a RouteStats,
    pub http: &'a HttpConnectionManager,
    pub snapshot: &'a Snapshot,
    pub connection: &'a ConnectionContext,
}

pub(super) async fn forward(mut request: Request<DownstreamBody>, action: &ForwardAction, context: &RequestContext<'_>) -> Response<ResponseBody> {
    let RequestContext { route, route_stats, http, snapshot, connection } = *context;
    let stats = &connection.stats;
    let downstream_version = request.version();
    let upgrade = UpgradeRequest::detect(&request);
    if let Some(upgrade) = &upgrade {
        if !upgrade_allowed(&upgrade.protocol, action, http) {
            debug!(upgrade = %upgrade.protocol, route = %route.name, "upgrade not allowed on this route");
            stats.websocket.upgrades.get_or_create(&UpgradeResultLabels { result: "refused" }).inc();
            return local_reply(StatusCode::FORBIDDEN, "upgrade not allowed on this route");
        }
    }

    let (cluster_name, host_rewrite) = pick_cluster(action);
    let Some((cluster_key, cluster)) = snapshot.clusters.get_key_value(cluster_name) else {
        debug!(cluster = cluster_name, "route names a cluster that is not active");
        return flag_reply(stats, ResponseFlag::NoCluster, StatusCode::SERVICE_UNAVAILABLE, "cluster not found");
    };
    let breakers = &cluster.config.circuit_breakers;
    let max_requests = breakers.thresholds[action.priority.index()].max_requests;
    let Some(request_slot) = cluster.circuit.try_acquire(action.priority, Resource::Requests, max_requests) else {
        return overflow_reply(cluster_name, stats);
    };
    let limits = ConnectionLimits::new(breakers, action.priority);

    let hashed = if action.hash_policies.is_empty() {
        RequestHash::default()
    } else {
        request_hash(&action.hash_policies, request.headers(), request.uri(), connection.remote)
    };
    let Some(endpoint) = cluster.balancer.pick(hashed.hash) else {
        debug!(cluster = cluster_name, "no healthy endpoint");
        return flag_reply(stats, ResponseFlag::NoHealthyUpstream, StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };

    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let protocol = if upgrade.is_some() { UpstreamProtocol::Http1 } else { cluster.config.protocol };
    let request_deadline = http.request_timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let idle = route_idle_timeout(action.idle_timeout, http.stream_idle_timeout).map(StreamIdle::new);
    let target = UpstreamTarget {
        host_rewrite,
        protocol,
        upgrade: upgrade.as_ref(),
        request_deadline,
        received: &route_stats.request_bytes,
        activity: idle.as_ref().map(|idle| &idle.activity),
        forward_client_cert: http.forward_client_cert,
    };
    let Some(mut upstream_request) = upstream_request(request, action, route, &target, connection) else {
        return local_reply(StatusCode::BAD_REQUEST, "invalid request path or host");
    };

    let now = tokio::time::Instant::now();
    let sent_at = now;
    let deadline = match stream_deadline(action, upstream_request.headers_mut(), now) {
        Ok(deadline) => deadline,
        Err(error) => return crate::grpc::local_status_reply(crate::grpc::Code::InvalidArgument, &error.to_string()),
    };
    let policy = match upgrade {
        None => effective_policy(action.retry_policy.as_ref(), upstream_request.headers_mut()),
        Some(_) => None,
    };
    let tries = Tries {
        cluster,
        limits: &limits,
        priority: action.priority,
        hash: hashed.hash,
        route_deadline: deadline,
        idle,
        policy,
    };
    let (parts, body) = upstream_request.into_parts();
    let Outcome { result, endpoint, retry_slots, retries_exhausted } =
        tries.run(RequestTemplate::new(parts), body, endpoint.clone()).await;

    let mut response = match result {
        Ok(mut response) => {
            // Only the access log reads it, and a first extension costs three allocations.
            if !http.access_logs.is_empty() {
                let upstream = UpstreamInfo { host: endpoint.address(), cluster: cluster_key.clone() };
                response.extensions_mut().insert(upstream);
            }
            if retries_exhausted {
                stats.http.count_flag(ResponseFlag::UpstreamRetryLimitExceeded);
                response.extensions_mut().insert(ResponseFlag::UpstreamRetryLimitExceeded);
            }
            response
        }
        Err(UpstreamError::Overflow(_)) => return overflow_reply(cluster_name, stats),
        Err(error) => return error_reply(&error, cluster_name, stats),
    };
    cluster.stats.duration.observe(sent_at.elapsed().as_secs_f64());
    if let Some(cookie) = hashed.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        if upgrade.is_some() {
            stats.websocket.upgrades.get_or_create(&UpgradeResultLabels { result: "failed" }).inc();
        }
        let upstream_version = response.version();
        remove_hop_by_hop_from(upstream_version, response.headers_mut(), false);
        // The downstream connection keeps its own HTTP version whatever the
        // upstream spoke: an HTTP/1.0 upstream must not end keep-alive.
        *response.version_mut() = downstream_version;
        response.body_mut().hold(request_slot);
        response.body_mut().hold_retries(retry_slots);
        return response.map(ResponseBody::Upstream);
    }

    let (Some(upgrade), Some(downstream)) = (upgrade, downstream_upgrade) else {
        debug!(cluster = cluster_name, "upstream switched protocols without an upgrade request");
        return local_reply(StatusCode::BAD_GATEWAY, "upstream switched protocols unasked");
    };
    let upstream = hyper::upgrade::on(&mut response);
    let pipe = PipeSettings {
        endpoint: endpoint.address(),
        idle_timeout: route_idle_timeout(action.idle_timeout, http.upgrade_idle_timeout),
        drain_timeout: connection.drain_timeout,
        listener_drain: connection.drained.clone(),
        endpoint_membership: endpoint.membership().watch(),
        _open: connection.open.another(),
        stats: connection.stats.clone(),
        frames: action.websocket_frames,
        _request_slot: request_slot,
    };
    upgrade.complete(response.map(ResponseBody::Upstream), upstream, downstream, pipe)
}

/// Computes the stream's deadline: the route's `max_stream_duration` (with
/// `grpc-timeout` for gRPC requests) when it is set, else the route
/// timeout. Rejects a gRPC request whose `grpc-timeout` is malformed.
fn stream_deadline(
    action: &ForwardAction,
    headers: &mut http::HeaderMap,
    now: tokio::time::Instant,
) -> Result<Option<tokio::time::Instant>, crate::grpc::timeout::InvalidTimeout> {
    let is_grpc = crate::grpc::Protocol::of(headers) == crate::grpc::Protocol::Grpc;
    match &action.max_stream_duration {
        Some(limits) => crate::grpc::timeout::stream_deadline(limits, headers, is_grpc, now),
        None if is_grpc => crate::grpc::timeout::check(headers).map(|()| action.timeout.map(|timeout| now + timeout)),
        None => Ok(action.timeout.map(|timeout| now + timeout)),
    }
}

/// Answers a request a full circuit breaker turned away, as Envoy does: 503
/// with `x-envoy-overloaded: true`.
fn overflow_reply(cluster: &str, stats: &ProxyStats) -> Response<ResponseBody> {
    debug!(cluster, "circuit breaker full");
    let mut response = flag_reply(stats, ResponseFlag::UpstreamOverflow, StatusCode::SERVICE_UNAVAILABLE, "upstream overflow");
    response.headers_mut().insert(X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
    response
}

fn error_reply(error: &UpstreamError, cluster: &str, stats: &ProxyStats) -> Response<ResponseBody> {
    debug!(cluster, error = %error, source = ?std::error::Error::source(error), "upstream request failed");
    let (flag, status, reason) = match error {
        UpstreamError::Timeout => (ResponseFlag::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        UpstreamError::IdleTimeout => (ResponseFlag::StreamIdleTimeout, StatusCode::REQUEST_TIMEOUT, "stream idle timeout"),
        error if error.is_request_timeout() => (ResponseFlag::RequestTimeout, StatusCode::REQUEST_TIMEOUT, "request timeout"),
        error if error.is_downstream_body_error() => {
            (ResponseFlag::DownstreamProtocolError, StatusCode::BAD_REQUEST, "malformed request body")
        }
        error if error.is_connect_failure() => {
            (ResponseFlag::UpstreamConnectFailure, StatusCode::BAD_GATEWAY, "upstream connect error")
        }
        _ => (ResponseFlag::UpstreamConnectionTermination, StatusCode::BAD_GATEWAY, "upstream reset before response"),
    };
    flag_reply(stats, flag, status, reason)
}

/// Builds the local reply for a request the proxy ended itself and counts
/// its response flag. The flag also goes in the response's extensions for
/// the access log.
pub(super) fn flag_reply(stats: &ProxyStats, flag: ResponseFlag, status: StatusCode, reason: &'static str) -> Response<ResponseBody> {
    stats.http.count_flag(flag);
    let mut response = local_reply(status, reason);
    response.extensions_mut().insert(flag);
    response
}

/// Checks an upgrade against the route's settings, which override the
/// connection manager's.
fn upgrade_allowed(protocol: &str, action: &ForwardAction, http: &HttpConnectionManager) -> bool {
    if let Some(config) = action.upgrades.iter().find(|config| config.upgrade_type == protocol) {
        return config.enabled;
    }
    http.upgrades.iter().any(|config| config.upgrade_type == protocol && config.enabled)
}

fn pick_cluster(action: &ForwardAction) -> (&str, Option<&HostRewrite>) {
    match &action.clusters {
        ClusterSelection::Single(name) => (name, action.host_rewrite.as_ref()),
        ClusterSelection::Weighted { clusters, total_weight } => {
            let mut point = fastrand::u32(..*total_weight);
            for cluster in clusters {
                if point < cluster.weight {
                    return (&cluster.name, cluster.host_rewrite.as_ref().or(action.host_rewrite.as_ref()));
                }
                point -= cluster.weight;
            }
            let last = &clusters[clusters.len() - 1];
            (&last.name, last.host_rewrite.as_ref().or(action.host_rewrite.as_ref()))
        }
    }
}

/// Destination settings of a request sent upstream.
#[derive(Clone, Copy)]
struct UpstreamTarget<'a> {
    host_rewrite: Option<&'a HostRewrite>,
    protocol: UpstreamProtocol,
    upgrade: Option<&'a UpgradeRequest>,
    /// The connection manager's `request_timeout`, as a deadline for the
    /// whole request body.
    request_deadline: Option<tokio::time::Instant>,
    /// Counter of the route's request body bytes.
    received: &'a Counter,
    /// Idle clock of the stream, touched by each request body frame.
    activity: Option<&'a Activity>,
    forward_client_cert: legate_config::model::ForwardClientCert,
}

/// Builds the request sent upstream: path rewritten, hop-by-hop headers
/// replaced by forwarding headers, and the HTTP version of the cluster.
/// Returns `None` when the rewritten path or the host is not valid.
fn upstream_request(
    request: Request<DownstreamBody>,
    action: &ForwardAction,
    route: &Route,
    target: &UpstreamTarget<'_>,
    connection: &ConnectionContext,
) -> Option<Request<RequestBody>> {
    let UpstreamTarget { host_rewrite, protocol, upgrade, request_deadline, received, activity, forward_client_cert } = *target;
    let path = rewritten_path(request.uri(), action, route)?;
    let (mut parts, body) = request.into_parts();

    let had_transfer_encoding = parts.headers.contains_key(header::TRANSFER_ENCODING);
    remove_hop_by_hop_from(parts.version, &mut parts.headers, protocol == UpstreamProtocol::Http2);
    if had_transfer_encoding {
        // A message with both framings is re-framed by the upstream codec;
        // forwarding the stale length would let the two sides disagree.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(upgrade) = upgrade {
        upgrade.prepare_upstream(&mut parts.method, &mut parts.headers);
    }
    add_forwarding_headers(&mut parts.headers, &connection.client_address, connection.secure);
    crate::tls::apply_forward_client_cert(&mut parts.headers, forward_client_cert, connection.client_cert.as_ref());

    match protocol {
        UpstreamProtocol::Http1 => {
            if let UpstreamHost::Replace(host) = upstream_host(&parts, host_rewrite)? {
                parts.headers.insert(header::HOST, host);
            }
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
        }
        UpstreamProtocol::Http2 => {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(authority(&parts, host_rewrite)?);
            uri.path_and_query = Some(path);
            parts.version = Version::HTTP_2;
            parts.uri = Uri::from_parts(uri).ok()?;
            parts.headers.remove(header::HOST);
        }
    }

    let body = match upgrade {
        Some(_) => RequestBody::Empty,
        None => RequestBody::streaming(body, request_deadline, received.clone(), activity.cloned()),
    };
    Some(Request::from_parts(parts, body))
}

/// The upstream `Host` of an HTTP/1.1 request.
enum UpstreamHost {
    /// The downstream `Host` header passes as it is.
    Keep,
    Replace(HeaderValue),
}

/// Picks the upstream `Host` of an HTTP/1.1 request: the route's host
/// rewrite, else the downstream host as `parts_host` reads it. A valid
/// downstream `Host` of an origin-form request is kept, so that the common
/// case costs no copy. Returns `None` for an authority that is not a valid
/// header value.
fn upstream_host(parts: &http::request::Parts, host_rewrite: Option<&HostRewrite>) -> Option<UpstreamHost> {
    if let Some(rewrite) = host_rewrite {
        return Some(UpstreamHost::Replace(rewrite.header.clone()));
    }
    match (parts.uri.authority(), parts.headers.get(header::HOST)) {
        (Some(authority), _) => HeaderValue::from_str(authority.as_str()).ok().map(UpstreamHost::Replace),
        (None, Some(host)) if host.to_str().is_ok() => Some(UpstreamHost::Keep),
        (None, _) => Some(UpstreamHost::Replace(HeaderValue::from_static(""))),
    }
}

/// Returns the upstream `:authority` of an HTTP/2 request, from the same
/// sources as `upstream_host`, or `None` when it is not a valid authority
/// (an empty one included).
fn authority(parts: &http::request::Parts, host_rewrite: Option<&HostRewrite>) -> Option<http::uri::Authority> {
    let host = match (host_rewrite, parts.uri.authority(), parts.headers.get(header::HOST)) {
        (Some(rewrite), _, _) => return Some(rewrite.authority.clone()),
        (None, Some(authority), _) => return Some(authority.clone()),
        (None, None, Some(host)) => host.to_str().unwrap_or(""),
        (None, None, None) => "",
    };
    host.parse().ok()
}

fn rewritten_path(uri: &Uri, action: &ForwardAction, route: &Route) -> Option<PathAndQuery> {
    let Some(rewrite) = &action.prefix_rewrite else {
        // A clone shares the downstream bytes, where parsing would copy them.
        return Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    };
    let original = uri.path_and_query().map(PathAndQuery::as_str).unwrap_or("/");

    let (path, query) = match original.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (original, None),
    };
    let rest = match &route.matcher.path {
        PathMatch::Prefix(prefix) => path.get(prefix.len()..).unwrap_or(""),
        _ => "",
    };
    let mut rewritten = String::with_capacity(rewrite.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    rewritten.push_str(rewrite);
    rewritten.push_str(rest);
    if rewritten.is_empty() {
        rewritten.push('/');
    }
    if let Some(query) = query {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    rewritten.parse().ok()
}

/// Returns the idle timeout of a stream: the route's, else the connection
/// manager's `fallback`. A zero route timeout turns it off, even where the
/// connection manager sets one, as in Envoy.
fn route_idle_timeout(route: Option<std::time::Duration>, fallback: Option<std::time::Duration>) -> Option<std::time::Duration> {
    match route {
        Some(timeout) if timeout.is_zero() => None,
        Some(timeout) => Some(timeout),
        None => fallback,
    }
}
