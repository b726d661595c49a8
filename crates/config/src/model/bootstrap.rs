//! The proxy's bootstrap: identity, admin address, static resources and the
//! ADS source.

use std::net::SocketAddr;

use super::{Cluster, Listener};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    /// Sent to the control plane as given, where targeted config can match it.
    pub metadata: Option<prost_types::Struct>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    pub node: Node,
    /// Admin listener; `127.0.0.1:9901` when the bootstrap has no `admin`.
    pub admin_address: Option<SocketAddr>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    pub ads: Option<AdsConfig>,
    /// The static listeners and clusters as packed protos, in the order of
    /// `listeners` and `clusters`, for the admin config dump.
    pub raw_listeners: Vec<prost_types::Any>,
    pub raw_clusters: Vec<prost_types::Any>,
    /// Fields that were accepted but change nothing about traffic.
    pub ignored_fields: Vec<String>,
}

/// Source of the proxy's dynamic config.
#[derive(Debug, Clone, PartialEq)]
pub struct AdsConfig {
    /// Static cluster whose endpoint is the control plane.
    pub cluster_name: String,
    /// Subscribe to listeners over ADS (bootstrap `lds_config: {ads: {}}`).
    pub lds: bool,
    /// Subscribe to clusters over ADS (bootstrap `cds_config: {ads: {}}`).
    pub cds: bool,
    /// Use incremental (delta) ADS first, falling back to state-of-the-world
    /// when the control plane does not offer it (`api_type: DELTA_GRPC` or
    /// `AGGREGATED_DELTA_GRPC`).
    pub delta: bool,
    /// File holding the bearer token sent on each ADS stream, read again at
    /// every reconnect so a rotated token takes effect (`legate proxy
    /// --ads-token-file`).
    pub token_file: Option<std::path::PathBuf>,
}
