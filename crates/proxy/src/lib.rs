//! Legate's data plane: listeners that accept HTTP/1.1 and HTTP/2, the HTTP
//! connection manager and router, upstream clusters with connection pools,
//! and the ADS client that keeps all of it up to date.

mod activity;
mod access_log;
mod batched_io;
mod admin;
mod connection_filters;
mod grpc;
mod http;
mod lifecycle;
mod listener;
mod manager;
mod memory;
mod ratelimit;
mod router;
mod snapshot;
mod stats;
mod timer_anchor;
mod tls;
mod upstream;
mod xds;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use legate_config::model::{Bootstrap, DiscoveryType, EndpointAddress};

pub use admin::LogLevels;
use listener::ListenerSet;
use manager::ConfigManager;

/// Failure to start the proxy.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to bind the admin listener to {address}")]
    Admin {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("static listener {name:?} cannot start: {reason}")]
    Listener { name: String, reason: String },
    #[error("ADS cluster {0:?} must be a bootstrap cluster of type STATIC or STRICT_DNS with at least one endpoint")]
    AdsCluster(String),
    #[error("TLS settings of ADS cluster {cluster:?} cannot be loaded")]
    AdsTls {
        cluster: String,
        #[source]
        source: tls::TlsLoadError,
    },
}

/// A running proxy.
pub struct Proxy {
    manager: Arc<ConfigManager>,
    admin_address: Option<SocketAddr>,
    lifecycle: Arc<lifecycle::Lifecycle>,
    timer_anchor: tokio::task::AbortHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.timer_anchor.abort();
    }
}

impl Proxy {
    /// Binds the admin and static listeners, and starts the ADS client when
    /// the bootstrap names one. Must run inside a tokio runtime.
    /// `log_levels` lets the admin endpoint `/logging` change the log filter.
    pub async fn start(bootstrap: Bootstrap, log_levels: Option<Arc<dyn LogLevels>>) -> Result<Proxy, StartError> {
        let store = snapshot::new_store();
        let stats = stats::ProxyStats::new();
        let listeners = ListenerSet::new(store.clone(), stats.clone());
        let manager = ConfigManager::new(store, listeners, stats);

        let lifecycle = Arc::new(lifecycle::Lifecycle::new());
        let info = Arc::new(admin::ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            node_id: bootstrap.node.id.clone(),
            node_cluster: bootstrap.node.cluster.clone(),
            log_levels,
        });
        let admin_address = match bootstrap.admin_address {
            Some(address) => Some(start_admin(address, manager.clone(), lifecycle.clone(), info).await?),
            None => None,
        };

        manager
            .load_static(&bootstrap)
            .map_err(|rejected| StartError::Listener { name: rejected.name, reason: rejected.reason })?;

        let mut control_plane = String::from("none");
        if let Some(ads) = &bootstrap.ads {
            let (servers, tls) = ads_servers(&bootstrap, &ads.cluster_name)?;
            control_plane = servers.join(",");
            xds::spawn(ads.clone(), servers, tls, bootstrap.node.clone(), manager.clone());
        }
        let admin = admin_address.map_or_else(|| "none".to_string(), |address| address.to_string());
        info!(
            version = env!("CARGO_PKG_VERSION"),
            node = %bootstrap.node.id,
            cluster = %bootstrap.node.cluster,
            admin = %admin,
            control_plane = %control_plane,
            "proxy started"
        );
        // The descriptor pool is about 1 MiB, a third of the heap at rest,
        // and only config decoding uses it. A proxy with a static config
        // never decodes again, so the pool goes. Over ADS it stays, because
        // decoding it again took about 4 ms per update and left a larger heap.
        if bootstrap.ads.is_none() {
            legate_config::reflect::release_pool();
        }
        drop(bootstrap);
        memory::release_free_heap();
        let timer_anchor = timer_anchor::spawn();
        Ok(Proxy { manager, admin_address, lifecycle, timer_anchor })
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// Listener names and bound addresses.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.manager.bound_listeners()
    }

    /// Resolves when the admin endpoint `/quitquitquit` asks the proxy to
    /// stop.
    pub async fn shutdown_requested(&self) {
        self.lifecycle.shutdown_requested().await;
    }

    /// Turns `/ready` to 503 and drains every connection, keeps accepting
    /// for the accept window, then waits until every connection has closed
    /// or the drain time has passed, whichever comes first. The drain time
    /// is `drain_time` when given, otherwise the longest listener drain
    /// timeout plus a short grace for the closes themselves.
    pub async fn shutdown(&self, drain_time: Option<std::time::Duration>) {
        self.lifecycle.set_draining();
        // Frame-aware WebSockets send their Close at the end of the drain
        // period and wait a little for the answer.
        let listener_drain = self.manager.longest_drain_timeout() + http::CLOSE_GRACE + std::time::Duration::from_millis(250);
        let grace = drain_time.unwrap_or(listener_drain);
        let window = accept_window(grace);
        self.manager.drain_listeners(window, grace);

        let start = tokio::time::Instant::now();
        let deadline = start + grace;
        loop {
            let now = tokio::time::Instant::now();
            let accepting = now < start + window;
            if now >= deadline || (!accepting && self.manager.open_connections() == 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        info!(open = self.manager.open_connections(), "proxy drained");
    }
}

/// Returns how long listeners keep accepting during a drain of `drain_time`: half
/// of it, at most `MAX_ACCEPT_WINDOW`. Load balancers and Kubernetes
/// endpoints take a moment to stop sending new connections.
pub(crate) fn accept_window(drain_time: std::time::Duration) -> std::time::Duration {
    (drain_time / 2).min(MAX_ACCEPT_WINDOW)
}

const MAX_ACCEPT_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

async fn start_admin(
    address: SocketAddr,
    manager: Arc<ConfigManager>,
    lifecycle: Arc<lifecycle::Lifecycle>,
    info: Arc<admin::ServerInfo>,
) -> Result<SocketAddr, StartError> {
    let socket = TcpListener::bind(address).await.map_err(|source| StartError::Admin { address, source })?;
    let bound = socket.local_addr().unwrap_or(address);
    admin::spawn(socket, manager, lifecycle, info);
    Ok(bound)
}

/// Addresses (`host:port`) of the control plane. Host names are resolved
/// again on each connection attempt, so a restarted control plane behind a
/// Kubernetes Service is found under its new address.
/// Returns the control plane addresses of the ADS cluster, and its TLS
/// connector when the cluster has an `UpstreamTlsContext`.
fn ads_servers(bootstrap: &Bootstrap, cluster_name: &str) -> Result<(Vec<String>, Option<Arc<tls::UpstreamConnector>>), StartError> {
    let cluster = bootstrap
        .clusters
        .iter()
        .find(|cluster| {
            cluster.name == cluster_name
                && matches!(cluster.discovery, DiscoveryType::Static | DiscoveryType::StrictDns { .. })
        })
        .ok_or_else(|| StartError::AdsCluster(cluster_name.to_string()))?;
    let servers: Vec<String> = cluster
        .load_assignment
        .iter()
        .flat_map(|assignment| &assignment.endpoints)
        .map(|endpoint| match &endpoint.address {
            EndpointAddress::Socket(address) => address.to_string(),
            EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
        })
        .collect();
    if servers.is_empty() {
        return Err(StartError::AdsCluster(cluster_name.to_string()));
    }
    let tls = match &cluster.tls {
        Some(settings) => Some(
            tls::UpstreamConnector::new(settings).map_err(|source| StartError::AdsTls { cluster: cluster_name.to_string(), source })?,
        ),
        None => None,
    };
    Ok((servers, tls))
}

/// Tells whether a socket error is EMFILE or ENFILE: the process or the
/// system has no file descriptor left.
pub(crate) fn is_out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}
