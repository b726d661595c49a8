//! Legate's control plane: a versioned config store saved to disk or shared
//! with other replicas through etcd, the config API that changes it, and the
//! ADS server that pushes it to proxies.
//!
//! [`ControlPlane`] wires them together and serves both gRPC services on one
//! port.

mod accept;
pub mod admin;
pub mod ads;
pub mod api;
pub mod etcd;
mod follow;
mod presence;
pub mod json;
pub mod metrics;
pub mod persist;
pub mod proxies;
pub mod rollout;
pub mod snapshot;
pub mod store;
pub mod targets;
pub mod webhook;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use legate_api::legate::config::v1::config_service_server::ConfigServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use ads::AdsServer;
pub use api::ConfigApi;
pub use etcd::{Etcd, EtcdError, EtcdSettings};
pub use persist::{PersistError, StateFile};
pub use proxies::ProxyRegistry;
pub use snapshot::{ResourceKey, Snapshot, StoredResource};
pub use store::{ApplyError, ApplyOptions, ApplyOutcome, LoadError, Store};

/// The gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("control plane server failed")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Formats `error` and each of its sources, joined by `: `, for messages
/// that leave the process (gRPC statuses, logs).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A control plane: the config store and the registry of connected proxies.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    store: Arc<Store>,
    proxies: ProxyRegistry,
    /// Bearer token the config API requires; `None` leaves it open.
    api_token: Option<Arc<str>>,
    /// Bearer token ADS streams require; `None` leaves ADS open.
    ads_token: Option<Arc<str>>,
    /// TLS for the gRPC port, with client certificates when it has a CA.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl ControlPlane {
    /// Opens the control plane whose state lives in `data_dir`, loading the
    /// saved config. A missing state file starts an empty config at version
    /// 0; an unreadable, corrupt or invalid one is an error.
    pub fn open(data_dir: &Path) -> Result<Self, LoadError> {
        let state_file = StateFile::in_dir(data_dir)?;
        Ok(Self::with_store(Store::open(state_file)?))
    }

    /// Opens a replica that shares its config with the other replicas
    /// through etcd. It fails when etcd cannot be read, rather than serve an
    /// empty config to proxies.
    pub async fn open_etcd(settings: &EtcdSettings) -> Result<Self, LoadError> {
        let etcd = Etcd::connect(settings)?;
        Ok(Self::with_store(Store::open_etcd(etcd).await?))
    }

    /// Creates a control plane that keeps its config in memory only, for
    /// demos and tests.
    pub fn in_memory() -> Self {
        Self::with_store(Store::in_memory())
    }

    fn with_store(store: Store) -> Self {
        ControlPlane { store: Arc::new(store), proxies: ProxyRegistry::new(), api_token: None, ads_token: None, tls: None }
    }

    /// Names this replica in `ListProxies`, as the one serving each stream.
    pub fn with_replica_id(mut self, replica_id: &str) -> Self {
        self.proxies = ProxyRegistry::for_replica(replica_id);
        self
    }

    /// Requires `authorization: Bearer <token>` on every config API call.
    pub fn with_api_token(mut self, token: &str) -> Self {
        self.api_token = Some(Arc::from(token));
        self
    }

    /// Requires `authorization: Bearer <token>` on every ADS stream.
    pub fn with_ads_token(mut self, token: &str) -> Self {
        self.ads_token = Some(Arc::from(token));
        self
    }

    /// Serves the gRPC port over TLS. With a client CA in `tls`, every
    /// client (`legate apply` and proxies alike) must present a certificate
    /// that CA signed.
    pub fn with_tls(mut self, tls: tonic::transport::ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn proxies(&self) -> &ProxyRegistry {
        &self.proxies
    }

    /// Serves the config API and ADS on `listener` until `shutdown`
    /// completes. ADS streams then end with UNAVAILABLE so proxies reconnect,
    /// and the server returns once in-flight calls finish.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let (stop_streams, streams_stopped) = watch::channel(false);
        let ads = AdsServer::new(self.store.clone(), self.proxies.clone(), streams_stopped);
        let api = ConfigApi::new(self.store.clone(), self.proxies.clone());

        // Aborted when serving ends, however it ends. On a clean stop the
        // presence task first gets a moment to revoke its lease.
        let replication = self.store.etcd().map(|etcd| {
            let watching = self.proxies.stats().etcd_watching.clone();
            let follower = AbortOnDrop(tokio::spawn(follow::follow(self.store.clone(), etcd.clone(), watching)));
            let presence = tokio::spawn(presence::publish(etcd.clone(), self.proxies.clone(), stop_streams.subscribe()));
            (follower, AbortOnDrop(presence))
        });
        let signal = async move {
            shutdown.await;
            tracing::info!("control plane shutting down");
            let _ = stop_streams.send(true);
        };

        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            server = server.tls_config(tls.clone())?;
        }
        server
            .add_service(AggregatedDiscoveryServiceServer::with_interceptor(ads, api::TokenCheck::new(self.ads_token.clone(), "ADS")))
            .add_service(ConfigServiceServer::with_interceptor(api, api::TokenCheck::new(self.api_token.clone(), "the config API")))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await?;
        if let Some((follower, mut presence)) = replication {
            drop(follower);
            if tokio::time::timeout(PRESENCE_REVOKE_TIMEOUT, &mut presence.0).await.is_err() {
                tracing::warn!(
                    wait_ms = PRESENCE_REVOKE_TIMEOUT.as_millis() as u64,
                    "stopping without revoking the etcd lease; other replicas list this replica's proxies until it expires"
                );
            }
        }
        Ok(())
    }
}

/// Maximum wait, after serving ends, for etcd to revoke the lease of this
/// replica's proxies.
const PRESENCE_REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

/// A task that is aborted when this handle drops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
