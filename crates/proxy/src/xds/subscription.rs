//! Per-type subscription state of one ADS stream.

use std::collections::BTreeSet;

use legate_api::envoy::config::core::v3::Node;
use legate_api::envoy::service::discovery::v3::DiscoveryRequest;
use legate_api::google::rpc::Status;

use legate_config::ResourceType;

/// Subscription state of one resource type: names requested, version
/// accepted and the latest nonce.
#[derive(Debug, Default, Clone)]
pub struct Subscription {
    /// Resource names; empty for a wildcard type.
    pub names: BTreeSet<String>,
    /// Version of the last response accepted; kept across reconnects so the
    /// server can tell what the proxy already has.
    pub accepted_version: String,
    /// Nonce of the last response received on the current stream.
    pub nonce: String,
    /// The resources of the last response accepted.
    pub applied: super::changes::Applied,
    /// Packed resource bytes of the last response, so that a small response
    /// that replaces a large config still counts as a large update.
    pub last_bytes: usize,
}

impl Subscription {
    pub fn request(&self, resource_type: ResourceType, node: Option<Node>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            node,
            resource_names: self.names.iter().cloned().collect(),
            type_url: resource_type.type_url().to_string(),
            response_nonce: self.nonce.clone(),
            error_detail: None,
        }
    }

    pub fn nack(&self, resource_type: ResourceType, message: String) -> DiscoveryRequest {
        let mut request = self.request(resource_type, None);
        request.error_detail = Some(Status { code: tonic::Code::InvalidArgument as i32, message, details: Vec::new() });
        request
    }
}
