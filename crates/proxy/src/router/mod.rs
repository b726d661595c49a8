//! Route tables compiled for lookup: virtual host by host name, then the
//! first route whose match accepts the request.

mod matching;

use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;

use legate_config::model::{DomainMatcher, Route, RouteConfiguration, VirtualHost};

/// A route configuration with its domain index built at config-load time.
pub struct RouteTable {
    config: Arc<RouteConfiguration>,
    exact: HashMap<String, usize>,
    /// `*.example.com` entries as (suffix, host index), longest first.
    suffixes: Vec<(String, usize)>,
    /// `example.*` entries as (prefix, host index), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl RouteTable {
    pub fn new(config: Arc<RouteConfiguration>) -> Self {
        let mut table = RouteTable { config, exact: HashMap::new(), suffixes: Vec::new(), prefixes: Vec::new(), any: None };
        for (index, host) in table.config.virtual_hosts.iter().enumerate() {
            for domain in &host.domains {
                match domain {
                    DomainMatcher::Exact(name) => {
                        table.exact.entry(name.clone()).or_insert(index);
                    }
                    DomainMatcher::Suffix(suffix) => table.suffixes.push((suffix.clone(), index)),
                    DomainMatcher::Prefix(prefix) => table.prefixes.push((prefix.clone(), index)),
                    DomainMatcher::Any => {
                        table.any.get_or_insert(index);
                    }
                }
            }
        }
        table.suffixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        table.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        table
    }

    /// Finds the virtual host for `host` (port already removed). Exact
    /// domains win over suffix wildcards, suffixes over prefixes, and `*`
    /// comes last, as in Envoy.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };

        let index = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                    .map(|(_, index)| *index)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| host.len() > prefix.len() && host.starts_with(prefix.as_str()))
                    .map(|(_, index)| *index)
            })
            .or(self.any)?;
        self.config.virtual_hosts.get(index)
    }

    /// Finds the route for a request: its virtual host by `host`, then the
    /// first route that matches the path and headers.
    pub fn route<'a>(&'a self, host: &str, request: &Parts) -> Option<&'a Route> {
        let virtual_host = self.virtual_host(host)?;
        let path = request.uri.path();
        virtual_host.routes.iter().find(|route| matching::matches(&route.matcher, path, &request.headers))
    }
}

/// Removes the port from a Host or :authority value, keeping IPv6 brackets.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests;
