//! Retries of a forwarded request, as a route's `RetryPolicy` says: which
//! failures are retried, how many times, with what back-off, on which
//! endpoint, and within the cluster's retry circuit breaker.
//!
//! A retry is decided before any response byte goes downstream: on a
//! connect failure, a reset, a per-try timeout, a retriable status, or a
//! gRPC status that is retriable, read from the response headers or, for a
//! response that starts with its trailers, from the trailers.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use http::{HeaderName, Request, Response};
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tracing::debug;

use legate_config::model::{Priority, RetryOn, RetryPolicy};

use super::body::{ReplayBody, RequestBody};
use crate::grpc::Protocol;
use crate::upstream::{
    grpc_outcome, status_outcome, ClusterHandle, ConnectionLimits, EndpointPool, RequestOutcome, Resource, Slot, StreamIdle,
    StreamTimers, UpstreamBody, UpstreamError,
};

/// Bytes of a request body kept so that it can be sent again; a larger
/// body is not retried.
const REPLAY_LIMIT: usize = 1024 * 1024;

static X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
static X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");

/// The retry policy for one request: the route's, changed by the
/// `x-envoy-retry-on` and `x-envoy-max-retries` request headers, which are
/// removed before the request goes upstream.
pub(super) fn effective_policy<'a>(route: Option<&'a RetryPolicy>, headers: &mut HeaderMap) -> Option<Cow<'a, RetryPolicy>> {
    // Most requests carry no `x-envoy-` header. A scan of the few names is
    // cheaper than two hashed removals.
    if !headers.keys().any(|name| name.as_str().starts_with("x-envoy-")) {
        return route.map(Cow::Borrowed);
    }

    let retry_on = headers.remove(&X_ENVOY_RETRY_ON).and_then(|value| RetryOn::parse(value.to_str().ok()?).ok());
    let max_retries = headers.remove(&X_ENVOY_MAX_RETRIES).and_then(|value| value.to_str().ok()?.trim().parse::<u32>().ok());
    if retry_on.is_none() && max_retries.is_none() {
        return route.map(Cow::Borrowed);
    }

    let mut policy = route.cloned().unwrap_or_else(default_policy);
    if let Some(retry_on) = retry_on {
        policy.retry_on = RetryOn(policy.retry_on.0 | retry_on.0);
    }
    if let Some(max_retries) = max_retries {
        policy.num_retries = max_retries;
    }
    Some(Cow::Owned(policy))
}

fn default_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: RetryOn::default(),
        num_retries: 1,
        per_try_timeout: None,
        base_interval: Duration::from_millis(25),
        max_interval: Duration::from_millis(250),
        avoid_previous_hosts: false,
        host_selection_max_attempts: 1,
        retriable_status_codes: Vec::new(),
    }
}

/// State shared by every try of one request.
pub(super) struct Tries<'a> {
    pub cluster: &'a Arc<ClusterHandle>,
    pub limits: &'a ConnectionLimits,
    pub priority: Priority,
    pub hash: Option<u64>,
    pub route_deadline: Option<tokio::time::Instant>,
    pub idle: Option<StreamIdle>,
    pub policy: Option<Cow<'a, RetryPolicy>>,
}

/// The result of the last try, the endpoint it went to, and the retry
/// breaker slots to hold until the response ends.
pub(super) struct Outcome {
    pub result: Result<Response<UpstreamBody>, UpstreamError>,
    pub endpoint: Arc<EndpointPool>,
    pub retry_slots: Vec<Slot>,
    /// The last try failed in a way the policy retries, but no retry was
    /// left (Envoy's `URX`).
    pub retries_exhausted: bool,
}

/// The parts of the upstream request that every try sends again.
pub(super) struct RequestTemplate {
    parts: http::request::Parts,
}

impl RequestTemplate {
    pub fn new(parts: http::request::Parts) -> Self {
        RequestTemplate { parts }
    }

    fn build(&self, body: RequestBody) -> Request<RequestBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        request
    }

    /// Turns the template into the one request, when no retry can follow.
    fn into_request(self, body: RequestBody) -> Request<RequestBody> {
        Request::from_parts(self.parts, body)
    }
}

impl<'a> Tries<'a> {
    /// Sends the request to `first`, then retries as the policy allows.
    // A function returning an async block, not an async fn: an async fn
    // keeps its arguments twice in its state, and this state is part of
    // every request's future.
    #[allow(clippy::manual_async_fn)]
    pub fn run(self, template: RequestTemplate, body: RequestBody, first: Arc<EndpointPool>) -> impl Future<Output = Outcome> + 'a {
        async move {
            let Some(policy) = self.policy.clone() else {
                let timers = self.timers(None);
                let mut result = send_once(&first, template.into_request(body), &timers, self.limits).await;
                self.record(&first, &mut result);
                return Outcome { result, endpoint: first, retry_slots: Vec::new(), retries_exhausted: false };
            };

            // Boxed: the retry loop's state is large, and only requests
            // with a retry policy need it.
            Box::pin(self.retry(policy, template, body, first)).await
        }
    }

    /// Sends tries until one succeeds, is final, or the policy allows no
    /// more.
    async fn retry(self, policy: Cow<'a, RetryPolicy>, template: RequestTemplate, body: RequestBody, first: Arc<EndpointPool>) -> Outcome {
        let replay = ReplayBody::new(body, REPLAY_LIMIT);
        let mut endpoint = first;
        let mut tried = vec![endpoint.address()];
        let mut retry_slots = Vec::new();
        let mut attempt = 0;
        loop {
            let timers = self.timers(policy.per_try_timeout);
            let request = template.build(RequestBody::Replay(replay.next_try()));
            let result = send_once(&endpoint, request, &timers, self.limits).await;
            let (mut result, trailer_status) = match result {
                Ok(response) if status_may_trail(&response, &policy) => peek_grpc_trailers(response).await,
                result => (result, None),
            };
            match (trailer_status, &result) {
                (Some(code), Ok(response)) => {
                    self.cluster.stats.count_status(response.status().as_u16());
                    self.cluster.record_outcome(&endpoint, grpc_outcome(code));
                }
                _ => self.record(&endpoint, &mut result),
            }

            let Some(reason) = retry_reason(&result, trailer_status, &policy, &timers, self.route_deadline) else {
                return Outcome { result, endpoint, retry_slots, retries_exhausted: false };
            };
            if attempt >= policy.num_retries {
                return Outcome { result, endpoint, retry_slots, retries_exhausted: attempt > 0 };
            }
            if !replay.can_replay() {
                debug!(cluster = self.cluster.name(), "request body too large to replay, not retried");
                self.cluster.stats.retries_skipped.inc();
                return Outcome { result, endpoint, retry_slots, retries_exhausted: false };
            }
            let Some(slot) = self.retry_slot() else {
                debug!(cluster = self.cluster.name(), "retry circuit breaker full, not retried");
                return Outcome { result, endpoint, retry_slots, retries_exhausted: false };
            };
            retry_slots.push(slot);
            attempt += 1;

            if !self.back_off(&policy, attempt).await {
                return Outcome { result, endpoint, retry_slots, retries_exhausted: false };
            }
            let Some(next) = self.pick(&policy, &tried) else {
                return Outcome { result, endpoint, retry_slots, retries_exhausted: false };
            };
            debug!(cluster = self.cluster.name(), attempt, reason, upstream.addr = %next.address(), "retrying request");
            self.cluster.stats.retries.inc();
            tried.push(next.address());
            endpoint = next;
        }
    }

    /// Feeds a try's result to outlier detection. A gRPC response whose
    /// status is still to come in trailers reports it when they arrive.
    fn record(&self, endpoint: &EndpointPool, result: &mut Result<Response<UpstreamBody>, UpstreamError>) {
        let outcome = match result {
            Err(UpstreamError::Overflow(_)) => return,
            Err(_) => RequestOutcome::LocalFailure,
            Ok(response) => {
                self.cluster.stats.count_status(response.status().as_u16());
                let grpc = Protocol::of(response.headers()) == Protocol::Grpc;
                let grpc_status = crate::grpc::status_of(response.headers());
                match (grpc, grpc_status) {
                    (_, Some(code)) => grpc_outcome(code),
                    (true, None) if response.status() == http::StatusCode::OK => {
                        response.body_mut().report_grpc_trailers(self.cluster.clone());
                        return;
                    }
                    _ => status_outcome(response.status().as_u16()),
                }
            }
        };
        self.cluster.record_outcome(endpoint, outcome);
    }

    /// Timers of one try: the route deadline, cut short by the per-try
    /// timeout.
    fn timers(&self, per_try: Option<Duration>) -> StreamTimers {
        let per_try_deadline = per_try.map(|timeout| tokio::time::Instant::now() + timeout);
        let deadline = match (self.route_deadline, per_try_deadline) {
            (Some(route), Some(per_try)) => Some(route.min(per_try)),
            (route, per_try) => route.or(per_try),
        };
        StreamTimers { deadline, idle: self.idle.clone() }
    }

    /// Takes a place under `max_retries`, or under the retry budget when the
    /// cluster has one.
    fn retry_slot(&self) -> Option<Slot> {
        let thresholds = &self.cluster.config.circuit_breakers.thresholds[self.priority.index()];
        let limit = match thresholds.retry_budget {
            None => thresholds.max_retries,
            Some(budget) => {
                let circuit = &self.cluster.circuit;
                let active = circuit.in_use(self.priority, Resource::Requests) + circuit.in_use(self.priority, Resource::PendingRequests);
                let allowed = (active as f64 * budget.budget_percent / 100.0) as u32;
                allowed.max(budget.min_retry_concurrency)
            }
        };
        self.cluster.circuit.try_acquire(self.priority, Resource::Retries, limit)
    }

    /// Waits a jittered exponential back-off; returns false when the route
    /// deadline would pass first.
    async fn back_off(&self, policy: &RetryPolicy, attempt: u32) -> bool {
        let ceiling = policy.base_interval.saturating_mul(1u32 << attempt.min(16)).min(policy.max_interval);
        let wait = ceiling.mul_f64(fastrand::f64());
        let wake = tokio::time::Instant::now() + wait;
        if self.route_deadline.is_some_and(|deadline| wake >= deadline) {
            return false;
        }
        tokio::time::sleep_until(wake).await;
        true
    }

    /// Picks the endpoint of a retry, avoiding those tried already when the
    /// policy sets `previous_hosts`, within `host_selection_max_attempts` picks.
    fn pick(&self, policy: &RetryPolicy, tried: &[std::net::SocketAddr]) -> Option<Arc<EndpointPool>> {
        let balancer = &self.cluster.balancer;
        let mut candidate = balancer.pick(self.hash.map(|hash| hash.rotate_left(tried.len() as u32)))?.clone();
        if !policy.avoid_previous_hosts {
            return Some(candidate);
        }
        for _ in 1..policy.host_selection_max_attempts {
            if !tried.contains(&candidate.address()) {
                break;
            }
            candidate = balancer.pick(None)?.clone();
        }
        Some(candidate)
    }
}

/// Sends one try, failing it when the try's deadline or idle timeout
/// passes before the response headers. The idle timeout counts from the
/// start of the try or the last request body frame, whichever is later.
pub(super) fn send_once<'a>(
    endpoint: &'a Arc<EndpointPool>,
    request: Request<RequestBody>,
    timers: &'a StreamTimers,
    limits: &'a ConnectionLimits,
) -> TimedExchange<'a, impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + 'a> {
    timers.touch();
    TimedExchange { exchange: endpoint.send(request, timers.clone(), limits), timer: None, timers }
}

pin_project_lite::pin_project! {
    /// One try's exchange, failed when the stream's timers expire before
    /// it completes. A hand-written future, because an async block would
    /// keep the large exchange twice: as captured, and as pinned.
    pub(super) struct TimedExchange<'a, F> {
        #[pin]
        exchange: F,
        #[pin]
        timer: Option<Sleep>,
        timers: &'a StreamTimers,
    }
}

impl<F> Future for TimedExchange<'_, F>
where
    F: Future<Output = Result<Response<UpstreamBody>, UpstreamError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.exchange.poll(cx) {
            return Poll::Ready(result);
        }
        // Activity since the timer was set moves the expiry later, so a
        // timer that fires is set again until the stream really expires.
        loop {
            let Some(expiry) = this.timers.next_expiry() else { return Poll::Pending };
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) if timer.deadline() == expiry => {}
                Some(timer) => timer.reset(expiry),
                None => this.timer.set(Some(tokio::time::sleep_until(expiry))),
            }
            let timer = this.timer.as_mut().as_pin_mut().expect("the timer is set just above");
            ready!(timer.poll(cx));
            if let Some(error) = this.timers.expired_at(tokio::time::Instant::now()) {
                return Poll::Ready(Err(error));
            }
        }
    }
}

/// Tells whether `response` is a gRPC response whose status may come in
/// trailers, under a policy that retries on gRPC statuses.
fn status_may_trail(response: &Response<UpstreamBody>, policy: &RetryPolicy) -> bool {
    let grpc_retries = (7..=11).any(|bit| policy.retry_on.has(1 << bit));
    let is_grpc = Protocol::of(response.headers()) == Protocol::Grpc;
    grpc_retries && is_grpc && !response.headers().contains_key(&crate::grpc::GRPC_STATUS) && response.status() == http::StatusCode::OK
}

/// Reads the first frame of a gRPC response: trailers right away mean the
/// status is known before any byte goes downstream, and it is returned. The
/// frame is put back for the downstream either way. The response body fails
/// the read itself when the try's deadline or idle timeout passes.
async fn peek_grpc_trailers(mut response: Response<UpstreamBody>) -> (Result<Response<UpstreamBody>, UpstreamError>, Option<u32>) {
    match response.body_mut().frame().await {
        Some(Ok(frame)) => {
            let status = frame.trailers_ref().and_then(crate::grpc::status_of);
            response.body_mut().push_back(frame);
            (Ok(response), status)
        }
        Some(Err(error)) => (Err(error), None),
        None => (Ok(response), None),
    }
}

/// Names the retried condition `result` meets, or `None` when it is final.
fn retry_reason(
    result: &Result<Response<UpstreamBody>, UpstreamError>,
    trailer_status: Option<u32>,
    policy: &RetryPolicy,
    timers: &StreamTimers,
    route_deadline: Option<tokio::time::Instant>,
) -> Option<&'static str> {
    let on = policy.retry_on;
    match result {
        Err(UpstreamError::Overflow(_)) => None,
        Err(UpstreamError::Timeout) => {
            let per_try_expired = timers.deadline.is_some() && timers.deadline != route_deadline;
            (per_try_expired && on.has(RetryOn::SERVER_ERROR | RetryOn::GATEWAY_ERROR)).then_some("per_try_timeout")
        }
        Err(error) if error.is_connect_failure() => {
            on.has(RetryOn::CONNECT_FAILURE | RetryOn::SERVER_ERROR | RetryOn::GATEWAY_ERROR).then_some("connect_failure")
        }
        Err(UpstreamError::Request(_)) => {
            on.has(RetryOn::RESET | RetryOn::REFUSED_STREAM | RetryOn::SERVER_ERROR).then_some("reset")
        }
        Err(_) => None,
        Ok(response) => {
            let status = response.status().as_u16();
            let header_status = crate::grpc::status_of(response.headers());
            let grpc_status = header_status.or(trailer_status);
            let retried = (status >= 500 && on.has(RetryOn::SERVER_ERROR))
                || (matches!(status, 502..=504) && on.has(RetryOn::GATEWAY_ERROR))
                || (status == 409 && on.has(RetryOn::RETRIABLE_4XX))
                || (on.has(RetryOn::RETRIABLE_STATUS_CODES) && policy.retriable_status_codes.contains(&status))
                || grpc_status.is_some_and(|code| on.retries_grpc_status(code));
            retried.then_some("response")
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn route_policy() -> RetryPolicy {
        RetryPolicy { retry_on: RetryOn(RetryOn::CONNECT_FAILURE), num_retries: 2, ..default_policy() }
    }

    #[test]
    fn route_policy_without_headers() {
        let route = route_policy();
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("a"));

        let policy = effective_policy(Some(&route), &mut headers);

        assert!(matches!(policy, Some(Cow::Borrowed(borrowed)) if *borrowed == route));
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn other_envoy_headers_kept() {
        let route = route_policy();
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-original-path", HeaderValue::from_static("/a"));

        let policy = effective_policy(Some(&route), &mut headers);

        assert!(matches!(policy, Some(Cow::Borrowed(borrowed)) if *borrowed == route));
        assert!(headers.contains_key("x-envoy-original-path"));
    }

    #[test]
    fn request_headers_change_policy() {
        let route = route_policy();
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-retry-on", HeaderValue::from_static("5xx"));
        headers.insert("x-envoy-max-retries", HeaderValue::from_static(" 4 "));

        let policy = effective_policy(Some(&route), &mut headers).expect("a policy");

        assert_eq!(policy.retry_on, RetryOn(RetryOn::CONNECT_FAILURE | RetryOn::SERVER_ERROR));
        assert_eq!(policy.num_retries, 4);
        assert!(headers.is_empty(), "both headers are removed before the request goes upstream");
    }

    #[test]
    fn request_headers_without_route_policy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-retry-on", HeaderValue::from_static("reset"));

        let policy = effective_policy(None, &mut headers).expect("a policy from the header alone");

        assert_eq!(policy.retry_on, RetryOn(RetryOn::RESET));
        assert_eq!(policy.num_retries, 1, "Envoy's default count");
    }

    #[test]
    fn invalid_headers_removed_and_ignored() {
        let route = route_policy();
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-retry-on", HeaderValue::from_static("sometimes"));
        headers.insert("x-envoy-max-retries", HeaderValue::from_static("many"));

        let policy = effective_policy(Some(&route), &mut headers);

        assert!(matches!(policy, Some(Cow::Borrowed(_))), "the route's policy stays");
        assert!(headers.is_empty());
    }
}
