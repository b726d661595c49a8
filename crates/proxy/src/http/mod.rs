//! The HTTP connection manager: routes each downstream request and forwards
//! it to an upstream endpoint, or replies locally.

mod api_key;
pub mod body;
mod checks;
mod cors;
mod ext_authz;
mod filters;
mod forward;
mod frames;
mod grpc_web;
mod hash;
mod headers;
pub(crate) mod join;
mod jwt_authn;
mod local_ratelimit;
mod local_reply;
mod path;
mod pipe;
mod retry;
mod transcode;
mod upgrade;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::debug;

use http::HeaderValue;
use legate_config::model::{CorsPolicy, HttpConnectionManager, RouteAction};

use crate::grpc::{adapt_response, GrpcCall, GrpcResponseBody, Protocol, WebMode};

use crate::access_log::{AccessLoggers, PendingLog, RequestRecord, UpstreamInfo};
use crate::router::RouteMatchResult;
use crate::stats::{ListenerStats, ProxyStats, ResponseFlag, RouteStats};
use crate::snapshot::{ActiveListener, ListenerRoutes, SnapshotStore};
use body::{DownstreamBody, RecordedBody, ResponseBody};
use checks::Checked;
use path::PathVerdict;
pub(crate) use filters::FilterPlan;
pub(crate) use frames::CLOSE_GRACE;
pub use headers::client_address_value;
pub use local_reply::local_reply;

/// State shared by every request on one downstream connection.
pub struct ConnectionContext {
    pub listener: Arc<str>,
    pub remote: SocketAddr,
    /// The downstream IP address as `x-forwarded-for` carries it.
    pub client_address: HeaderValue,
    pub store: SnapshotStore,
    /// Changes when the listener drains; upgraded pipes watch it.
    pub drained: tokio::sync::watch::Receiver<bool>,
    pub drain_timeout: std::time::Duration,
    pub open: crate::listener::OpenConnection,
    pub stats: Arc<ProxyStats>,
    pub listener_stats: ListenerStats,
    /// Set once the connection's protocol has been counted.
    pub protocol_counted: AtomicBool,
    /// Present on a connection accepted while its listener drains; notified
    /// when its first request arrives, so the connection can close after it.
    pub request_seen: Option<tokio::sync::Notify>,
    /// Requests received on the connection, and a wake-up for each, so a
    /// draining connection can wait for the next one.
    pub requests: std::sync::atomic::AtomicU64,
    pub request_arrived: tokio::sync::Notify,
    /// The times of a proxy-wide drain.
    pub drain: Arc<crate::listener::DrainTimes>,
    /// Index of the listener's filter chain serving the connection.
    pub chain: usize,
    /// Identity of that chain on a TLS listener, where SNI chose it among
    /// several, so the connection finds it again after the chains reorder.
    pub chain_key: Option<Arc<str>>,
    /// The `x-forwarded-client-cert` element of an mTLS connection.
    pub client_cert: Option<HeaderValue>,
    /// Whether the connection is TLS, which makes `x-forwarded-proto` https.
    pub secure: bool,
}

/// Handles one downstream request, and counts it under `DC` when the
/// downstream connection ends before the response headers.
pub async fn handle(request: Request<Incoming>, connection: Arc<ConnectionContext>) -> Result<Response<RecordedBody>, Infallible> {
    let start = tokio::time::Instant::now();
    let mut unanswered = Unanswered { stats: &connection.stats, start, log: None, answered: false };
    // Boxed, because hyper runs the service future in a task of its own per
    // HTTP/2 stream, and tokio copies a task's future when it stores it and
    // when it finishes. The box turns those copies into copies of a pointer.
    let response = Box::pin(respond(request, &connection, start, &mut unanswered.log)).await;
    unanswered.answered = true;
    Ok(response)
}

/// Access log entry of a request that has no response yet.
type LogEntry = Option<(Arc<AccessLoggers>, RequestRecord)>;

/// Counts the `DC` response flag, and writes the access log line with
/// response code 0, when hyper drops a request's future before the response
/// headers, which it does when the downstream connection ends.
struct Unanswered<'a> {
    stats: &'a ProxyStats,
    start: tokio::time::Instant,
    log: LogEntry,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.stats.http.count_flag(ResponseFlag::DownstreamConnectionTermination);
        if let Some((loggers, request)) = self.log.take() {
            let pending = PendingLog {
                loggers,
                request,
                status: 0,
                response_headers: http::HeaderMap::new(),
                flag: Some(ResponseFlag::DownstreamConnectionTermination),
                upstream: None,
            };
            pending.finish(self.start.elapsed(), 0);
        }
    }
}

/// Routes one request and builds its response. The snapshot loaded here is
/// the one the request uses to its end, whatever config changes meanwhile.
async fn respond(request: Request<Incoming>, connection: &ConnectionContext, start: tokio::time::Instant, log: &mut LogEntry) -> Response<RecordedBody> {
    if let Some(request_seen) = &connection.request_seen {
        request_seen.notify_one();
    }
    connection.requests.fetch_add(1, Ordering::Relaxed);
    connection.request_arrived.notify_one();
    let snapshot = connection.store.load_full();
    let chain = snapshot.listeners.get(&connection.listener).and_then(|listener| connection_chain(listener, connection));
    let Some(listener) = chain else {
        let stats = connection.stats.http.unrouted();
        let reply = local_reply(StatusCode::SERVICE_UNAVAILABLE, "the listener or its filter chain was removed");
        return record(reply, stats, start, connection, None);
    };
    count_protocol(connection, request.version());

    let (mut parts, body) = request.into_parts();
    if let Some(reply) = check_request(&mut parts, &listener.http) {
        let stats = connection.stats.http.unrouted();
        let entry = (!listener.access_logs.is_empty()).then(|| (listener.access_logs.clone(), RequestRecord::new(&parts, connection.remote, None)));
        return record(reply, stats, start, connection, entry);
    }
    headers::add_trace_context(&mut parts.headers);
    let filters = &listener.filters;
    let protocol = match Protocol::of(&parts.headers) {
        Protocol::GrpcWeb { .. } if !filters.grpc_web => Protocol::Other,
        protocol => protocol,
    };
    if let Protocol::GrpcWeb { .. } = protocol {
        grpc_web::translate_headers(&mut parts);
    }
    let transcoding = match (&filters.transcoder, protocol) {
        (Some(transcoder), Protocol::Other) => match transcode::start(transcoder, &parts, &listener.routes) {
            transcode::Start::Pass => None,
            transcode::Start::Call(call) => Some(call),
            transcode::Start::Reply(reply) => {
                let stats = connection.stats.http.unrouted();
                let entry = (!listener.access_logs.is_empty()).then(|| (listener.access_logs.clone(), RequestRecord::new(&parts, connection.remote, None)));
                return record(*reply, stats, start, connection, entry);
            }
        },
        _ => None,
    };
    if let Some(call) = transcoding.as_ref().filter(|call| !call.match_incoming_request_route()) {
        call.rewrite(&mut parts);
    }
    let host = headers::parts_host(&parts).unwrap_or("");
    let matched = listener.routes.route(host, &parts);
    // A call that matches no route counts under `other`, so that made-up
    // method names add no series.
    let call = match (protocol.is_grpc_family(), &filters.grpc_stats, &matched) {
        (true, Some(table), RouteMatchResult::NoRoute(_)) => Some(GrpcCall::start(table.other(), start)),
        (true, Some(table), _) => Some(GrpcCall::start(table.lookup(parts.uri.path()), start)),
        _ => None,
    };
    *log = (!listener.access_logs.is_empty()).then(|| {
        let route_name = match &matched {
            RouteMatchResult::Matched(route, _, _) if !route.name.is_empty() => Some(route.name.as_str()),
            _ => None,
        };
        (listener.access_logs.clone(), RequestRecord::new(&parts, connection.remote, route_name))
    });
    let (route, route_stats, route_limiter) = match matched {
        RouteMatchResult::Matched(route, stats, limiter) => (route, stats.clone(), limiter),
        RouteMatchResult::NoRoute(stats) => {
            debug!(host, path = parts.uri.path(), "no route matched");
            let response = forward::flag_reply(&connection.stats, ResponseFlag::NoRoute, StatusCode::NOT_FOUND, "no route matched");
            let exchange = Exchange { protocol, call, cors: None, rate_limit: None };
            return record(exchange.finish(response), stats.clone(), start, connection, log.take());
        }
    };

    let cors = route.cors.as_deref().filter(|_| filters.cors);
    let mut exchange = Exchange {
        protocol,
        call,
        cors: cors.and_then(|policy| Some((policy, cors::allowed_origin(policy, &parts.headers)?.clone()))),
        rate_limit: None,
    };
    let context = checks::CheckContext { route, route_limiter, cors, protocol, snapshot: &snapshot, connection };
    match checks::run(&filters.request_checks, &mut parts, &mut exchange, &context).await {
        Checked::Pass => {}
        Checked::Reply(reply) => return record(exchange.finish(reply), route_stats, start, connection, log.take()),
        Checked::Preflight(reply) => return record(reply, route_stats, start, connection, log.take()),
    }

    if let Some(call) = transcoding.as_ref().filter(|call| call.match_incoming_request_route()) {
        call.rewrite(&mut parts);
    }
    let mut body = match (protocol, &transcoding) {
        (Protocol::GrpcWeb { text }, _) => match grpc_web::read_body(body, text).await {
            Ok(body) => body,
            Err(reply) => return record(exchange.finish(reply), route_stats, start, connection, log.take()),
        },
        (_, Some(call)) => match call.read_request(body).await {
            Ok(body) => body,
            Err(reply) => return record(exchange.finish(reply), route_stats, start, connection, log.take()),
        },
        _ => DownstreamBody::incoming(body),
    };
    if let Some((_, record)) = &*log {
        body.count_bytes(record.received_counter());
    }
    if let Some(call) = &exchange.call {
        body.count_messages(call.clone());
    }

    let response = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let mut response = Response::new(ResponseBody::local(bytes::Bytes::copy_from_slice(body)));
            *response.status_mut() = status;
            response
        }
        RouteAction::Forward(action) => {
            let request = Request::from_parts(parts, body);
            let context = forward::RequestContext { route, route_stats: &route_stats, http: &listener.http, snapshot: &snapshot, connection };
            let response = forward::forward(request, action, &context).await;
            match transcoding {
                Some(call) => call.respond(response).await,
                None => response,
            }
        }
    };
    record(exchange.finish(response), route_stats, start, connection, log.take())
}

/// Finds the connection's filter chain: at its index while the chain there
/// is still the same one, else by its key after an update reordered the
/// chains. `None` once the chain is gone.
fn connection_chain<'a>(listener: &'a ActiveListener, connection: &ConnectionContext) -> Option<&'a ListenerRoutes> {
    let at_index = listener.chains.get(connection.chain);
    let Some(key) = &connection.chain_key else {
        return at_index;
    };
    match at_index {
        Some(chain) if chain.key == *key => Some(chain),
        _ => listener.chains.iter().find(|chain| chain.key == *key),
    }
}

/// Applies the header limits and path normalization before routing, and
/// returns the reply for a request rejected here.
fn check_request(parts: &mut http::request::Parts, settings: &HttpConnectionManager) -> Option<Response<ResponseBody>> {
    if parts.headers.len() > settings.limits.max_headers as usize {
        return Some(local_reply(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers"));
    }
    // RFC 9112 section 3.2: a request with more than one Host header is
    // invalid, and what follows it on the connection cannot be trusted.
    if parts.headers.get_all(http::header::HOST).iter().nth(1).is_some() {
        let mut reply = local_reply(StatusCode::BAD_REQUEST, "more than one Host header");
        if parts.version < Version::HTTP_2 {
            reply.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Some(reply);
    }

    let normalized = match path::normalize(parts.uri.path(), &settings.path) {
        PathVerdict::Route(Cow::Borrowed(_)) => return None,
        PathVerdict::Route(Cow::Owned(normalized)) => normalized,
        PathVerdict::Reject => return Some(local_reply(StatusCode::BAD_REQUEST, "escaped slashes are not allowed in the path")),
        PathVerdict::Redirect(unescaped) => {
            let location = with_query(unescaped, parts.uri.query());
            let Ok(location) = HeaderValue::try_from(location) else {
                return Some(local_reply(StatusCode::BAD_REQUEST, "invalid request path"));
            };
            let mut reply = local_reply(StatusCode::TEMPORARY_REDIRECT, "the path holds escaped slashes");
            reply.headers_mut().insert(http::header::LOCATION, location);
            return Some(reply);
        }
    };

    let path_and_query = with_query(normalized, parts.uri.query());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = http::uri::PathAndQuery::try_from(path_and_query).ok();
    match http::Uri::from_parts(uri) {
        Ok(rewritten) if rewritten.path_and_query().is_some() => {
            parts.uri = rewritten;
            None
        }
        _ => Some(local_reply(StatusCode::BAD_REQUEST, "invalid request path")),
    }
}

fn with_query(mut path: String, query: Option<&str>) -> String {
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// What the response of a request still needs from the filters: the gRPC
/// form for gRPC and gRPC-Web calls, and CORS headers for an allowed origin.
struct Exchange<'a> {
    protocol: Protocol,
    call: Option<Arc<GrpcCall>>,
    cors: Option<(&'a CorsPolicy, HeaderValue)>,
    /// The local rate limit bucket's state for the `x-ratelimit-*` headers.
    rate_limit: Option<crate::ratelimit::TokenOutcome>,
}

impl Exchange<'_> {
    fn finish(self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        let mode = match self.protocol {
            Protocol::Other => None,
            Protocol::Grpc => Some(WebMode::Grpc),
            Protocol::GrpcWeb { text: false } => Some(WebMode::Binary),
            Protocol::GrpcWeb { text: true } => Some(WebMode::Text),
        };
        let mut response = match mode {
            Some(mode) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
                GrpcResponseBody::wrap(adapt_response(response), mode, self.call)
            }
            _ => response,
        };
        if let Some((policy, origin)) = &self.cors {
            cors::add_response_headers(policy, origin, response.headers_mut());
        }
        if let Some(taken) = &self.rate_limit {
            local_ratelimit::add_headers(taken, response.headers_mut());
        }
        response
    }
}

/// Counts the response status and wraps the body so that the duration,
/// bytes and access log line are recorded when it ends.
fn record(
    response: Response<ResponseBody>,
    stats: Arc<RouteStats>,
    start: tokio::time::Instant,
    connection: &ConnectionContext,
    log: Option<(Arc<AccessLoggers>, RequestRecord)>,
) -> Response<RecordedBody> {
    let status = response.status().as_u16();
    stats.count_status(status);
    connection.stats.http.count_code(status);
    let pending = log.map(|(loggers, request)| {
        Box::new(PendingLog {
            loggers,
            request,
            status,
            response_headers: response.headers().clone(),
            flag: response.extensions().get::<ResponseFlag>().copied(),
            upstream: response.extensions().get::<UpstreamInfo>().cloned(),
        })
    });
    response.map(|body| RecordedBody::new(body, stats, start, pending))
}

fn count_protocol(connection: &ConnectionContext, version: Version) {
    if connection.protocol_counted.swap(true, Ordering::Relaxed) {
        return;
    }
    match version {
        Version::HTTP_2 => connection.listener_stats.http2.inc(),
        _ => connection.listener_stats.http1.inc(),
    };
}
