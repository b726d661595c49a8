//! Legate's own config types: validated, with regexes compiled and defaults
//! filled in, ready for the data path.

mod access_log;
mod auth;
mod bootstrap;
mod cluster;
mod endpoint;
mod grpc;
mod health;
mod jwt_authn;
mod listener;
mod network_filter;
mod rate_limit;
mod route;
mod secret;
mod tls;

pub use auth::{
    ApiKeyAuth, ApiKeyAuthPerRoute, ApiKeyCredential, ApiKeyForwarding, ExtAuthz, ExtAuthzService, HttpAuthService, KeySource, PerRoute,
    RouteFilterConfigs,
};
pub use jwt_authn::{ClaimToHeader, EcCurve, Jwk, JwkKey, JwtAuthn, JwtPerRoute, JwtProvider, JwtRequirement, JwtRule, TokenSource};
pub use rate_limit::{LocalRateLimit, LocalRateLimitDescriptor, RateLimit, RateLimitAction, TokenBucket};
pub use bootstrap::{AdsConfig, Bootstrap, Node};
pub use cluster::{
    CircuitBreakers, Cluster, DiscoveryType, Http2Settings, LbPolicy, Priority, RetryBudget, Thresholds, UpstreamProtocol,
};
pub use grpc::{CorsPolicy, GrpcStatsConfig, HttpFilter, MaxStreamDuration};
pub use access_log::{AccessLog, Comparison, LogFilter, LogFormat, LogOperator, LogSink, LogToken, DEFAULT_FORMAT};
pub use health::{HealthCheck, HealthCheckKind, OutlierDetection};
pub use endpoint::{ClusterLoadAssignment, EndpointAddress, HealthStatus, LbEndpoint};
pub use listener::{
    Codec, EscapedSlashes, FilterChain, HttpConnectionManager, Listener, PathNormalization, RequestLimits, RouteSource, UpgradeConfig,
};
pub use network_filter::{ConnectionFilter, ConnectionLimit, ConnectionRateLimit};
pub use route::{
    ClusterSelection, DomainMatcher, ForwardAction, HashPolicy, HashSource, HeaderMatch, HeaderMatcher, HostRewrite, PathMatch, Route,
    RetryOn, RetryPolicy, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WebSocketFrames, WeightedCluster,
};
pub use secret::{Secret, SecretKind, SecretLookupError, Secrets};
pub use tls::{
    CertificateValidation, ClientCertDetails, DataSource, DataSourceError, DownstreamTls, ForwardClientCert, SanType,
    SubjectAltNameMatcher, TlsCertificate, TlsVersion, TlsVersions, UpstreamTls,
};
