//! The five xDS resource types Legate serves and consumes, and decoding of a
//! packed `Any` into Legate's model.

use std::fmt;
use std::sync::Arc;

use prost::Message;

use crate::decode;
use crate::error::{Collector, ConfigErrors, Decoded, ErrorKind};
use crate::model::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, Secret};
use crate::reflect;

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
/// name the resource even when the rest of it is invalid.
pub fn resource_name(any: &prost_types::Any) -> Option<String> {
    use legate_api::envoy::config;
    use legate_api::envoy::extensions::transport_sockets::tls::v3 as tls;

    match ResourceType::from_type_url(&any.type_url)? {
        ResourceType::Secret => tls::Secret::decode(&*any.value).ok().map(|s| s.name),
        ResourceType::Cluster => config::cluster::v3::Cluster::decode(&*any.value).ok().map(|c| c.name),
        ResourceType::ClusterLoadAssignment => {
            config::endpoint::v3::ClusterLoadAssignment::decode(&*any.value).ok().map(|c| c.cluster_name)
        }
        ResourceType::Listener => config::listener::v3::Listener::decode(&*any.value).ok().map(|l| l.name),
        ResourceType::RouteConfiguration => {
            config::route::v3::RouteConfiguration::decode(&*any.value).ok().map(|r| r.name)
        }
    }
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
