//! How far one config version has reached the connected proxies.

use legate_api::legate::config::v1::{GetRolloutResponse, ProxyRejection};

use crate::proxies::ProxyEntry;
use crate::snapshot::Snapshot;

/// The state of one proxy for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRollout {
    Applied,
    Rejected { type_url: String, error: String },
    Pending,
}

/// Sorts the proxies by what they did with `snapshot`'s version.
///
/// A proxy has applied it once every type it subscribes to is up to date.
/// A type is up to date when the proxy ACKed the version at which the type
/// last changed, or a later one. It is also up to date when the stream has
/// handled the version but sent nothing new, because the proxy's resources
/// of that type did not change. A NACK of the needed version or a later one,
/// newer than the last ACK, is a rejection. A version made by a targeted
/// apply counts only the proxies its target matches.
pub fn rollout(snapshot: &Snapshot, proxies: &[ProxyEntry]) -> GetRolloutResponse {
    let mut response = GetRolloutResponse { version: snapshot.version().to_string(), ..Default::default() };
    let targeted = proxies.iter().filter(|proxy| snapshot.target().is_none_or(|target| target.matches(&proxy.node_info())));
    for proxy in targeted {
        match proxy_rollout(snapshot, proxy) {
            ProxyRollout::Applied => response.applied.push(proxy.node_id.clone()),
            ProxyRollout::Pending => response.pending.push(proxy.node_id.clone()),
            ProxyRollout::Rejected { type_url, error } => {
                response.rejected.push(ProxyRejection { node_id: proxy.node_id.clone(), type_url, error })
            }
        }
    }
    response
}

pub fn proxy_rollout(snapshot: &Snapshot, proxy: &ProxyEntry) -> ProxyRollout {
    let mut pending = false;
    for (resource_type, record) in &proxy.types {
        let needed = snapshot.type_version(*resource_type);
        let acked = version_number(&record.acked_version);
        let nacked = version_number(&record.nacked_version);
        if needed == 0 || acked >= needed {
            continue;
        }
        if nacked >= needed && nacked > acked {
            return ProxyRollout::Rejected { type_url: resource_type.type_url().to_string(), error: record.nack_error.clone() };
        }
        let nothing_new_sent = proxy.config_version >= snapshot.version() && record.sent_version == record.acked_version;
        if !nothing_new_sent {
            pending = true;
        }
    }
    if pending {
        ProxyRollout::Pending
    } else {
        ProxyRollout::Applied
    }
}

/// Reads an ADS `version_info` as Legate's control plane writes it; any
/// other text counts as no version.
fn version_number(version_info: &str) -> u64 {
    version_info.parse().unwrap_or(0)
}
