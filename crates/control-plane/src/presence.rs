//! Presence of each replica's proxies in etcd, so that `ListProxies` on any
//! replica lists every proxy with the replica serving it. Each replica puts
//! its list under a lease that it renews. A replica that stops cleanly
//! revokes the lease, so etcd deletes its list at once. One that stops
//! renewing otherwise loses its list when the lease's time to live runs out.

use std::time::Duration;

use tokio::sync::watch;

use legate_api::legate::config::v1::{ListProxiesResponse, ProxyStatus};

use crate::etcd::{Etcd, EtcdError};
use crate::proxies::ProxyRegistry;

/// Time between renewals of the lease, and between checks for a changed list.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

/// Time to live of the lease in seconds: a dead replica's proxies are listed
/// at most this long after its last renewal.
const LEASE_TTL_SECONDS: i64 = 10;

/// Publishes the proxies of `registry` until `stop` turns true, then
/// revokes the lease. Failures are logged at debug level only, because the
/// config watch already warns while etcd is away.
pub(crate) async fn publish(etcd: Etcd, registry: ProxyRegistry, mut stop: watch::Receiver<bool>) {
    let mut publisher = Publisher { etcd, registry, lease: None, published: None };
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        if let Err(error) = publisher.publish_once().await {
            tracing::debug!(error = %crate::error_chain(&error), "failed to publish this replica's proxies to etcd");
        }
    }

    let Some(lease) = publisher.lease else {
        return;
    };
    match publisher.etcd.revoke_lease(lease).await {
        Ok(()) => tracing::debug!(lease, "revoked the lease of this replica's proxies"),
        Err(error) => tracing::warn!(
            error = %crate::error_chain(&error),
            lease,
            "failed to revoke the lease; other replicas list this replica's proxies until it expires"
        ),
    }
}

struct Publisher {
    etcd: Etcd,
    registry: ProxyRegistry,
    lease: Option<i64>,
    /// The list last put, so an unchanged one is not written again.
    published: Option<ListProxiesResponse>,
}

impl Publisher {
    async fn publish_once(&mut self) -> Result<(), EtcdError> {
        let alive = match self.lease {
            Some(lease) => self.etcd.renew_lease(lease).await?,
            None => false,
        };
        if !alive {
            self.lease = Some(self.etcd.grant_lease(LEASE_TTL_SECONDS).await?);
            self.published = None;
        }

        let proxies = ListProxiesResponse { proxies: self.registry.statuses() };
        if self.published.as_ref() == Some(&proxies) {
            return Ok(());
        }
        let lease = self.lease.unwrap_or_default();
        self.etcd.publish_proxies(self.registry.replica(), &proxies, lease).await?;
        self.published = Some(proxies);
        Ok(())
    }
}

/// Lists the proxies of this replica, from memory, and those other replicas
/// published to etcd. Without etcd, or while it is unavailable, only this
/// replica's proxies are listed.
pub(crate) async fn list_all(etcd: Option<&Etcd>, registry: &ProxyRegistry) -> Vec<ProxyStatus> {
    let mut proxies = registry.statuses();
    proxies.extend(list_others(etcd, registry).await);
    proxies
}

/// Lists the proxies that other replicas published to etcd, as of their last
/// publication (at most [`PUBLISH_INTERVAL`] old while they run). Without
/// etcd, or while it is unavailable, the list is empty.
pub(crate) async fn list_others(etcd: Option<&Etcd>, registry: &ProxyRegistry) -> Vec<ProxyStatus> {
    let Some(etcd) = etcd else {
        return Vec::new();
    };
    match etcd.published_proxies().await {
        Ok(published) => published.into_iter().filter(|proxy| proxy.replica != registry.replica()).collect(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "listing only this replica's proxies because etcd is unavailable");
            Vec::new()
        }
    }
}
