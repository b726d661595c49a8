//! Checks across resources: unique names and addresses, and references that
//! resolve.

use std::collections::{HashMap, HashSet};

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::model::{
    Cluster, ExtAuthzService, HttpFilter, Listener, RouteAction, RouteConfiguration, RouteSource, SecretLookupError, Secrets,
};
use crate::resource::Resource;

/// Checks a bootstrap's static listeners and clusters. When clusters also
/// come over ADS, routes may name clusters that are not static.
pub fn static_resources(listeners: &[Listener], clusters: &[Cluster], dynamic_clusters: bool) -> ConfigErrors {
    let mut errors = Vec::new();
    check_listeners(listeners.iter(), &mut errors);
    let cluster_names = unique_names(clusters.iter().map(|c| c.name.as_str()), "Cluster", &mut errors);

    for listener in listeners {
        for chain in &listener.filter_chains {
            if let RouteSource::Inline(routes) = &chain.http.routes {
                if !dynamic_clusters {
                    check_route_clusters(routes, &cluster_names, &format!("Listener {:?}", listener.name), &mut errors);
                }
            }
        }
        if !dynamic_clusters {
            check_filter_clusters(listener, &cluster_names, &mut errors);
        }
    }
    ConfigErrors(errors)
}

/// Checks a complete config as the control plane will serve it: every
/// listener's route configuration, every route's clusters, every EDS
/// cluster's endpoints and every secret that a TLS context names exist.
pub fn snapshot<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> ConfigErrors {
    let mut listeners = Vec::new();
    let mut route_configs = Vec::new();
    let mut clusters = Vec::new();
    let mut assignments = HashSet::new();
    let mut secrets = Secrets::new();
    for resource in resources {
        match resource {
            Resource::Secret(secret) => {
                secrets.insert(secret.name.clone(), secret.clone());
            }
            Resource::Listener(listener) => listeners.push(listener),
            Resource::RouteConfiguration(routes) => route_configs.push(routes.as_ref()),
            Resource::Cluster(cluster) => clusters.push(cluster),
            Resource::ClusterLoadAssignment(assignment) => {
                assignments.insert(assignment.cluster_name.as_str());
            }
        }
    }

    let mut errors = Vec::new();
    check_listeners(listeners.iter().copied(), &mut errors);
    let cluster_names: HashSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    let route_names: HashSet<&str> = route_configs.iter().map(|r| r.name.as_str()).collect();

    for listener in &listeners {
        check_filter_clusters(listener, &cluster_names, &mut errors);
        check_listener_secrets(listener, &secrets, &mut errors);
        let label = format!("Listener {:?}", listener.name);
        for (index, chain) in listener.filter_chains.iter().enumerate() {
            match &chain.http.routes {
                RouteSource::Inline(routes) => check_route_clusters(routes, &cluster_names, &label, &mut errors),
                RouteSource::Rds(name) if !route_names.contains(name.as_str()) => errors.push(reference_error(
                    &label,
                    &format!("filter_chains[{index}].filters[0].typed_config.rds.route_config_name"),
                    format!("route configuration {name:?} does not exist"),
                )),
                RouteSource::Rds(_) => {}
            }
        }
    }
    for routes in &route_configs {
        check_route_clusters(routes, &cluster_names, &format!("RouteConfiguration {:?}", routes.name), &mut errors);
    }
    for cluster in &clusters {
        if let Some(Err(error)) = cluster.tls.as_ref().map(|tls| tls.resolve(&secrets)) {
            errors.push(secret_error(&format!("Cluster {:?}", cluster.name), "transport_socket", error));
        }
        if let Some(service_name) = cluster.eds_service_name() {
            if !assignments.contains(service_name) {
                errors.push(reference_error(
                    &format!("Cluster {:?}", cluster.name),
                    "eds_cluster_config",
                    format!("ClusterLoadAssignment {service_name:?} does not exist"),
                ));
            }
        }
    }
    ConfigErrors(errors)
}

fn check_listeners<'a>(listeners: impl Iterator<Item = &'a Listener>, errors: &mut Vec<ConfigError>) {
    let mut names = HashSet::new();
    let mut addresses = HashMap::new();
    for listener in listeners {
        let label = format!("Listener {:?}", listener.name);
        if !names.insert(listener.name.as_str()) {
            errors.push(duplicate(&label, "name", "another listener has the same name".into()));
        }
        // Port 0 asks the system for any free port, so two such listeners
        // never clash.
        if listener.address.port() == 0 {
            continue;
        }
        if let Some(other) = addresses.insert(listener.address, listener.name.as_str()) {
            errors.push(duplicate(&label, "address", format!("address {} is also used by listener {other:?}", listener.address)));
        }
    }
}

fn unique_names<'a>(names: impl Iterator<Item = &'a str>, kind: &str, errors: &mut Vec<ConfigError>) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            errors.push(duplicate(&format!("{kind} {name:?}"), "name", format!("another {kind} has the same name")));
        }
    }
    seen
}

fn check_route_clusters(routes: &RouteConfiguration, clusters: &HashSet<&str>, label: &str, errors: &mut Vec<ConfigError>) {
    for (host_index, host) in routes.virtual_hosts.iter().enumerate() {
        for (route_index, route) in host.routes.iter().enumerate() {
            let RouteAction::Forward(action) = &route.action else {
                continue;
            };
            for name in action.clusters.cluster_names() {
                if !clusters.contains(name) {
                    errors.push(reference_error(
                        label,
                        &format!("virtual_hosts[{host_index}].routes[{route_index}].route"),
                        format!("cluster {name:?} does not exist"),
                    ));
                }
            }
        }
    }
}

/// Checks that the clusters the HTTP filters call (the external
/// authorization service) exist.
fn check_filter_clusters(listener: &Listener, clusters: &HashSet<&str>, errors: &mut Vec<ConfigError>) {
    for (chain_index, chain) in listener.filter_chains.iter().enumerate() {
        // The connection manager is the last filter, after the connection filters.
        let filter_index = chain.connection_filters.len();
        for (index, filter) in chain.http.http_filters.iter().enumerate() {
            let HttpFilter::ExtAuthz(config) = filter else { continue };
            let (name, field) = match &config.service {
                ExtAuthzService::Http(service) => (service.cluster.as_str(), "http_service.server_uri.cluster"),
                ExtAuthzService::Grpc { cluster, .. } => (cluster.as_str(), "grpc_service.envoy_grpc.cluster_name"),
            };
            if !clusters.contains(name) {
                errors.push(reference_error(
                    &format!("Listener {:?}", listener.name),
                    &format!("filter_chains[{chain_index}].filters[{filter_index}].typed_config.http_filters[{index}].typed_config.{field}"),
                    format!("cluster {name:?} does not exist"),
                ));
            }
        }
    }
}

/// Checks that every secret a listener's filter chains name exists and
/// contains the kind of secret the field needs.
fn check_listener_secrets(listener: &Listener, secrets: &Secrets, errors: &mut Vec<ConfigError>) {
    for (index, chain) in listener.filter_chains.iter().enumerate() {
        let Some(tls) = &chain.tls else { continue };
        if let Err(error) = tls.resolve(secrets) {
            errors.push(secret_error(&format!("Listener {:?}", listener.name), &format!("filter_chains[{index}].transport_socket"), error));
        }
    }
}

fn secret_error(resource: &str, path: &str, error: SecretLookupError) -> ConfigError {
    let kind = match error {
        SecretLookupError::Missing(_) => ErrorKind::UnknownReference,
        SecretLookupError::WrongKind { .. } => ErrorKind::Invalid,
    };
    ConfigError { kind, resource: resource.to_string(), path: path.to_string(), message: error.to_string() }
}

fn reference_error(resource: &str, path: &str, message: String) -> ConfigError {
    ConfigError { kind: ErrorKind::UnknownReference, resource: resource.to_string(), path: path.to_string(), message }
}

fn duplicate(resource: &str, path: &str, message: String) -> ConfigError {
    ConfigError { kind: ErrorKind::Duplicate, resource: resource.to_string(), path: path.to_string(), message }
}
