//! Route tables compiled for lookup: virtual host by host name, then the
//! first route whose match accepts the request.

pub(crate) mod matching;
mod path_index;

pub(crate) use matching::value_matches;

use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;

use legate_config::model::{DomainMatcher, LocalRateLimit, PerRoute, Route, RouteConfiguration};
#[cfg(test)]
use legate_config::model::VirtualHost;

use self::path_index::PathIndex;
use crate::ratelimit::RateLimiter;
use crate::stats::{HttpStats, RouteStats};

/// Route label of requests that matched no route, and virtual host label of
/// requests that matched no virtual host.
const NO_MATCH: &str = "none";

/// A route configuration with its domain index built at config-load time.
pub struct RouteTable {
    config: Arc<RouteConfiguration>,
    exact: HashMap<String, usize>,
    /// `*.example.com` entries as (suffix, host index), longest first.
    suffixes: Vec<(String, usize)>,
    /// `example.*` entries as (prefix, host index), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    /// Metric handles per virtual host: one per route, in route order, then
    /// one for requests that matched no route of that host.
    stats: Vec<Vec<Arc<RouteStats>>>,
    /// Metric handle of requests that matched no virtual host.
    no_host_stats: Arc<RouteStats>,
    /// Local rate limiters per virtual host, one per route in route order,
    /// for the routes with their own or their virtual host's config.
    rate_limiters: Vec<Vec<Option<Arc<RateLimiter>>>>,
    /// Path index per virtual host, for hosts with many routes.
    path_indexes: Vec<Option<PathIndex>>,
}

/// The route a request matched with its metric handles, or the handles to
/// count a request that matched none.
pub enum RouteMatchResult<'a> {
    /// The route, its metric handles and its local rate limiter, if any.
    Matched(&'a Route, &'a Arc<RouteStats>, Option<&'a RateLimiter>),
    NoRoute(&'a Arc<RouteStats>),
}

impl RouteTable {
    pub fn new(config: Arc<RouteConfiguration>, http_stats: &HttpStats) -> Self {
        let stats = config
            .virtual_hosts
            .iter()
            .map(|host| {
                let mut handles: Vec<_> = host
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(index, route)| http_stats.route(&host.name, &route_label(route, index)))
                    .collect();
                handles.push(http_stats.route(&host.name, NO_MATCH));
                handles
            })
            .collect();
        let no_host_stats = http_stats.route(NO_MATCH, NO_MATCH);
        let rate_limiters = rate_limiters(&config, http_stats);
        let path_indexes = config.virtual_hosts.iter().map(|host| PathIndex::build(&host.routes)).collect();
        let mut table = RouteTable {
            config,
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            stats,
            no_host_stats,
            rate_limiters,
            path_indexes,
        };
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
        table.suffixes.sort_by_key(|entry| std::cmp::Reverse(entry.0.len()));
        table.prefixes.sort_by_key(|entry| std::cmp::Reverse(entry.0.len()));
        table
    }

    /// Finds the virtual host for `host`, the Host or :authority value.
    /// Exact domains win over suffix wildcards, suffixes over prefixes, and
    /// `*` comes last, as in Envoy. The port takes part in the match unless
    /// the route configuration sets `ignore_port_in_host_matching`.
    #[cfg(test)]
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.virtual_host_index(host).and_then(|index| self.config.virtual_hosts.get(index))
    }

    fn virtual_host_index(&self, host: &str) -> Option<usize> {
        let host = if self.config.ignore_port_in_host_matching { host_without_port(host) } else { host };
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
        Some(index)
    }

    /// Finds the route for a request: its virtual host by `host` (the Host
    /// or :authority value), then the first route that matches the path
    /// and headers.
    pub fn route<'a>(&'a self, host: &str, request: &Parts) -> RouteMatchResult<'a> {
        let Some(host_index) = self.virtual_host_index(host) else {
            return RouteMatchResult::NoRoute(&self.no_host_stats);
        };
        let virtual_host = &self.config.virtual_hosts[host_index];
        let stats = &self.stats[host_index];
        let path = request.uri.path();
        let first_match = match &self.path_indexes[host_index] {
            Some(index) => index.first_match(&virtual_host.routes, path, &request.headers),
            None => virtual_host.routes.iter().position(|route| matching::matches(&route.matcher, path, &request.headers)),
        };
        match first_match {
            Some(index) => {
                RouteMatchResult::Matched(&virtual_host.routes[index], &stats[index], self.rate_limiters[host_index][index].as_deref())
            }
            None => RouteMatchResult::NoRoute(&stats[stats.len() - 1]),
        }
    }
}

/// Builds a rate limiter per `LocalRateLimit` config of the routes. Routes
/// that take their virtual host's config share its limiter, so the virtual
/// host has one bucket.
fn rate_limiters(config: &RouteConfiguration, http_stats: &HttpStats) -> Vec<Vec<Option<Arc<RateLimiter>>>> {
    let mut built: Vec<Arc<RateLimiter>> = Vec::new();
    let mut limiter_for = |limit: &Arc<LocalRateLimit>| {
        if let Some(limiter) = built.iter().find(|limiter| Arc::ptr_eq(&limiter.config, limit)) {
            return limiter.clone();
        }
        let limiter = Arc::new(RateLimiter::new(limit.clone(), http_stats.local_rate_limited(&limit.stat_prefix)));
        built.push(limiter.clone());
        limiter
    };
    config
        .virtual_hosts
        .iter()
        .map(|host| {
            host.routes
                .iter()
                .map(|route| match &route.filter_configs.local_ratelimit {
                    Some(PerRoute::Override(limit)) => Some(limiter_for(limit)),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Names a route for metrics: its `name`, or its position when unnamed.
fn route_label(route: &Route, index: usize) -> String {
    if route.name.is_empty() {
        format!("#{index}")
    } else {
        route.name.clone()
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
