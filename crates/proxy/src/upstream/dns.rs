//! Resolution of STRICT_DNS cluster endpoints, repeated at the cluster's
//! `dns_refresh_rate`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use legate_config::model::{EndpointAddress, LbEndpoint};

/// Endpoints of one cluster after a resolution round.
pub struct Resolved {
    pub cluster: String,
    /// Generation of the cluster config the resolver was started for, so a
    /// late result for a replaced cluster is dropped.
    pub generation: u64,
    pub endpoints: Vec<(SocketAddr, LbEndpoint)>,
}

/// Starts a task that resolves `endpoints` now and every `refresh_rate`,
/// sending each result on `results`. The task stops when `stop`'s sender is
/// dropped (the cluster was replaced or removed) or `results` closes.
pub fn spawn_resolver(
    cluster: String,
    generation: u64,
    endpoints: Vec<LbEndpoint>,
    refresh_rate: Duration,
    results: mpsc::Sender<Resolved>,
    mut stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        loop {
            let resolved = resolve_all(&cluster, &endpoints).await;
            let round = Resolved { cluster: cluster.clone(), generation, endpoints: resolved };
            if results.send(round).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(refresh_rate) => {}
                _ = &mut stop => return,
            }
        }
    });
}

async fn resolve_all(cluster: &str, endpoints: &[LbEndpoint]) -> Vec<(SocketAddr, LbEndpoint)> {
    let mut resolved = Vec::new();
    for endpoint in endpoints {
        match &endpoint.address {
            EndpointAddress::Socket(address) => resolved.push((*address, endpoint.clone())),
            EndpointAddress::Dns { host, port } => match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addresses) => resolved.extend(addresses.map(|address| (address, endpoint.clone()))),
                Err(error) => warn!(cluster, host, %error, "DNS resolution failed"),
            },
        }
    }
    resolved
}
