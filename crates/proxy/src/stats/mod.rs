//! The data plane's Prometheus metrics, declared in one place.
//!
//! Every label value comes from config (listener, virtual host, route and
//! cluster names) or from a fixed set (code class, protocol, flag, reason),
//! so no request can create a new series. Handles for a route or a cluster
//! are made when the route table or cluster is built, but their series are
//! created on first use. Otherwise a config of 10,000 clusters would hash
//! hundreds of thousands of label sets before it could take traffic. The
//! request path only increments them.

mod grpc;
mod labels;

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub use grpc::{GrpcMethodStats, GrpcStats, OTHER_METHOD};
pub use labels::*;

/// Histogram buckets for durations: 0.5 ms to about 65 s, doubling.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric family of one proxy process.
pub struct ProxyStats {
    registry: Registry,
    access_log_dropped: DroppedLines,
    pub downstream: DownstreamStats,
    pub http: HttpStats,
    pub upstream: UpstreamStats,
    pub websocket: WebSocketStats,
    pub xds: XdsStats,
    /// The gRPC families, in a registry of their own because their names
    /// take no `legate_` prefix.
    grpc_registry: Registry,
    pub grpc: Arc<GrpcStats>,
}

pub struct DownstreamStats {
    accepted: Family<ListenerLabels, Counter>,
    active: Family<ListenerLabels, Gauge>,
    closed: Family<ListenerLabels, Counter>,
    by_protocol: Family<ProtocolLabels, Counter>,
    tls_handshakes: Family<ListenerLabels, Counter>,
    tls_handshake_failures: Family<ListenerLabels, Counter>,
    connections_rate_limited: Family<ListenerStatPrefixLabels, Counter>,
    connections_limited: Family<ListenerStatPrefixLabels, Counter>,
    connection_limit_active: Family<ListenerStatPrefixLabels, Gauge>,
}

pub struct HttpStats {
    routes: Arc<RouteFamilies>,
    responses_by_code: Family<CodeLabels, Counter>,
    response_flags: Family<FlagLabels, Counter>,
    codes: Box<[OnceLock<Counter>]>,
    local_rate_limited: Family<StatPrefixLabels, Counter>,
    ext_authz: Family<AuthzResultLabels, Counter>,
    jwt_authn: Family<AuthzResultLabels, Counter>,
    /// The handles of route `none`, made once and shared by every request
    /// that no route takes.
    unrouted: OnceLock<Arc<RouteStats>>,
}

/// The families with one series set per route, shared with the routes'
/// handles so that each creates its series on first use.
struct RouteFamilies {
    requests: Family<RouteClassLabels, Counter>,
    duration: HistogramFamily<RouteLabels>,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    /// The `DC` response flag's counter, one for all routes.
    downstream_terminations: Counter,
}

pub struct UpstreamStats {
    clusters: Arc<ClusterFamilies>,
    endpoints: Family<ClusterLabels, Gauge>,
    endpoints_healthy: Family<ClusterLabels, Gauge>,
    pub(crate) circuits: Arc<crate::upstream::CircuitGauges>,
}

/// The families a cluster's requests and connections count in, shared with
/// the clusters' handles so that each creates its series on first use.
struct ClusterFamilies {
    requests: Family<ClusterClassLabels, Counter>,
    duration: HistogramFamily<ClusterLabels>,
    active_requests: Family<ClusterLabels, Gauge>,
    connections_opened: Family<ClusterLabels, Counter>,
    connections_active: Family<ClusterLabels, Gauge>,
    connect_failures: Family<ClusterLabels, Counter>,
    connect_timeouts: Family<ClusterLabels, Counter>,
    retries: Family<ClusterLabels, Counter>,
    retries_skipped: Family<ClusterLabels, Counter>,
    ejections: Family<ClusterLabels, Counter>,
    endpoints_ejected: Family<ClusterLabels, Gauge>,
    health_checks: Family<HealthCheckLabels, Counter>,
}

pub struct WebSocketStats {
    pub upgrades: Family<UpgradeResultLabels, Counter>,
    pub active: Gauge,
    pub bytes: Family<DirectionLabels, Counter>,
    pub closes: Family<CloseReasonLabels, Counter>,
}

/// Lines dropped per access log because its writer fell behind.
type DroppedLines = Family<AccessLogLabels, Counter>;

pub struct XdsStats {
    updates: Family<XdsUpdateLabels, Counter>,
    resources_received: Family<XdsTypeLabels, Counter>,
    version: Family<XdsVersionLabels, Gauge>,
    pub connected: Gauge,
    current_versions: std::sync::Mutex<std::collections::HashMap<&'static str, String>>,
}

impl ProxyStats {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("legate");
        let downstream = DownstreamStats::register(&mut registry);
        let http = HttpStats::register(&mut registry);
        let upstream = UpstreamStats::register(&mut registry);
        let websocket = WebSocketStats::register(&mut registry);
        let xds = XdsStats::register(&mut registry);
        let access_log_dropped = DroppedLines::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the log's writer fell behind, per log (path, stdout or stderr)",
            access_log_dropped.clone(),
        );
        let mut grpc_registry = Registry::default();
        let grpc = GrpcStats::register(&mut grpc_registry);
        Arc::new(ProxyStats { registry, access_log_dropped, downstream, http, upstream, websocket, xds, grpc_registry, grpc })
    }

    /// Handle counting the dropped lines of one access log.
    pub fn access_log_dropped(&self, log: &str) -> Counter {
        self.access_log_dropped.get_or_create_owned(&AccessLogLabels { log: log.to_string() })
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &self.grpc_registry);
        let _ = encode_eof(&mut text);
        text
    }
}

impl DownstreamStats {
    fn register(registry: &mut Registry) -> Self {
        let stats = DownstreamStats {
            accepted: Family::default(),
            active: Family::default(),
            closed: Family::default(),
            by_protocol: Family::default(),
            tls_handshakes: Family::default(),
            tls_handshake_failures: Family::default(),
            connections_rate_limited: Family::default(),
            connections_limited: Family::default(),
            connection_limit_active: Family::default(),
        };
        registry.register("downstream_connections_accepted", "Downstream connections accepted, per listener", stats.accepted.clone());
        registry.register("downstream_connections_active", "Downstream connections open now, per listener", stats.active.clone());
        registry.register("downstream_connections_closed", "Downstream connections closed, per listener", stats.closed.clone());
        registry.register(
            "downstream_connections_by_protocol",
            "Downstream connections per listener by the protocol of their first request (http1, http2)",
            stats.by_protocol.clone(),
        );
        registry.register("listener_tls_handshakes", "TLS handshakes completed, per listener", stats.tls_handshakes.clone());
        registry.register(
            "listener_tls_handshake_failures",
            "TLS handshakes that failed or timed out, per listener; the connection is closed",
            stats.tls_handshake_failures.clone(),
        );
        registry.register(
            "listener_connections_rate_limited",
            "Downstream connections closed by the connection rate limit filter, per listener and the filter's stat_prefix",
            stats.connections_rate_limited.clone(),
        );
        registry.register(
            "listener_connections_limited",
            "Downstream connections closed by the connection limit filter, per listener and the filter's stat_prefix",
            stats.connections_limited.clone(),
        );
        registry.register(
            "listener_connection_limit_active",
            "Downstream connections open now that a connection limit filter counts, per listener and the filter's stat_prefix",
            stats.connection_limit_active.clone(),
        );
        stats
    }

    /// Handle counting the connections a connection rate limit filter closed.
    pub fn connections_rate_limited(&self, listener: &str, stat_prefix: &str) -> Counter {
        self.connections_rate_limited.get_or_create_owned(&listener_stat_prefix(listener, stat_prefix))
    }

    /// Handle counting the connections a connection limit filter closed.
    pub fn connections_limited(&self, listener: &str, stat_prefix: &str) -> Counter {
        self.connections_limited.get_or_create_owned(&listener_stat_prefix(listener, stat_prefix))
    }

    /// Gauge of the open connections a connection limit filter counts.
    pub fn connection_limit_active(&self, listener: &str, stat_prefix: &str) -> Gauge {
        self.connection_limit_active.get_or_create_owned(&listener_stat_prefix(listener, stat_prefix))
    }

    /// Handles for one listener's connections.
    pub fn listener(&self, listener: &str) -> ListenerStats {
        let labels = ListenerLabels { listener: listener.to_string() };
        ListenerStats {
            accepted: self.accepted.get_or_create_owned(&labels),
            active: self.active.get_or_create_owned(&labels),
            closed: self.closed.get_or_create_owned(&labels),
            http1: self.by_protocol.get_or_create_owned(&ProtocolLabels { listener: listener.to_string(), protocol: "http1" }),
            http2: self.by_protocol.get_or_create_owned(&ProtocolLabels { listener: listener.to_string(), protocol: "http2" }),
            tls_handshakes: self.tls_handshakes.get_or_create_owned(&labels),
            tls_handshake_failures: self.tls_handshake_failures.get_or_create_owned(&labels),
        }
    }
}

fn listener_stat_prefix(listener: &str, stat_prefix: &str) -> ListenerStatPrefixLabels {
    ListenerStatPrefixLabels { listener: listener.to_string(), stat_prefix: stat_prefix.to_string() }
}

/// Counters of one listener, cloned into each of its connections.
#[derive(Clone)]
pub struct ListenerStats {
    pub accepted: Counter,
    pub active: Gauge,
    pub closed: Counter,
    pub http1: Counter,
    pub http2: Counter,
    pub tls_handshakes: Counter,
    pub tls_handshake_failures: Counter,
}

impl HttpStats {
    fn register(registry: &mut Registry) -> Self {
        let response_flags: Family<FlagLabels, Counter> = Family::default();
        let downstream_terminations =
            response_flags.get_or_create_owned(&FlagLabels { flag: ResponseFlag::DownstreamConnectionTermination.as_str() });
        let routes = RouteFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            downstream_terminations,
        };
        let stats = HttpStats {
            routes: Arc::new(routes),
            responses_by_code: Family::default(),
            response_flags,
            codes: (0..600).map(|_| OnceLock::new()).collect(),
            local_rate_limited: Family::default(),
            ext_authz: Family::default(),
            jwt_authn: Family::default(),
            unrouted: OnceLock::new(),
        };
        registry.register(
            "http_ext_authz",
            "External authorization checks by result: ok, denied, error (rejected), failure_mode_allowed (passed despite an error)",
            stats.ext_authz.clone(),
        );
        registry.register(
            "http_jwt_authn",
            "JWT authentication results: ok, missing (rejected), failed (rejected), passed_without_jwt (allowed by allow_missing or allow_missing_or_failed)",
            stats.jwt_authn.clone(),
        );
        registry.register(
            "http_local_rate_limited",
            "Requests over a local rate limit, per the filter's stat_prefix; those not enforced were passed on",
            stats.local_rate_limited.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests per virtual host and route by response code class; route \"none\" counts requests no route matched",
            stats.routes.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request headers to the end of the response, per virtual host and route",
            Unit::Seconds,
            stats.routes.duration.clone(),
        );
        registry.register_with_unit("http_request_body", "Request body bytes received", Unit::Bytes, stats.routes.request_bytes.clone());
        registry.register_with_unit("http_response_body", "Response body bytes sent", Unit::Bytes, stats.routes.response_bytes.clone());
        registry.register("http_responses_by_code", "HTTP responses by status code", stats.responses_by_code.clone());
        registry.register(
            "http_response_flags",
            "Requests the proxy ended or answered itself, by Envoy response flag (NR, NC, UH, UF, UT, SI, UC, RT, RL, UAEX)",
            stats.response_flags.clone(),
        );
        stats
    }

    /// Handles of route `none` in virtual host `none`: requests rejected
    /// before routing, or that matched no route.
    pub fn unrouted(&self) -> Arc<RouteStats> {
        self.unrouted.get_or_init(|| self.route("none", "none")).clone()
    }

    /// Handles for one route; `route` is `none` for requests that matched
    /// no route. The series are created when a request first counts.
    pub fn route(&self, virtual_host: &str, route: &str) -> Arc<RouteStats> {
        Arc::new(RouteStats {
            virtual_host: virtual_host.into(),
            route: route.into(),
            families: self.routes.clone(),
            series: OnceLock::new(),
        })
    }

    /// Counts a response by its exact status code.
    pub fn count_code(&self, code: u16) {
        let Some(slot) = self.codes.get(usize::from(code)) else { return };
        slot.get_or_init(|| self.responses_by_code.get_or_create_owned(&CodeLabels { code })).inc();
    }

    /// Counter of the requests over the local rate limit with `stat_prefix`.
    pub fn local_rate_limited(&self, stat_prefix: &str) -> Counter {
        self.local_rate_limited.get_or_create_owned(&StatPrefixLabels { stat_prefix: stat_prefix.to_string() })
    }

    /// Counts an external authorization check; `result` is one of the four
    /// fixed values the metric's help text lists.
    pub fn count_ext_authz(&self, result: &'static str) {
        self.ext_authz.get_or_create(&AuthzResultLabels { result }).inc();
    }

    /// Counts a JWT authentication result; `result` is one of the four fixed
    /// values the metric's help text lists.
    pub fn count_jwt_authn(&self, result: &'static str) {
        self.jwt_authn.get_or_create(&AuthzResultLabels { result }).inc();
    }

    pub fn count_flag(&self, flag: ResponseFlag) {
        self.response_flags.get_or_create(&FlagLabels { flag: flag.as_str() }).inc();
    }
}

/// Counters of one route, created on first use; field access goes through
/// `Deref` to the route's series.
pub struct RouteStats {
    virtual_host: Box<str>,
    route: Box<str>,
    families: Arc<RouteFamilies>,
    series: OnceLock<RouteSeries>,
}

impl Deref for RouteStats {
    type Target = RouteSeries;

    fn deref(&self) -> &RouteSeries {
        self.series.get_or_init(|| self.families.series(&self.virtual_host, &self.route))
    }
}

impl RouteFamilies {
    fn series(&self, virtual_host: &str, route: &str) -> RouteSeries {
        let class = |code_class: &'static str| {
            self.requests.get_or_create_owned(&RouteClassLabels {
                virtual_host: virtual_host.to_string(),
                route: route.to_string(),
                code_class,
            })
        };
        let labels = RouteLabels { virtual_host: virtual_host.to_string(), route: route.to_string() };
        RouteSeries {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.duration.get_or_create_owned(&labels),
            request_bytes: self.request_bytes.get_or_create_owned(&labels),
            response_bytes: self.response_bytes.get_or_create_owned(&labels),
            downstream_terminations: self.downstream_terminations.clone(),
        }
    }
}

/// The series of one route.
pub struct RouteSeries {
    by_class: [Counter; 5],
    pub duration: Histogram,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    /// The `DC` response flag's counter, resolved ahead so that a request
    /// cut off by its downstream counts without a lookup.
    pub downstream_terminations: Counter,
}

impl RouteSeries {
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
    }
}

impl UpstreamStats {
    fn register(registry: &mut Registry) -> Self {
        let clusters = ClusterFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets),
            active_requests: Family::default(),
            connections_opened: Family::default(),
            connections_active: Family::default(),
            connect_failures: Family::default(),
            connect_timeouts: Family::default(),
            retries: Family::default(),
            retries_skipped: Family::default(),
            ejections: Family::default(),
            endpoints_ejected: Family::default(),
            health_checks: Family::default(),
        };
        let stats = UpstreamStats {
            clusters: Arc::new(clusters),
            endpoints: Family::default(),
            endpoints_healthy: Family::default(),
            circuits: Arc::default(),
        };
        let clusters = &stats.clusters;
        registry.register("upstream_requests", "Upstream requests per cluster by response code class", clusters.requests.clone());
        registry.register_with_unit(
            "upstream_request_duration",
            "Time from sending the request upstream to the end of the response headers, per cluster",
            Unit::Seconds,
            clusters.duration.clone(),
        );
        registry.register("upstream_requests_active", "Upstream requests in flight, per cluster", clusters.active_requests.clone());
        registry.register("upstream_connections_opened", "Upstream connections opened, per cluster", clusters.connections_opened.clone());
        registry.register("upstream_connections_active", "Upstream connections open now, per cluster", clusters.connections_active.clone());
        registry.register("upstream_connect_failures", "Upstream connection attempts refused or failed, per cluster", clusters.connect_failures.clone());
        registry.register("upstream_connect_timeouts", "Upstream connection attempts that timed out, per cluster", clusters.connect_timeouts.clone());
        registry.register("upstream_endpoints", "Endpoints of each warm cluster", stats.endpoints.clone());
        registry.register("upstream_endpoints_healthy", "Endpoints of each warm cluster that take traffic", stats.endpoints_healthy.clone());
        registry.register_collector(Box::new(stats.circuits.clone()));
        registry.register("upstream_retries", "Retries sent, per cluster", clusters.retries.clone());
        registry.register("upstream_outlier_ejections", "Endpoints ejected by outlier detection, per cluster", clusters.ejections.clone());
        registry.register("upstream_endpoints_ejected", "Endpoints ejected now, per cluster", clusters.endpoints_ejected.clone());
        registry.register("upstream_health_checks", "Active health checks by result (passed, failed), per cluster", clusters.health_checks.clone());
        registry.register(
            "upstream_retries_skipped",
            "Retries not sent because the request body was too large to replay (1 MiB), per cluster",
            clusters.retries_skipped.clone(),
        );
        stats
    }

    /// Handles for one cluster. Only the endpoint gauges, which read before
    /// any traffic, are created now; the other series on first use.
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterStats> {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        Arc::new(ClusterStats {
            endpoints: self.endpoints.get_or_create_owned(&labels),
            endpoints_healthy: self.endpoints_healthy.get_or_create_owned(&labels),
            cluster: labels.cluster.into(),
            families: self.clusters.clone(),
            series: OnceLock::new(),
        })
    }

    /// Drops the series of a cluster that no longer exists.
    pub fn remove_cluster(&self, cluster: &str) {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        self.endpoints.remove(&labels);
        self.endpoints_healthy.remove(&labels);
    }
}

/// Counters of one cluster, shared by its endpoint pools and carried over
/// to the cluster's next handle on updates. Field access goes through
/// `Deref` to the series that are created on first use.
pub struct ClusterStats {
    pub endpoints: Gauge,
    pub endpoints_healthy: Gauge,
    cluster: Box<str>,
    families: Arc<ClusterFamilies>,
    series: OnceLock<ClusterSeries>,
}

impl Deref for ClusterStats {
    type Target = ClusterSeries;

    fn deref(&self) -> &ClusterSeries {
        self.series.get_or_init(|| self.families.series(&self.cluster))
    }
}

impl ClusterFamilies {
    fn series(&self, cluster: &str) -> ClusterSeries {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        let class = |code_class: &'static str| {
            self.requests.get_or_create_owned(&ClusterClassLabels { cluster: cluster.to_string(), code_class })
        };
        let health_check = |result: &'static str| {
            self.health_checks.get_or_create_owned(&HealthCheckLabels { cluster: cluster.to_string(), result })
        };
        ClusterSeries {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.duration.get_or_create_owned(&labels),
            active_requests: self.active_requests.get_or_create_owned(&labels),
            connections_opened: self.connections_opened.get_or_create_owned(&labels),
            connections_active: self.connections_active.get_or_create_owned(&labels),
            connect_failures: self.connect_failures.get_or_create_owned(&labels),
            connect_timeouts: self.connect_timeouts.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            retries_skipped: self.retries_skipped.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
            endpoints_ejected: self.endpoints_ejected.get_or_create_owned(&labels),
            health_checks_passed: health_check("passed"),
            health_checks_failed: health_check("failed"),
        }
    }
}

/// The series of one cluster's requests and connections.
pub struct ClusterSeries {
    by_class: [Counter; 5],
    pub duration: Histogram,
    pub active_requests: Gauge,
    pub connections_opened: Counter,
    pub connections_active: Gauge,
    pub connect_failures: Counter,
    pub connect_timeouts: Counter,
    pub retries: Counter,
    pub retries_skipped: Counter,
    pub ejections: Counter,
    pub endpoints_ejected: Gauge,
    pub health_checks_passed: Counter,
    pub health_checks_failed: Counter,
}

impl ClusterSeries {
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
    }
}

impl WebSocketStats {
    fn register(registry: &mut Registry) -> Self {
        let stats = WebSocketStats {
            upgrades: Family::default(),
            active: Gauge::default(),
            bytes: Family::default(),
            closes: Family::default(),
        };
        registry.register(
            "websocket_upgrades",
            "WebSocket upgrades by result: accepted (101), refused by the route, failed (upstream did not switch)",
            stats.upgrades.clone(),
        );
        registry.register("websocket_active", "WebSockets open now", stats.active.clone());
        registry.register_with_unit(
            "websocket_transferred",
            "Bytes piped through WebSockets, by direction",
            Unit::Bytes,
            stats.bytes.clone(),
        );
        registry.register("websocket_closes", "WebSockets closed, by reason", stats.closes.clone());
        stats
    }
}

impl XdsStats {
    fn register(registry: &mut Registry) -> Self {
        let stats = XdsStats {
            updates: Family::default(),
            resources_received: Family::default(),
            version: Family::default(),
            connected: Gauge::default(),
            current_versions: Default::default(),
        };
        registry.register("xds_updates", "xDS responses per resource type by result (applied, rejected)", stats.updates.clone());
        registry.register(
            "xds_resources_received",
            "Resources received in xDS responses per resource type; a delta response counts only what changed",
            stats.resources_received.clone(),
        );
        registry.register(
            "xds_version_info",
            "Config version in force per resource type, as the version label; the value is always 1",
            stats.version.clone(),
        );
        registry.register("xds_connected", "1 while the ADS stream to the control plane is established", stats.connected.clone());
        stats
    }

    pub fn count_update(&self, type_name: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.updates.get_or_create(&XdsUpdateLabels { resource_type: type_name, result }).inc();
    }

    pub fn count_resources(&self, type_name: &'static str, count: usize) {
        self.resources_received.get_or_create(&XdsTypeLabels { resource_type: type_name }).inc_by(count as u64);
    }

    /// Records the version in force for a type, replacing the previous one
    /// so that each type has one series.
    pub fn set_version(&self, type_name: &'static str, version: &str) {
        let mut current = self.current_versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = current.insert(type_name, version.to_string()) {
            self.version.remove(&XdsVersionLabels { resource_type: type_name, version: previous });
        }
        self.version.get_or_create(&XdsVersionLabels { resource_type: type_name, version: version.to_string() }).set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_series_wait_for_first_use() {
        let stats = ProxyStats::new();
        let cluster = stats.upstream.cluster("idle");
        cluster.endpoints.set(2);

        let text = stats.encode();
        assert!(text.contains("legate_upstream_endpoints{cluster=\"idle\"} 2"), "{text}");
        assert!(!text.contains("legate_upstream_requests_total{cluster=\"idle\""), "{text}");

        cluster.count_status(200);
        let text = stats.encode();
        assert!(text.contains("legate_upstream_requests_total{cluster=\"idle\",code_class=\"2xx\"} 1"), "{text}");
    }

    #[test]
    fn route_series_wait_for_first_use() {
        let stats = ProxyStats::new();
        let route = stats.http.route("all", "r1");
        assert!(!stats.encode().contains("route=\"r1\""));

        route.count_status(404);
        let again = stats.http.route("all", "r1");
        again.count_status(404);
        let text = stats.encode();
        assert!(text.contains("legate_http_requests_total{virtual_host=\"all\",route=\"r1\",code_class=\"4xx\"} 2"), "{text}");
    }
}
