//! Listener sockets: binding, the accept loop, serving each downstream
//! connection with HTTP/1.1 or HTTP/2, and draining on removal.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use legate_config::model::{Codec, HttpConnectionManager, Listener, RequestLimits};

use crate::activity::{Activity, ActivityIo};
use crate::batched_io::BatchedWrites;
use crate::connection_filters::{ConnectionFilters, LimitSlot, Rejection};
use crate::http::{handle, ConnectionContext};
use crate::snapshot::SnapshotStore;
use crate::stats::{ListenerStats, ProxyStats};

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;

/// Failure to open a listener's socket.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind listener {name:?} to {address}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Every listener socket of the proxy.
pub struct ListenerSet {
    store: SnapshotStore,
    slots: Mutex<HashMap<String, Slot>>,
    open: Arc<AtomicUsize>,
    stats: Arc<ProxyStats>,
    drain: Arc<DrainTimes>,
}

/// The times of a proxy-wide drain (shutdown or `/drain_listeners`), which
/// every connection reads when its listener drains. Zero while unset.
#[derive(Debug, Default)]
pub struct DrainTimes {
    /// How long listeners keep accepting, in milliseconds.
    accept_window_ms: AtomicU64,
    /// How long in-flight requests may still take, in milliseconds.
    grace_ms: AtomicU64,
}

impl DrainTimes {
    fn accept_window(&self) -> Duration {
        Duration::from_millis(self.accept_window_ms.load(Ordering::Relaxed))
    }

    /// Time in-flight requests get after a connection starts closing: the
    /// proxy-wide drain time, and at least the listener's `drain_timeout`.
    fn grace(&self, drain_timeout: Duration) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed)).max(drain_timeout)
    }
}

/// Counts one open downstream connection or upgraded pipe until dropped, so
/// shutdown can wait for them. It also holds the connection's place under a
/// connection limit, which its upgraded pipes share, so a WebSocket keeps
/// the place until both the connection and the pipe have closed.
pub struct OpenConnection(Arc<AtomicUsize>, Option<Arc<LimitSlot>>);

impl OpenConnection {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenConnection(count.clone(), None)
    }

    /// Counts another connection on the same tally.
    pub fn another(&self) -> OpenConnection {
        let mut another = OpenConnection::new(&self.0);
        another.1 = self.1.clone();
        another
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Slot {
    /// Address from the config; the bound one differs when the port is 0.
    address: SocketAddr,
    bound: SocketAddr,
    /// A socket bound but not accepting yet, while its listener warms.
    pending: Option<TcpListener>,
    /// Turns true when the listener's connections drain.
    running: Option<watch::Sender<bool>>,
    /// Turns true, or is dropped, when the accept loop stops.
    accepting: Option<watch::Sender<bool>>,
    drain_timeout: Duration,
}

impl ListenerSet {
    pub fn new(store: SnapshotStore, stats: Arc<ProxyStats>) -> Self {
        ListenerSet { store, slots: Mutex::new(HashMap::new()), open: Arc::new(AtomicUsize::new(0)), stats, drain: Arc::default() }
    }

    /// Binds the listener's address unless it is bound already, so an
    /// address in use is reported while the config is applied.
    pub fn prepare(&self, listener: &Listener) -> Result<(), BindError> {
        let mut slots = self.lock();
        if slots.get(&listener.name).is_some_and(|slot| slot.address == listener.address) {
            if let Some(slot) = slots.get_mut(&listener.name) {
                slot.drain_timeout = listener.drain_timeout();
            }
            return Ok(());
        }

        let socket = bind(listener.address)
            .map_err(|source| BindError { name: listener.name.clone(), address: listener.address, source })?;
        let bound = socket.local_addr().unwrap_or(listener.address);
        info!(listener = %listener.name, address = %bound, "listener bound");

        let slot = slots.entry(listener.name.clone()).or_insert_with(|| Slot {
            address: listener.address,
            bound,
            pending: None,
            running: None,
            accepting: None,
            drain_timeout: listener.drain_timeout(),
        });
        slot.address = listener.address;
        slot.bound = bound;
        slot.pending = Some(socket);
        slot.drain_timeout = listener.drain_timeout();
        Ok(())
    }

    /// Starts accepting on listeners that became active, moves changed
    /// ones to their new socket, and drains those no longer configured.
    pub fn sync(&self, active: &[Arc<Listener>], desired: &HashSet<&str>) {
        let mut slots = self.lock();
        slots.retain(|name, slot| {
            let keep = desired.contains(name.as_str());
            if !keep {
                info!(listener = %name, "listener removed, draining its connections");
                drain(slot);
            }
            keep
        });

        for listener in active {
            let Some(slot) = slots.get_mut(&listener.name) else { continue };
            let Some(socket) = slot.pending.take() else { continue };
            drain(slot);
            let (signal, drained) = watch::channel(false);
            slot.running = Some(signal);
            let (stop, stopped) = watch::channel(false);
            slot.accepting = Some(stop);
            let name: Arc<str> = Arc::from(listener.name.as_str());
            let span = info_span!("listener", name = %name, address = %slot.bound);
            let accept = AcceptLoop {
                drain: self.drain.clone(),
                listener_stats: self.stats.downstream.listener(&name),
                name,
                store: self.store.clone(),
                drained,
                stopped,
                drain_timeout: slot.drain_timeout,
                open: self.open.clone(),
                stats: self.stats.clone(),
            };
            tokio::spawn(accept.run(socket).instrument(span));
        }
    }

    /// Listener names and the addresses they are bound to.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        let slots = self.lock();
        let mut bound: Vec<_> = slots.iter().map(|(name, slot)| (name.clone(), slot.bound)).collect();
        bound.sort();
        bound
    }

    /// Drains every listener's connections at once, for shutdown. The
    /// listeners keep accepting for `accept_window`, so a client that has
    /// not yet learned of the shutdown gets one response with `Connection:
    /// close` or GOAWAY rather than a refused connection, then stop. An idle
    /// connection stays open for the window too, until its next request,
    /// and in-flight requests get `grace` to finish.
    pub fn drain_all(&self, accept_window: Duration, grace: Duration) {
        self.drain.accept_window_ms.store(accept_window.as_millis() as u64, Ordering::Relaxed);
        self.drain.grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
        let mut slots = self.lock();
        let mut stops = Vec::new();
        for slot in slots.values_mut() {
            drain_connections(slot);
            stops.extend(slot.accepting.take());
        }
        drop(slots);

        if accept_window.is_zero() {
            stop_accepting(stops);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(accept_window).await;
                stop_accepting(stops);
            });
        }
    }

    /// Returns the maximum drain timeout among the listeners.
    pub fn longest_drain_timeout(&self) -> Duration {
        self.lock().values().map(|slot| slot.drain_timeout).max().unwrap_or_default()
    }

    /// Downstream connections and upgraded pipes still open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Drains the listener's connections and stops its accept loop.
fn drain(slot: &mut Slot) {
    drain_connections(slot);
    stop_accepting(slot.accepting.take());
}

fn drain_connections(slot: &mut Slot) {
    if let Some(signal) = slot.running.take() {
        let _ = signal.send(true);
    }
}

fn stop_accepting(stops: impl IntoIterator<Item = watch::Sender<bool>>) {
    for stop in stops {
        let _ = stop.send(true);
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Everything the accept loop of one listener hands to its connections.
struct AcceptLoop {
    drain: Arc<DrainTimes>,
    name: Arc<str>,
    store: SnapshotStore,
    drained: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
    drain_timeout: Duration,
    open: Arc<AtomicUsize>,
    stats: Arc<ProxyStats>,
    listener_stats: ListenerStats,
}

impl AcceptLoop {
    async fn run(mut self, socket: TcpListener) {
        loop {
            tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok((stream, remote)) => self.spawn_connection(stream, remote),
                    Err(error) => {
                        if crate::is_out_of_descriptors(&error) {
                            warn!(%error, "accept failed: the process is out of file descriptors; raise its limit (ulimit -n)");
                        } else {
                            warn!(%error, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = self.stopped.changed() => {
                    debug!("listener stopped accepting");
                    return;
                }
            }
        }
    }

    fn spawn_connection(&self, stream: TcpStream, remote: SocketAddr) {
        let context = ConnectionContext {
            listener: self.name.clone(),
            remote,
            client_address: crate::http::client_address_value(remote),
            store: self.store.clone(),
            drained: self.drained.clone(),
            drain_timeout: self.drain_timeout,
            open: OpenConnection::new(&self.open),
            stats: self.stats.clone(),
            listener_stats: self.listener_stats.clone(),
            protocol_counted: AtomicBool::new(false),
            request_seen: self.drained.borrow().then(tokio::sync::Notify::new),
            requests: AtomicU64::new(0),
            request_arrived: tokio::sync::Notify::new(),
            drain: self.drain.clone(),
            chain: 0,
            chain_key: None,
            client_cert: None,
            secure: false,
        };
        self.listener_stats.accepted.inc();
        let span = info_span!("downstream", client.addr = %remote);
        tokio::spawn(accept_connection(stream, context, self.drained.clone(), self.drain_timeout).instrument(span));
    }
}

/// Runs the connection filters, completes the TLS handshake on a TLS
/// listener, choosing the filter chain, then serves the connection. A
/// rejected connection or a failed handshake closes this connection only.
///
/// The connection filters of a listener with one filter chain run right
/// after accept, before any TLS or HTTP byte is read. On a listener with
/// several TLS chains, SNI picks the chain, so their filters run once the
/// handshake has chosen it.
async fn accept_connection(stream: TcpStream, mut context: ConnectionContext, drained: watch::Receiver<bool>, drain_timeout: Duration) {
    // Active from accept to close, whether or not a handshake or a
    // connection filter ends it early.
    let _counted = CountedConnection::new(&context.listener_stats);
    let _ = stream.set_nodelay(true);
    let transport = {
        let snapshot = context.store.load();
        let Some(listener) = snapshot.listeners.get(&context.listener) else {
            debug!("listener has no active config, closing connection");
            return;
        };
        match &listener.tls {
            None => Transport::Plaintext(listener.chains.first().map(|chain| (chain.http.clone(), chain.connection_filters.clone()))),
            Some(tls) => Transport::Tls(tls.clone(), listener.chains.clone()),
        }
    };

    match transport {
        Transport::Plaintext(Some((settings, filters))) => {
            let Some(stream) = admit(stream, filters.as_deref(), &mut context).await else { return };
            serve_connection(stream, settings, None, context, drained, drain_timeout).await;
        }
        Transport::Plaintext(None) => {}
        Transport::Tls(tls, chains) => {
            let single = match chains.as_ref() {
                [chain] => Some(chain.connection_filters.as_deref()),
                _ => None,
            };
            let stream = match single {
                Some(filters) => match admit(stream, filters, &mut context).await {
                    Some(stream) => stream,
                    None => return,
                },
                None => stream,
            };
            match tls.accept(stream).await {
                Ok(connection) => {
                    context.listener_stats.tls_handshakes.inc();
                    let Some(chain) = chains.get(connection.chain) else { return };
                    if single.is_none() && !admit_chosen(chain.connection_filters.as_deref(), &mut context).await {
                        return;
                    }
                    context.chain = connection.chain;
                    context.chain_key = (chains.len() > 1).then(|| chain.key.clone());
                    context.client_cert = connection.client_cert;
                    context.secure = true;
                    serve_connection(connection.stream, chain.http.clone(), connection.codec, context, drained, drain_timeout).await;
                }
                Err(error) => {
                    context.listener_stats.tls_handshake_failures.inc();
                    debug!(error = %crate::tls::error_chain(&error), "TLS handshake failed, closing connection");
                }
            }
        }
    }
}

/// Runs a chain's connection filters on a new connection. Returns the
/// stream when the connection may go on; otherwise closes it, after the
/// connection limit's delay when one is set.
async fn admit<S>(stream: S, filters: Option<&ConnectionFilters>, context: &mut ConnectionContext) -> Option<S> {
    let Some(filters) = filters else { return Some(stream) };
    match filters.admit(tokio::time::Instant::now()) {
        Ok(slot) => {
            context.open.1 = slot.map(Arc::new);
            Some(stream)
        }
        Err(rejection) => {
            reject(rejection).await;
            None
        }
    }
}

/// Runs the connection filters of the chain a TLS handshake chose; returns
/// whether the connection may go on.
async fn admit_chosen(filters: Option<&ConnectionFilters>, context: &mut ConnectionContext) -> bool {
    admit((), filters, context).await.is_some()
}

/// Logs a rejected connection and waits out the connection limit's delay;
/// the caller then closes the connection by dropping it unread.
async fn reject(rejection: Rejection) {
    match rejection {
        Rejection::RateLimited { stat_prefix } => {
            debug!(%stat_prefix, "connection rate limit reached, closing connection");
        }
        Rejection::OverLimit { stat_prefix, delay } => {
            debug!(%stat_prefix, delay = ?delay, "connection limit reached, closing connection");
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The start of a listener's connections: plaintext with its one filter
/// chain's settings and connection filters, or a TLS handshake that picks
/// the chain.
enum Transport {
    Plaintext(Option<(Arc<HttpConnectionManager>, Option<Arc<ConnectionFilters>>)>),
    Tls(Arc<crate::tls::ServerChains>, Arc<[crate::snapshot::ListenerRoutes]>),
}

/// Serves one downstream connection until the peer closes it, until it has
/// been idle for the connection manager's idle timeout, or until the
/// listener drains. Draining and idling both close gracefully: in-flight
/// streams get `drain_timeout` to finish. `negotiated` is the codec ALPN
/// chose, which overrides the connection manager's `codec_type`.
async fn serve_connection<S>(
    stream: S,
    settings: Arc<HttpConnectionManager>,
    negotiated: Option<Codec>,
    context: ConnectionContext,
    mut drained: watch::Receiver<bool>,
    drain_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let codec = negotiated.unwrap_or(settings.codec);
    let builder = connection_builder(&settings, codec);
    let activity = Activity::new();
    let stream = ActivityIo::new(stream, activity.clone());
    let io = TokioIo::new(match codec {
        Codec::Auto => BatchedWrites::detect(stream),
        Codec::Http1 => BatchedWrites::pass_through(stream),
        Codec::Http2 => BatchedWrites::http2(stream),
    });
    let context = Arc::new(context);
    let watched = context.clone();
    let service = service_fn(move |request| handle(request, context.clone()));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);

    let idle_timeout = settings.idle_timeout;
    let closing = if let Some(request_seen) = &watched.request_seen {
        // Accepted while draining: serve the request on its way, then close.
        // Closing before hyper has read the request would drop it.
        tokio::select! {
            result = connection.as_mut() => {
                log_connection_end(result);
                return;
            }
            _ = request_seen.notified() => {}
            _ = tokio::time::sleep(drain_timeout) => {}
        }
        "accepted while draining"
    } else {
        loop {
            let idle_check = async {
                match idle_timeout {
                    Some(timeout) => tokio::time::sleep_until(activity.idle_deadline(timeout)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = connection.as_mut() => {
                    log_connection_end(result);
                    return;
                }
                _ = drained.changed() => {
                    if let Some(result) = serve_until_next_request(connection.as_mut(), &watched).await {
                        log_connection_end(result);
                        return;
                    }
                    break "listener draining";
                }
                _ = idle_check => {
                    let timeout = idle_timeout.unwrap_or_default();
                    if tokio::time::Instant::now() >= activity.idle_deadline(timeout) {
                        break "idle timeout";
                    }
                }
            }
        }
    };

    debug!(reason = closing, "closing downstream connection gracefully");
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(watched.drain.grace(drain_timeout), connection.as_mut()).await {
        Ok(result) => log_connection_end(result),
        Err(_) => debug!("drain timeout passed, closing connection"),
    }
}

/// Keeps a draining connection open during the accept window until its next
/// request arrives, so that a client sending on an idle keep-alive
/// connection at that moment gets a response (with `Connection: close`)
/// rather than a closed socket. Returns the connection's result when it
/// ended meanwhile.
async fn serve_until_next_request<F>(mut connection: Pin<&mut F>, context: &ConnectionContext) -> Option<F::Output>
where
    F: std::future::Future,
{
    let window = context.drain.accept_window();
    if window.is_zero() {
        return None;
    }
    let seen = context.requests.load(Ordering::Relaxed);
    let deadline = tokio::time::sleep(window);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            result = connection.as_mut() => return Some(result),
            _ = &mut deadline => return None,
            // A permit stored by an earlier request wakes this too, so the
            // count separates a new request from an old one.
            _ = context.request_arrived.notified() => {
                if context.requests.load(Ordering::Relaxed) > seen {
                    return None;
                }
            }
        }
    }
}

/// Counts a downstream connection as active until dropped, then as closed.
struct CountedConnection(ListenerStats);

impl CountedConnection {
    fn new(stats: &ListenerStats) -> Self {
        stats.active.inc();
        CountedConnection(stats.clone())
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.0.active.dec();
        self.0.closed.inc();
    }
}

fn connection_builder(settings: &HttpConnectionManager, codec: Codec) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match codec {
        Codec::Auto => {}
        Codec::Http1 => builder = builder.http1_only(),
        Codec::Http2 => builder = builder.http2_only(),
    }
    let http2 = settings.http2;
    builder.http2().enable_connect_protocol();
    apply_limits(&mut builder, &settings.limits);
    if let Some(window) = http2.initial_stream_window_size {
        builder.http2().initial_stream_window_size(window);
    }
    if let Some(window) = http2.initial_connection_window_size {
        builder.http2().initial_connection_window_size(window);
    }
    if let Some(streams) = http2.max_concurrent_streams {
        builder.http2().max_concurrent_streams(streams);
    }
    builder
}

/// hyper's own limit on request headers, which it keeps on the stack.
const HYPER_DEFAULT_MAX_HEADERS: u32 = 100;

/// The smallest read buffer hyper accepts for HTTP/1.
const HYPER_MIN_BUFFER: usize = 8192;

/// Header size and count limits, and the time allowed for HTTP/1 request
/// headers (HTTP/2 sends each header block whole).
fn apply_limits(builder: &mut auto::Builder<TokioExecutor>, limits: &RequestLimits) {
    let mut http1 = builder.http1();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.headers_timeout);
    http1.max_buf_size((limits.max_header_bytes as usize).max(HYPER_MIN_BUFFER));
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // hyper moves the header array to the heap when this is set.
        http1.max_headers(limits.max_headers as usize);
    }
    builder.http2().max_header_list_size(limits.max_header_bytes);
}

fn log_connection_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    match result {
        Ok(()) => debug!("downstream closed the connection"),
        Err(error) => debug!(%error, "downstream connection ended with an error"),
    }
}
