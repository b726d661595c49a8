//! Upstream clusters: endpoints, load balancing and connection pools.

mod checks;
mod circuit;
mod dns;
mod health;
mod lb;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use legate_config::model::{Cluster, LbEndpoint};

use crate::stats::{ClusterStats, UpstreamStats};
use crate::http::body::RequestBodyError;

pub use circuit::{BreakerReading, ClusterCircuit, Resource, Slot};
pub use dns::{spawn_resolver, Resolved};
pub use health::{grpc_outcome, status_outcome, EndpointHealth, RequestOutcome};
pub use lb::LoadBalancer;
pub use pool::{ConnectionLimits, EndpointPool, Membership, PoolSettings, StreamIdle, StreamTimers, UpstreamBody};

/// Why an upstream exchange failed, which decides the downstream status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection to upstream {address} failed")]
    Connect {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with upstream {address} failed")]
    Tls {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to upstream {address} timed out")]
    ConnectTimeout { address: SocketAddr },
    #[error("HTTP handshake with upstream {address} failed")]
    Handshake {
        address: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
    #[error("upstream response timed out")]
    Timeout,
    #[error("upstream stream was idle longer than the idle timeout")]
    IdleTimeout,
    #[error("circuit breaker for {} is full", .0.as_str())]
    Overflow(Resource),
}

impl UpstreamError {
    /// Tells whether the downstream request body hit the connection
    /// manager's request timeout, which the upstream client reports as its
    /// own error.
    pub fn is_request_timeout(&self) -> bool {
        matches!(self.request_body_error(), Some(RequestBodyError::Timeout))
    }

    /// Tells whether the request failed because its body from downstream
    /// could not be read, such as a malformed chunked body.
    pub fn is_downstream_body_error(&self) -> bool {
        matches!(self.request_body_error(), Some(RequestBodyError::Downstream(_)))
    }

    /// Finds the downstream body error among the causes of a failed upstream
    /// request, since the upstream client wraps it in its own error.
    fn request_body_error(&self) -> Option<&RequestBodyError> {
        let UpstreamError::Request(error) = self else { return None };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(body_error) = cause.downcast_ref::<RequestBodyError>() {
                return Some(body_error);
            }
            source = cause.source();
        }
        None
    }

    /// Tells whether the request never reached the upstream, so no response
    /// bytes were lost.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } | UpstreamError::Tls { .. } | UpstreamError::Handshake { .. }
        )
    }
}

/// A warm cluster: its config, endpoints and their connection pools.
pub struct ClusterHandle {
    pub config: Arc<Cluster>,
    pub balancer: LoadBalancer,
    /// Metric handles, carried over from the previous handle like `circuit`.
    pub stats: Arc<ClusterStats>,
    /// Circuit breakers, carried over from the previous handle of the same
    /// cluster so that counts survive updates.
    pub circuit: Arc<ClusterCircuit>,
}

impl ClusterHandle {
    /// Builds a cluster over `endpoints` (already resolved to addresses),
    /// reusing the pools of `previous` for endpoints that stay, so live
    /// connections survive config changes.
    pub fn new(
        config: Arc<Cluster>,
        tls: Option<Arc<crate::tls::UpstreamConnector>>,
        endpoints: &[(SocketAddr, LbEndpoint)],
        previous: Option<&ClusterHandle>,
        stats: &UpstreamStats,
    ) -> Self {
        let circuit = previous.map_or_else(|| ClusterCircuit::new(&config.name, stats), |p| p.circuit.clone());
        circuit.publish_limits(&config.circuit_breakers);
        // The previous handle's series carry over, so counters survive updates
        // and a changed cluster creates no series.
        let stats = previous.map_or_else(|| stats.cluster(&config.name), |p| p.stats.clone());
        stats.endpoints.set(endpoints.len() as i64);
        stats.endpoints_healthy.set(endpoints.iter().filter(|(_, e)| e.is_routable()).count() as i64);
        let settings = PoolSettings {
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            http2: config.http2,
            tls,
        };
        let reusable: HashMap<SocketAddr, &Arc<EndpointPool>> = previous
            .map(|previous| previous.balancer.pools().map(|pool| (pool.address(), pool)).collect())
            .unwrap_or_default();

        let members = endpoints
            .iter()
            .map(|(address, endpoint)| {
                let pool = match reusable.get(address) {
                    Some(pool) if pool.settings() == &settings => Arc::clone(pool),
                    Some(pool) => {
                        EndpointPool::new(*address, settings.clone(), pool.membership().clone(), stats.clone(), circuit.clone())
                    }
                    None => EndpointPool::new(*address, settings.clone(), Membership::new(), stats.clone(), circuit.clone()),
                };
                (pool, endpoint.clone())
            })
            .collect();
        ClusterHandle { balancer: LoadBalancer::new(config.lb_policy, members), config, stats, circuit }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}
