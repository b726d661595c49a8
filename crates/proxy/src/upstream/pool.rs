//! Connection pool of one endpoint: idle HTTP/1.1 keep-alive connections,
//! or shared HTTP/2 connections that each carry many streams.
//!
//! Each endpoint has its own pool and its own lock, so no request takes a
//! lock shared by the whole proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use legate_config::model::{CircuitBreakers, Http2Settings, Priority, UpstreamProtocol};

use super::circuit::{ClusterCircuit, Resource, Slot};
use super::UpstreamError;
use crate::activity::Activity;
use crate::stats::ClusterStats;
use crate::http::body::RequestBody;
use crate::http::join::Joined;
use crate::batched_io::BatchedWrites;
use crate::tls::UpstreamIo;

/// Settings shared by every endpoint of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2: Http2Settings,
    /// Connects through TLS when the cluster has an `UpstreamTlsContext`.
    pub tls: Option<Arc<crate::tls::UpstreamConnector>>,
}

pub struct EndpointPool {
    address: SocketAddr,
    settings: PoolSettings,
    membership: Arc<Membership>,
    stats: Arc<ClusterStats>,
    circuit: Arc<ClusterCircuit>,
    /// Connections open to this endpoint, for `per_host_thresholds`.
    connections: Arc<AtomicUsize>,
    idle: Mutex<IdleConnections>,
    /// Open HTTP/2 connections, oldest first.
    http2_connections: Mutex<Vec<Http2Connection>>,
    /// Held while an HTTP/2 connection is opened, so that requests arriving
    /// together open one connection, not one each.
    http2_connecting: tokio::sync::Mutex<()>,
    active_requests: AtomicUsize,
}

/// A shared HTTP/2 connection and its streams in flight.
struct Http2Connection {
    sender: http2::SendRequest<RequestBody>,
    streams: Arc<Http2Streams>,
}

/// Streams in flight on one HTTP/2 connection, and when the last one ended.
struct Http2Streams {
    in_flight: AtomicUsize,
    /// Touched when the connection opens and each time its last stream ends.
    idle_since: Activity,
}

struct IdleConnection {
    sender: http1::SendRequest<RequestBody>,
    since: std::time::Instant,
}

/// Pooled HTTP/1.1 connections, the most recently used last.
#[derive(Default)]
struct IdleConnections {
    connections: Vec<IdleConnection>,
    /// The task that closes the connections that stay idle for the
    /// cluster's `idle_timeout`, while one runs. It ends with the pool.
    sweep: Option<tokio::task::AbortHandle>,
}

impl EndpointPool {
    pub fn new(
        address: SocketAddr,
        settings: PoolSettings,
        membership: Arc<Membership>,
        stats: Arc<ClusterStats>,
        circuit: Arc<ClusterCircuit>,
    ) -> Arc<Self> {
        Arc::new(EndpointPool {
            address,
            settings,
            membership,
            stats,
            circuit,
            connections: Arc::new(AtomicUsize::new(0)),
            idle: Mutex::new(IdleConnections::default()),
            http2_connections: Mutex::new(Vec::new()),
            http2_connecting: tokio::sync::Mutex::new(()),
            active_requests: AtomicUsize::new(0),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// Requests in flight on this endpoint, for least-request balancing.
    pub fn active_requests(&self) -> usize {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Sends `request` to this endpoint on a pooled or new connection.
    /// The response body keeps the connection until it ends, then gives an
    /// HTTP/1.1 connection back to the pool.
    pub fn send<'a>(
        self: &'a Arc<Self>,
        request: Request<RequestBody>,
        timers: StreamTimers,
        limits: &'a ConnectionLimits,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + 'a {
        // One async block for both protocols, not an async fn per protocol:
        // each async fn keeps its arguments twice in its state, and the
        // request is large.
        let guard = ActiveRequest::new(self.clone());
        async move {
            match self.settings.protocol {
                UpstreamProtocol::Http1 => {
                    let mut sender = self.checkout_http1(limits, timers.deadline).await?;
                    let response = sender.send_request(request).await.map_err(UpstreamError::Request)?;
                    let is_upgrade = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    let give_back = (!is_upgrade).then(|| (self.clone(), sender));
                    Ok(response.map(|body| UpstreamBody::new(body, give_back, guard, timers)))
                }
                UpstreamProtocol::Http2 => {
                    let (mut sender, stream) = self.checkout_http2(limits, timers.deadline).await?;
                    let response = sender.send_request(request).await.map_err(UpstreamError::Request)?;
                    Ok(response.map(|body| {
                        let mut body = UpstreamBody::new(body, None, guard, timers);
                        body.hold_stream(stream);
                        body
                    }))
                }
            }
        }
    }

    /// Finds a connection for one HTTP/1.1 request: an idle one, else a new
    /// one if the circuit breakers allow it. Otherwise the request waits as
    /// pending (if `max_pending_requests` allows) until a connection is
    /// handed back or closed, or until `deadline`.
    async fn checkout_http1(
        &self,
        limits: &ConnectionLimits,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let mut pending: Option<Slot> = None;
        loop {
            let released = self.circuit.released();
            tokio::pin!(released);
            released.as_mut().enable();

            if let Some(sender) = self.ready_idle().await {
                return Ok(sender);
            }
            if let Some(slot) = self.try_connection_slot(limits) {
                // Boxed, as is the HTTP/2 connect below: a connect's state
                // is large, and it would otherwise sit inside every
                // request's future, which is copied whole when it is boxed.
                return Box::pin(self.connect_http1(slot)).await;
            }
            if pending.is_none() {
                let slot = self.circuit.try_acquire(limits.priority, Resource::PendingRequests, limits.max_pending_requests);
                pending = Some(slot.ok_or(UpstreamError::Overflow(Resource::PendingRequests))?);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(UpstreamError::Timeout);
                    }
                }
                None => released.await,
            }
        }
    }

    /// Takes a connection slot from the cluster's breaker and this
    /// endpoint's per-host limit, or `None` when either is full.
    fn try_connection_slot(&self, limits: &ConnectionLimits) -> Option<ConnectionSlot> {
        if let Some(per_host) = limits.per_host_max_connections {
            if self.connections.load(Ordering::Acquire) >= per_host as usize {
                return None;
            }
        }
        let slot = self.circuit.try_acquire(limits.priority, Resource::Connections, limits.max_connections)?;
        self.connections.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot { _slot: slot, connections: self.connections.clone(), circuit: self.circuit.clone() })
    }

    /// Takes a pooled connection and waits until it accepts a request. A
    /// connection handed back a moment ago may still be finishing its last
    /// response, and dropping it then would open a new upstream connection.
    async fn ready_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        None
    }

    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(connection) = idle.connections.pop() {
            let fresh = connection.since.elapsed() < self.settings.idle_timeout;
            if fresh && !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Pools an HTTP/1.1 connection whose response ended. The first one
    /// pooled starts the task that closes connections once idle.
    fn give_back(self: &Arc<Self>, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.connections.push(IdleConnection { sender, since: std::time::Instant::now() });
        let start_sweep = idle.sweep.is_none() && reachable(self.settings.idle_timeout);
        if let Some(runtime) = start_sweep.then(tokio::runtime::Handle::try_current).and_then(Result::ok) {
            let task = runtime.spawn(close_idle_http1(Arc::downgrade(self), self.settings.idle_timeout));
            idle.sweep = Some(task.abort_handle());
        }
        drop(idle);
        self.circuit.notify_released();
    }

    /// Drops the pooled HTTP/1.1 connections idle for `idle_timeout` or
    /// closed by the upstream, which closes them. Returns when the oldest
    /// remaining one expires, or `None` once none remains.
    fn drop_expired_idle(&self, idle_timeout: Duration) -> Option<std::time::Instant> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.connections.retain(|connection| connection.since.elapsed() < idle_timeout && !connection.sender.is_closed());
        let oldest = idle.connections.iter().map(|connection| connection.since).min();
        if oldest.is_none() {
            idle.sweep = None;
        }
        oldest.map(|since| since + idle_timeout)
    }

    /// Finds a stream for one HTTP/2 request: on an open connection with
    /// fewer than `max_concurrent_streams` streams in flight, else on a new
    /// connection if the circuit breakers allow it. Otherwise the request
    /// waits as pending, as `checkout_http1` does, until a stream ends or a
    /// connection closes, or until `deadline`.
    async fn checkout_http2(
        self: &Arc<Self>,
        limits: &ConnectionLimits,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(http2::SendRequest<RequestBody>, StreamSlot), UpstreamError> {
        let mut pending: Option<Slot> = None;
        loop {
            let released = self.circuit.released();
            tokio::pin!(released);
            released.as_mut().enable();

            if let Some(found) = self.reserve_http2_stream() {
                return Ok(found);
            }
            let connecting = self.http2_connecting.lock().await;
            if let Some(found) = self.reserve_http2_stream() {
                return Ok(found);
            }
            if let Some(slot) = self.try_connection_slot(limits) {
                let (sender, streams) = Box::pin(self.connect_http2(slot)).await?;
                return Ok(self.add_http2_connection(sender, streams));
            }
            drop(connecting);
            if pending.is_none() {
                let slot = self.circuit.try_acquire(limits.priority, Resource::PendingRequests, limits.max_pending_requests);
                pending = Some(slot.ok_or(UpstreamError::Overflow(Resource::PendingRequests))?);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(UpstreamError::Timeout);
                    }
                }
                None => released.await,
            }
        }
    }

    /// Streams one HTTP/2 connection may carry at once: the cluster's
    /// `max_concurrent_streams`, else no limit of Legate's own, so that one
    /// connection serves every request and hyper holds back streams beyond
    /// the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    fn http2_stream_limit(&self) -> usize {
        // Envoy's protocol.proto requires at least 1, but the config decoder
        // accepts 0. It is read as 1 so that a request never waits for a
        // stream no connection can give.
        self.settings.http2.max_concurrent_streams.map_or(usize::MAX, |limit| limit.max(1) as usize)
    }

    /// Takes a stream on the oldest open HTTP/2 connection that has one
    /// free, dropping closed connections on the way.
    fn reserve_http2_stream(&self) -> Option<(http2::SendRequest<RequestBody>, StreamSlot)> {
        let limit = self.http2_stream_limit();
        let mut connections = self.http2_connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        connections.retain(|connection| !connection.sender.is_closed());
        let connection = connections.iter().find(|connection| connection.streams.in_flight.load(Ordering::Acquire) < limit)?;
        Some((connection.sender.clone(), self.stream_slot(&connection.streams, limit)))
    }

    /// Adds a new HTTP/2 connection to the pool. Its `streams` count the
    /// stream of the request that opened it already, and that stream's slot
    /// is returned.
    fn add_http2_connection(
        &self,
        sender: http2::SendRequest<RequestBody>,
        streams: Arc<Http2Streams>,
    ) -> (http2::SendRequest<RequestBody>, StreamSlot) {
        let limit = self.http2_stream_limit();
        let slot = StreamSlot { streams: streams.clone(), limit, circuit: self.circuit.clone() };
        let mut connections = self.http2_connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        connections.push(Http2Connection { sender: sender.clone(), streams });
        (sender, slot)
    }

    /// Counts one more stream on a connection. Callers hold the lock of
    /// `http2_connections`, so two requests cannot both take the last free
    /// stream, and an idle connection cannot be removed while a stream is
    /// taken on it.
    fn stream_slot(&self, streams: &Arc<Http2Streams>, limit: usize) -> StreamSlot {
        streams.in_flight.fetch_add(1, Ordering::AcqRel);
        StreamSlot { streams: streams.clone(), limit, circuit: self.circuit.clone() }
    }

    /// Removes the HTTP/2 connection of `streams` from the pool when it has
    /// had no stream for `idle_timeout`. Dropping the pool's handle is what
    /// lets hyper close the connection, because a request keeps no other
    /// handle once its response headers arrive. Returns whether it was
    /// removed.
    fn remove_idle_http2(&self, streams: &Arc<Http2Streams>, idle_timeout: Duration) -> bool {
        let mut connections = self.http2_connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let busy = streams.in_flight.load(Ordering::Acquire) > 0;
        if busy || Instant::now() < streams.idle_since.idle_deadline(idle_timeout) {
            return false;
        }
        connections.retain(|connection| !Arc::ptr_eq(&connection.streams, streams));
        true
    }

    async fn connect(&self, protocol: UpstreamProtocol) -> Result<UpstreamIo, UpstreamError> {
        let stream = match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                self.stats.connect_failures.inc();
                if crate::is_out_of_descriptors(&source) {
                    tracing::warn!(upstream.addr = %self.address, error = %source, "upstream connect failed: the process is out of file descriptors; raise its limit (ulimit -n)");
                }
                return Err(UpstreamError::Connect { address: self.address, source });
            }
            Err(_) => {
                self.stats.connect_timeouts.inc();
                return Err(UpstreamError::ConnectTimeout { address: self.address });
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.settings.tls else {
            self.stats.connections_opened.inc();
            return Ok(UpstreamIo::Plain(stream));
        };
        // The connect timeout covers the TLS handshake too.
        let stream = match tokio::time::timeout(self.settings.connect_timeout, tls.connect(self.address, stream, protocol)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                self.stats.connect_failures.inc();
                return Err(UpstreamError::Tls { address: self.address, source });
            }
            Err(_) => {
                self.stats.connect_timeouts.inc();
                return Err(UpstreamError::ConnectTimeout { address: self.address });
            }
        };
        self.stats.connections_opened.inc();
        Ok(UpstreamIo::Tls(Box::new(stream)))
    }

    /// Counts a connection as active until its task ends, holding its
    /// circuit-breaker slot for as long.
    fn track_connection(&self, slot: ConnectionSlot) -> ActiveConnection {
        self.stats.connections_active.inc();
        ActiveConnection { stats: self.stats.clone(), _slot: slot }
    }

    async fn connect_http1(&self, slot: ConnectionSlot) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let io = TokioIo::new(self.connect(UpstreamProtocol::Http1).await?);
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { address: self.address, source })?;

        let address = self.address;
        let active = self.track_connection(slot);
        tokio::spawn(async move {
            let _active = active;
            if let Err(error) = connection.with_upgrades().await {
                debug!(upstream.addr = %address, %error, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }

    /// Opens an HTTP/2 connection and spawns its task, which also closes it
    /// once idle for the cluster's `idle_timeout`.
    async fn connect_http2(
        self: &Arc<Self>,
        slot: ConnectionSlot,
    ) -> Result<(http2::SendRequest<RequestBody>, Arc<Http2Streams>), UpstreamError> {
        let io = TokioIo::new(BatchedWrites::http2(self.connect(UpstreamProtocol::Http2).await?));
        let mut builder = http2::Builder::new(TokioExecutor::new());
        let settings = &self.settings.http2;
        if let Some(window) = settings.initial_stream_window_size {
            builder.initial_stream_window_size(window);
        }
        if let Some(window) = settings.initial_connection_window_size {
            builder.initial_connection_window_size(window);
        }
        let (sender, connection) =
            builder.handshake(io).await.map_err(|source| UpstreamError::Handshake { address: self.address, source })?;

        // The stream of the request that opens the connection counts from
        // the start, so the idle timer cannot close it before that stream.
        let streams = Arc::new(Http2Streams { in_flight: AtomicUsize::new(1), idle_since: Activity::new() });
        let idle = close_when_idle(Arc::downgrade(self), streams.clone(), self.settings.idle_timeout);
        let address = self.address;
        let active = self.track_connection(slot);
        tokio::spawn(async move {
            let _active = active;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = &mut connection => result,
                () = idle => {
                    debug!(upstream.addr = %address, "closing idle upstream HTTP/2 connection");
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(upstream.addr = %address, %error, "upstream HTTP/2 connection closed with an error");
            }
        });
        Ok((sender, streams))
    }
}

impl Drop for EndpointPool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sweep) = idle.sweep.take() {
            sweep.abort();
        }
    }
}

/// Closes the pooled HTTP/1.1 connections of `pool` that stay idle for
/// `idle_timeout`, waking when the oldest one expires. Ends once no
/// connection is pooled, and the next one pooled starts it again.
async fn close_idle_http1(pool: Weak<EndpointPool>, idle_timeout: Duration) {
    let mut wake = Instant::now() + idle_timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(pool) = pool.upgrade() else { return };
        let Some(expiry) = pool.drop_expired_idle(idle_timeout) else { return };
        wake = Instant::from_std(expiry);
    }
}

/// Returns whether a timer for `timeout` can fire. A zero `idle_timeout` in
/// the config means no timeout, and the model stores it as one too large to
/// reach.
fn reachable(timeout: Duration) -> bool {
    Instant::now().checked_add(timeout).is_some()
}

/// Waits until the HTTP/2 connection of `streams` has had no stream for
/// `idle_timeout` and is removed from `pool`. One timer per connection,
/// which wakes once per `idle_timeout` at most. Never returns when the
/// timeout is too large to reach, since a zero `idle_timeout` in the config
/// means no timeout.
async fn close_when_idle(pool: Weak<EndpointPool>, streams: Arc<Http2Streams>, idle_timeout: Duration) {
    if !reachable(idle_timeout) {
        return std::future::pending().await;
    }
    loop {
        let wake = match streams.in_flight.load(Ordering::Acquire) {
            0 => streams.idle_since.idle_deadline(idle_timeout),
            _ => Instant::now() + idle_timeout,
        };
        tokio::time::sleep_until(wake).await;

        // A pool replaced by a cluster update drops its handles itself.
        let Some(pool) = pool.upgrade() else { return std::future::pending().await };
        if pool.remove_idle_http2(&streams, idle_timeout) {
            return;
        }
    }
}

/// Exists while an endpoint belongs to its cluster, across cluster updates
/// that replace its pool. Upgraded connections watch it so that they drain
/// when their endpoint is removed.
pub struct Membership {
    /// Created by the first `watch`, because a channel takes 344 bytes of heap
    /// and most endpoints never carry an upgraded connection.
    removed: std::sync::OnceLock<tokio::sync::watch::Sender<()>>,
    /// Outlier and health-check state of the endpoint.
    pub health: super::EndpointHealth,
}

impl Membership {
    pub fn new() -> Arc<Self> {
        Arc::new(Membership { removed: std::sync::OnceLock::new(), health: Default::default() })
    }

    /// Returns a receiver whose `changed()` fails once the endpoint leaves
    /// its cluster.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<()> {
        self.removed.get_or_init(|| tokio::sync::watch::channel(()).0).subscribe()
    }
}

/// Counts a request as active on its endpoint until dropped.
pub struct ActiveRequest(pub(super) Arc<EndpointPool>);

impl ActiveRequest {
    fn new(pool: Arc<EndpointPool>) -> Self {
        pool.active_requests.fetch_add(1, Ordering::Relaxed);
        pool.stats.active_requests.inc();
        ActiveRequest(pool)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.active_requests.dec();
    }
}

/// Counts an upstream connection as active until dropped.
struct ActiveConnection {
    stats: Arc<ClusterStats>,
    _slot: ConnectionSlot,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.stats.connections_active.dec();
    }
}

/// A connection's place under the cluster's and the endpoint's connection
/// limits; dropping it wakes requests pending for a connection.
struct ConnectionSlot {
    _slot: Slot,
    connections: Arc<AtomicUsize>,
    circuit: Arc<ClusterCircuit>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.circuit.notify_released();
    }
}

/// One stream in flight on a shared HTTP/2 connection. Dropping it frees
/// the stream and, when the connection was full, wakes requests pending for
/// a stream.
struct StreamSlot {
    streams: Arc<Http2Streams>,
    limit: usize,
    circuit: Arc<ClusterCircuit>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        // The time goes first: once the count reads zero, the idle timer
        // must not see the time from before this stream.
        self.streams.idle_since.touch();
        let before = self.streams.in_flight.fetch_sub(1, Ordering::AcqRel);
        if before >= self.limit {
            self.circuit.notify_released();
        }
    }
}

/// Circuit-breaker limits for opening connections, from the cluster config
/// in force when the request started.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub priority: Priority,
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub per_host_max_connections: Option<u32>,
}

impl ConnectionLimits {
    pub fn new(breakers: &CircuitBreakers, priority: Priority) -> Self {
        let thresholds = &breakers.thresholds[priority.index()];
        ConnectionLimits {
            priority,
            max_connections: thresholds.max_connections,
            max_pending_requests: thresholds.max_pending_requests,
            per_host_max_connections: breakers.per_host_max_connections[priority.index()],
        }
    }
}

/// Limits on one stream: the route timeout as an absolute deadline, and the
/// maximum time allowed without a frame in either direction.
#[derive(Debug, Clone, Default)]
pub struct StreamTimers {
    pub deadline: Option<Instant>,
    pub idle: Option<StreamIdle>,
}

/// The idle timeout of a stream (Envoy's `stream_idle_timeout`, or the
/// route's `idle_timeout`), counted from the last frame in either
/// direction. The request body and the response body share `activity`.
#[derive(Debug, Clone)]
pub struct StreamIdle {
    pub timeout: Duration,
    pub activity: Activity,
}

impl StreamIdle {
    pub fn new(timeout: Duration) -> Self {
        StreamIdle { timeout, activity: Activity::new() }
    }
}

impl StreamTimers {
    /// Records activity on the stream, as at the start of each try.
    pub fn touch(&self) {
        if let Some(idle) = &self.idle {
            idle.activity.touch();
        }
    }

    /// When the stream fails if nothing more happens on it: the deadline, or
    /// the idle timeout after the last activity, whichever comes first.
    pub fn next_expiry(&self) -> Option<Instant> {
        let idle = self.idle.as_ref().map(|idle| idle.activity.idle_deadline(idle.timeout));
        match (self.deadline, idle) {
            (Some(deadline), Some(idle)) => Some(deadline.min(idle)),
            (deadline, idle) => deadline.or(idle),
        }
    }

    /// Returns the error of a stream whose timer fired at `now`, or `None`
    /// when activity since the timer was set moved the expiry past `now`.
    pub fn expired_at(&self, now: Instant) -> Option<UpstreamError> {
        let expiry = self.next_expiry()?;
        if now < expiry {
            return None;
        }
        match self.deadline {
            Some(deadline) if now >= deadline => Some(UpstreamError::Timeout),
            _ => Some(UpstreamError::IdleTimeout),
        }
    }
}

/// An upstream response body. It counts as an active request on its
/// endpoint until it ends, and returns an HTTP/1.1 connection to the pool
/// once read to its end. It fails the stream when the route timeout passes
/// or the stream is silent in both directions for longer than the idle
/// timeout.
pub struct UpstreamBody {
    inner: Joined<Incoming>,
    give_back: Option<(Arc<EndpointPool>, http1::SendRequest<RequestBody>)>,
    _active: ActiveRequest,
    timers: StreamTimers,
    /// One timer per stream. A frame only touches the stream's activity,
    /// and the timer moves forward when it fires, so a frame costs no
    /// allocation and no lock of tokio's timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    /// The request's circuit-breaker slot, given back when the body ends.
    request_slot: Option<Slot>,
    /// Slots of the request's retries, given back with it.
    retry_slots: Vec<Slot>,
    /// The HTTP/2 stream this response takes on its connection.
    stream_slot: Option<StreamSlot>,
    /// A frame read ahead (to find a gRPC status) and returned first.
    pushed_back: Option<Frame<Bytes>>,
    /// Cluster to tell the gRPC status found in the trailers, for outlier
    /// detection.
    grpc_report: Option<Arc<super::ClusterHandle>>,
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        give_back: Option<(Arc<EndpointPool>, http1::SendRequest<RequestBody>)>,
        active: ActiveRequest,
        timers: StreamTimers,
    ) -> Self {
        // Response headers are activity: the idle timeout counts from them.
        timers.touch();
        let timer = timers.next_expiry().map(|at| Box::pin(tokio::time::sleep_until(at)));
        let mut body = UpstreamBody { inner: Joined::new(inner), give_back, _active: active, timers, timer, request_slot: None, retry_slots: Vec::new(), stream_slot: None, pushed_back: None, grpc_report: None };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Keeps `slot` until the body ends, so the request counts as active
    /// for as long as its response streams.
    pub fn hold(&mut self, slot: Slot) {
        if !self.inner.is_end_stream() {
            self.request_slot = Some(slot);
        }
    }

    /// Keeps the retry slots of the request until the body ends.
    pub fn hold_retries(&mut self, slots: Vec<Slot>) {
        if !self.inner.is_end_stream() {
            self.retry_slots = slots;
        }
    }

    /// Keeps the HTTP/2 stream counted on its connection until the body ends.
    fn hold_stream(&mut self, slot: StreamSlot) {
        if !self.inner.is_end_stream() {
            self.stream_slot = Some(slot);
        }
    }

    /// Returns `frame` before anything else read from upstream.
    pub fn push_back(&mut self, frame: Frame<Bytes>) {
        self.pushed_back = Some(frame);
    }

    /// Reports the gRPC status of the trailers to `cluster`'s outlier
    /// detection when they arrive.
    pub fn report_grpc_trailers(&mut self, cluster: Arc<super::ClusterHandle>) {
        self.grpc_report = Some(cluster);
    }

    fn report_trailers(&mut self, frame: &Frame<Bytes>) {
        let Some(trailers) = frame.trailers_ref() else { return };
        let Some(cluster) = self.grpc_report.take() else { return };
        let code = crate::grpc::status_of(trailers);
        cluster.record_outcome(&self._active.0, super::health::grpc_outcome(code.unwrap_or(0)));
    }

    /// Polls the stream's timer. A timer that fires while activity since it
    /// was set moved the expiry later is set again and polled again.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<UpstreamError> {
        let timer = self.timer.as_mut()?;
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if let Some(error) = self.timers.expired_at(now) {
                return Some(error);
            }
            let expiry = self.timers.next_expiry()?;
            timer.as_mut().reset(expiry);
        }
        None
    }

    fn release(&mut self) {
        self.timer = None;
        self.request_slot = None;
        self.retry_slots.clear();
        self.stream_slot = None;
        if let Some((pool, sender)) = self.give_back.take() {
            pool.give_back(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        if let Some(frame) = this.pushed_back.take() {
            this.report_trailers(&frame);
            if frame.is_trailers() || this.inner.is_end_stream() {
                this.release();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.report_trailers(&frame);
                if this.inner.is_end_stream() {
                    this.release();
                } else {
                    this.timers.touch();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.give_back = None;
                Poll::Ready(Some(Err(UpstreamError::Request(error))))
            }
            Poll::Pending => {
                let Some(error) = this.poll_expired(cx) else { return Poll::Pending };
                this.give_back = None;
                this.timer = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
