//! The five xDS resource types Legate serves and consumes, and decoding of a
//! packed `Any` into Legate's model.

use std::fmt;
use std::sync::Arc;

use crate::decode;
use crate::error::{Collector, ConfigErrors, Decoded, ErrorKind};
use crate::model::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, Secret};
use crate::reflect;

/// Field number of the name in every resource type: `name`, or
/// `cluster_name` in a `ClusterLoadAssignment`.
const NAME_FIELD: u32 = 1;

/// An xDS resource type, in the order a control plane must push them so that
/// nothing is referenced before it exists: secrets, clusters, their
/// endpoints, listeners, then route configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Secret,
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Secret,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
    ];

    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(type_url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.type_url() == type_url)
    }

    /// Short xDS name: SDS, CDS, EDS, LDS or RDS.
    pub const fn short_name(self) -> &'static str {
        match self {
            ResourceType::Secret => "SDS",
            ResourceType::Cluster => "CDS",
            ResourceType::ClusterLoadAssignment => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::RouteConfiguration => "RDS",
        }
    }

    /// Message name without the package, as used in error messages.
    pub const fn message_name(self) -> &'static str {
        match self {
            ResourceType::Secret => "Secret",
            ResourceType::Cluster => "Cluster",
            ResourceType::ClusterLoadAssignment => "ClusterLoadAssignment",
            ResourceType::Listener => "Listener",
            ResourceType::RouteConfiguration => "RouteConfiguration",
        }
    }

    /// Whether proxies subscribe to every resource of this type (LDS, CDS)
    /// rather than to names (RDS, EDS, SDS).
    pub const fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A decoded resource in Legate's model.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Secret(Arc<Secret>),
    Cluster(Cluster),
    ClusterLoadAssignment(ClusterLoadAssignment),
    Listener(Listener),
    RouteConfiguration(Arc<RouteConfiguration>),
}

impl Resource {
    pub fn name(&self) -> &str {
        match self {
            Resource::Secret(secret) => &secret.name,
            Resource::Cluster(cluster) => &cluster.name,
            Resource::ClusterLoadAssignment(assignment) => &assignment.cluster_name,
            Resource::Listener(listener) => &listener.name,
            Resource::RouteConfiguration(routes) => &routes.name,
        }
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Secret(_) => ResourceType::Secret,
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::ClusterLoadAssignment(_) => ResourceType::ClusterLoadAssignment,
            Resource::Listener(_) => ResourceType::Listener,
            Resource::RouteConfiguration(_) => ResourceType::RouteConfiguration,
        }
    }
}

/// Reads the name of a packed resource without validating it, so errors can
/// name the resource even when the rest of it is invalid. Only the top level
/// of the message is scanned: decoding a route configuration of 10,000 routes
/// to read its name cost as much as decoding it for use.
pub fn resource_name(any: &prost_types::Any) -> Option<String> {
    ResourceType::from_type_url(&any.type_url)?;
    reflect::top_level_string(&any.value, NAME_FIELD)
}

/// Decodes and validates one packed resource: unknown fields anywhere in it
/// (including nested typed configs) are errors, then every field is checked
/// and converted into Legate's model.
pub fn decode_any(any: &prost_types::Any) -> Result<Decoded<Resource>, ConfigErrors> {
    let Some(resource_type) = ResourceType::from_type_url(&any.type_url) else {
        let mut errors = Collector::new("");
        errors.error(ErrorKind::Unsupported, format!("resource type {:?} is not supported by Legate", any.type_url));
        return Err(errors.into_errors());
    };

    let label = match resource_name(any) {
        Some(name) => format!("{} {name:?}", resource_type.message_name()),
        None => resource_type.message_name().to_string(),
    };
    let mut errors = Collector::new(label);
    let descriptor = reflect::message_for_type_url(resource_type.type_url()).expect("resource types are in the pool");
    reflect::check_unknown_fields(&descriptor, &any.value, &mut errors);
    if errors.has_errors() {
        return Err(errors.into_errors());
    }

    let resource = decode::resource(resource_type, &any.value, &mut errors);
    errors.finish(resource).map(|decoded| match decoded.value {
        Some(value) => Decoded { value, ignored: decoded.ignored },
        None => unreachable!("decoders record an error whenever they return no resource"),
    })
}

#[cfg(test)]
mod tests {
    use legate_api::envoy::config::cluster::v3::Cluster;
    use prost::Message;
    use legate_api::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

    use super::*;

    fn packed(resource_type: ResourceType, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any { type_url: resource_type.type_url().to_string(), value }
    }

    #[test]
    fn name_is_read_after_other_fields() {
        let routes = RouteConfiguration {
            virtual_hosts: vec![VirtualHost { name: "all".into(), domains: vec!["*".into()], ..Default::default() }],
            name: "bench".into(),
            ..Default::default()
        };
        let any = packed(ResourceType::RouteConfiguration, routes.encode_to_vec());
        assert_eq!(resource_name(&any).as_deref(), Some("bench"));
    }

    #[test]
    fn last_name_wins_as_when_decoding() {
        let mut bytes = Cluster { name: "first".into(), ..Default::default() }.encode_to_vec();
        bytes.extend(Cluster { name: "second".into(), ..Default::default() }.encode_to_vec());
        let decoded = Cluster::decode(bytes.as_slice()).expect("two encodings concatenate").name;
        assert_eq!(resource_name(&packed(ResourceType::Cluster, bytes)), Some(decoded));
    }

    #[test]
    fn malformed_or_unknown_resources_have_no_name() {
        let truncated = packed(ResourceType::Cluster, vec![0x0a, 0x05, b'a']);
        assert_eq!(resource_name(&truncated), None);

        let not_text = packed(ResourceType::Listener, vec![0x0a, 0x02, 0xff, 0xfe]);
        assert_eq!(resource_name(&not_text), None);

        let unknown = prost_types::Any { type_url: "type.googleapis.com/example.Thing".into(), value: vec![0x0a, 0x01, b'a'] };
        assert_eq!(resource_name(&unknown), None);
    }

    #[test]
    fn missing_name_is_empty() {
        let any = packed(ResourceType::Cluster, Cluster { connect_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }), ..Default::default() }.encode_to_vec());
        assert_eq!(resource_name(&any).as_deref(), Some(""));
    }
}
