//! Conversion of Envoy protos into Legate's model, with every check that
//! needs only the resource itself. Checks across resources (references,
//! duplicates) are in `validate`.
//!
//! Each decoder records problems in a `Collector` and goes on, so one pass
//! reports every error in a resource.

mod access_log;
mod auth;
mod bootstrap;
mod cluster;
mod endpoint;
mod ext_authz;
mod filter;
mod health;
mod jwt_authn;
mod listener;
mod network_filter;
mod rate_limit;
mod route;
mod tls;
mod transcoder;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prost::Message;

use legate_api::envoy::config::core::v3 as core;

pub use bootstrap::bootstrap;
pub use cluster::cluster;
pub use endpoint::cluster_load_assignment;
pub use listener::listener;
pub use route::route_configuration;

use crate::error::{Collector, ErrorKind};
use crate::resource::{Resource, ResourceType};

/// Decodes the protobuf bytes of one resource of `resource_type`. Returns
/// `None` only after recording an error.
pub(crate) fn resource(resource_type: ResourceType, bytes: &[u8], errors: &mut Collector) -> Option<Resource> {
    use legate_api::envoy::config as api;

    match resource_type {
        ResourceType::Secret => {
            let proto = decode_message::<legate_api::envoy::extensions::transport_sockets::tls::v3::Secret>(bytes, errors)?;
            tls::secret(&proto, errors).map(|secret| Resource::Secret(secret.into()))
        }
        ResourceType::Cluster => {
            let proto = decode_message::<api::cluster::v3::Cluster>(bytes, errors)?;
            cluster(&proto, errors).map(Resource::Cluster)
        }
        ResourceType::ClusterLoadAssignment => {
            let proto = decode_message::<api::endpoint::v3::ClusterLoadAssignment>(bytes, errors)?;
            cluster_load_assignment(&proto, errors).map(Resource::ClusterLoadAssignment)
        }
        ResourceType::Listener => {
            let proto = decode_message::<api::listener::v3::Listener>(bytes, errors)?;
            listener(&proto, errors).map(Resource::Listener)
        }
        ResourceType::RouteConfiguration => {
            let proto = decode_message::<api::route::v3::RouteConfiguration>(bytes, errors)?;
            route_configuration(&proto, errors).map(|routes| Resource::RouteConfiguration(routes.into()))
        }
    }
}

/// Decodes protobuf bytes, recording an error when they are malformed.
pub(crate) fn decode_message<T: Message + Default>(bytes: &[u8], errors: &mut Collector) -> Option<T> {
    match T::decode(bytes) {
        Ok(message) => Some(message),
        Err(error) => {
            errors.error(ErrorKind::Syntax, format!("invalid protobuf: {error}"));
            None
        }
    }
}

/// Converts a proto duration, recording an error when it is negative or out
/// of range.
/// The maximum seconds of protobuf's `Duration`, about 10,000 years.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

pub(crate) fn duration(value: &prost_types::Duration, errors: &mut Collector) -> Option<Duration> {
    // A larger value, outside protobuf's range, would overflow the clock
    // when a timer adds it to the current time.
    if value.seconds > MAX_DURATION_SECONDS {
        errors.invalid(format!("invalid duration {}s: must be at most {MAX_DURATION_SECONDS}s", value.seconds));
        return None;
    }
    match Duration::try_from(*value) {
        Ok(duration) => Some(duration),
        Err(_) => {
            let seconds = value.seconds as f64 + f64::from(value.nanos) / 1e9;
            errors.invalid(format!("invalid duration {seconds}s: must not be negative"));
            None
        }
    }
}

/// Converts an optional duration where zero means "disabled", falling back to
/// `default` when the field is absent.
pub(crate) fn timeout_or(
    value: Option<&prost_types::Duration>,
    default: Option<Duration>,
    errors: &mut Collector,
) -> Option<Duration> {
    match value {
        None => default,
        Some(value) => duration(value, errors).filter(|d| !d.is_zero()),
    }
}

/// The address and port of an `Address`; the address may be an IP literal
/// or, where `allow_hostname` is set, a DNS name.
pub(crate) enum HostPort {
    Ip(SocketAddr),
    Hostname(String, u16),
}

pub(crate) fn host_port(address: Option<&core::Address>, allow_hostname: bool, errors: &mut Collector) -> Option<HostPort> {
    let Some(address) = address else {
        errors.missing("address");
        return None;
    };
    let Some(core::address::Address::SocketAddress(socket)) = &address.address else {
        errors.missing("address.socket_address");
        return None;
    };
    errors.at("socket_address", |errors| socket_host_port(socket, allow_hostname, errors))
}

fn socket_host_port(socket: &core::SocketAddress, allow_hostname: bool, errors: &mut Collector) -> Option<HostPort> {
    if socket.protocol != core::socket_address::Protocol::Tcp as i32 {
        errors.unsupported(format!("protocol {} is not supported; Legate proxies TCP only", socket.protocol));
    }

    let port = match socket.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(port)) => match u16::try_from(port) {
            Ok(port) => port,
            Err(_) => {
                errors.invalid(format!("port_value {port} is out of range 0-65535"));
                return None;
            }
        },
        None => {
            errors.missing("port_value");
            return None;
        }
    };

    if socket.address.is_empty() {
        errors.missing("address");
        return None;
    }
    match socket.address.parse::<IpAddr>() {
        Ok(ip) => Some(HostPort::Ip(SocketAddr::new(ip, port))),
        Err(_) if allow_hostname && is_hostname(&socket.address) => Some(HostPort::Hostname(socket.address.clone(), port)),
        Err(_) if allow_hostname => {
            errors.invalid(format!("address {:?} is neither an IP address nor a host name", socket.address));
            None
        }
        Err(_) => {
            errors.invalid(format!("address {:?} is not an IP address", socket.address));
            None
        }
    }
}

pub(crate) fn is_hostname(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Requires `value` to be non-empty.
pub(crate) fn required_name(value: &str, field: &str, errors: &mut Collector) {
    if value.is_empty() {
        errors.missing(field);
    }
}

/// Reads an enum field, recording an error for a number the schema does not
/// declare.
pub(crate) fn enum_value<E: TryFrom<i32>>(value: i32, field: &str, errors: &mut Collector) -> Option<E> {
    match E::try_from(value) {
        Ok(known) => Some(known),
        Err(_) => {
            errors.invalid(format!("{field} has unknown value {value}"));
            None
        }
    }
}

/// Notes a field that is accepted but ignored when it is set.
pub(crate) fn note_ignored(is_set: bool, field: &str, errors: &mut Collector) {
    if is_set {
        errors.ignored(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_over_protobuf_range_is_invalid() {
        let mut errors = Collector::new("test");
        let longest = prost_types::Duration { seconds: MAX_DURATION_SECONDS, nanos: 0 };
        assert_eq!(duration(&longest, &mut errors), Some(Duration::from_secs(315_576_000_000)));

        let too_long = prost_types::Duration { seconds: i64::MAX, nanos: 0 };
        assert_eq!(duration(&too_long, &mut errors), None);
        let message = errors.into_errors().0.pop().expect("one error").to_string();
        assert!(message.contains("must be at most 315576000000s"), "{message}");
    }
}
