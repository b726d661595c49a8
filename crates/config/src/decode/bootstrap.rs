//! Bootstrap decoding: the file `legate proxy --config` reads.

use legate_api::envoy::config::bootstrap::v3 as api;
use legate_api::envoy::config::core::v3 as core;

use super::listener::ads_source;
use super::{host_port, HostPort};
use crate::error::{Collector, ConfigErrors, ErrorKind};
use crate::model::{AdsConfig, Bootstrap, Node};
use crate::validate;
use crate::ResourceType;

/// Admin listener of a bootstrap without an `admin` block: loopback only.
const DEFAULT_ADMIN_ADDRESS: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// Decodes a bootstrap and checks its static resources together: names are
/// unique and every route names a static cluster unless clusters come over
/// ADS.
pub fn bootstrap(proto: &api::Bootstrap) -> Result<Bootstrap, ConfigErrors> {
    let mut errors = Collector::new("bootstrap");
    let node = proto
        .node
        .as_ref()
        .map_or_else(Node::default, |node| Node { id: node.id.clone(), cluster: node.cluster.clone(), metadata: node.metadata.clone() });

    let admin_address = match &proto.admin {
        Some(admin) => errors.at("admin", |errors| match host_port(admin.address.as_ref(), false, errors) {
            Some(HostPort::Ip(address)) => Some(address),
            _ => None,
        }),
        None => Some(DEFAULT_ADMIN_ADDRESS),
    };

    let statics = proto.static_resources.clone().unwrap_or_default();
    let mut listeners = Vec::new();
    for (index, listener) in statics.listeners.iter().enumerate() {
        let path = format!("static_resources.listeners[{index}]");
        listeners.extend(errors.at(path, |errors| super::listener(listener, errors)));
    }
    let mut clusters = Vec::new();
    for (index, cluster) in statics.clusters.iter().enumerate() {
        let path = format!("static_resources.clusters[{index}]");
        clusters.extend(errors.at(path, |errors| super::cluster(cluster, errors)));
    }

    let ads = proto
        .dynamic_resources
        .as_ref()
        .and_then(|dynamic| errors.at("dynamic_resources", |errors| dynamic_resources(dynamic, errors)));
    if let Some(ads) = &ads {
        if !clusters.iter().any(|cluster| cluster.name == ads.cluster_name) {
            errors.at("dynamic_resources.ads_config", |errors| {
                errors.error(
                    ErrorKind::UnknownReference,
                    format!("cluster {:?} is not a static cluster", ads.cluster_name),
                )
            });
        }
    }

    if ads.is_none() {
        // Secrets come only over ADS, because Legate does not implement `static_resources.secrets`.
        let listener_secrets = listeners.iter().map(|listener| (format!("Listener {:?}", listener.name), listener.secret_names().next()));
        let cluster_secrets = clusters.iter().map(|cluster| (format!("Cluster {:?}", cluster.name), cluster.secret_names().next()));
        for (label, secret) in listener_secrets.chain(cluster_secrets) {
            let Some(secret) = secret else { continue };
            errors.at("static_resources", |errors| {
                errors.error(
                    ErrorKind::UnknownReference,
                    format!("{label} names SDS secret {secret:?}, but without dynamic_resources.ads_config no secret can arrive"),
                )
            });
        }
    }

    let dynamic_clusters = ads.as_ref().is_some_and(|ads| ads.cds);
    let decoded = errors.finish(())?;
    let reference_errors = validate::static_resources(&listeners, &clusters, dynamic_clusters);
    if !reference_errors.is_empty() {
        return Err(reference_errors);
    }

    let raw_listeners = statics.listeners.iter().map(|listener| pack(ResourceType::Listener, listener)).collect();
    let raw_clusters = statics.clusters.iter().map(|cluster| pack(ResourceType::Cluster, cluster)).collect();
    Ok(Bootstrap { node, admin_address, listeners, clusters, ads, raw_listeners, raw_clusters, ignored_fields: decoded.ignored })
}

fn pack(resource_type: ResourceType, message: &impl prost::Message) -> prost_types::Any {
    prost_types::Any { type_url: resource_type.type_url().to_string(), value: message.encode_to_vec() }
}

fn dynamic_resources(proto: &api::bootstrap::DynamicResources, errors: &mut Collector) -> Option<AdsConfig> {
    let lds = proto.lds_config.is_some();
    let cds = proto.cds_config.is_some();
    if lds {
        ads_source(proto.lds_config.as_ref(), "lds_config", errors);
    }
    if cds {
        ads_source(proto.cds_config.as_ref(), "cds_config", errors);
    }

    let Some(ads) = &proto.ads_config else {
        if lds || cds {
            errors.missing("ads_config");
        }
        return None;
    };
    errors.at("ads_config", |errors| ads_config(ads, lds, cds, errors))
}

fn ads_config(proto: &core::ApiConfigSource, lds: bool, cds: bool, errors: &mut Collector) -> Option<AdsConfig> {
    use core::api_config_source::ApiType;

    let delta = match core::api_config_source::ApiType::try_from(proto.api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => false,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => true,
        _ => {
            errors.unsupported(format!("api_type {} is not supported; use GRPC or DELTA_GRPC", proto.api_type));
            false
        }
    };
    if proto.transport_api_version != core::ApiVersion::V3 as i32 && proto.transport_api_version != core::ApiVersion::Auto as i32 {
        errors.unsupported("transport_api_version must be V3");
    }

    let cluster_name = match proto.grpc_services.as_slice() {
        [service] => match &service.target_specifier {
            Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) => grpc.cluster_name.clone(),
            None => {
                errors.missing("grpc_services[0].envoy_grpc");
                return None;
            }
        },
        _ => {
            errors.invalid("grpc_services must have exactly one entry");
            return None;
        }
    };
    if cluster_name.is_empty() {
        errors.missing("grpc_services[0].envoy_grpc.cluster_name");
    }
    Some(AdsConfig { cluster_name, lds, cds, delta, token_file: None })
}
