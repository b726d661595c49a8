//! Per-type state of one ADS stream (subscribed names, last response sent)
//! and the classification of its requests as subscription, ACK, NACK or
//! stale.

use std::collections::{BTreeMap, BTreeSet};

use legate_api::envoy::service::discovery::v3::DiscoveryRequest;
use legate_config::ResourceType;

use crate::snapshot::Snapshot;

/// Resources of one type as a stream receives them, by name.
pub(crate) type Content = BTreeMap<String, prost_types::Any>;

/// One resource type on one stream.
#[derive(Debug)]
pub(crate) struct TypeState {
    resource_type: ResourceType,
    /// Names the proxy subscribed to; empty and unused for wildcard types.
    names: BTreeSet<String>,
    pub(crate) last_nonce: String,
    pub(crate) last_version: String,
    /// The resources of the last response, so a new snapshot is sent only
    /// when what this stream would receive differs.
    pub(crate) sent: Content,
}

impl TypeState {
    pub(crate) fn new(resource_type: ResourceType) -> Self {
        TypeState {
            resource_type,
            names: BTreeSet::new(),
            last_nonce: String::new(),
            last_version: String::new(),
            sent: Content::new(),
        }
    }

    /// Replaces the subscribed names and returns whether they changed.
    /// Listeners and clusters are always sent in full, so their names are
    /// ignored.
    pub(crate) fn set_names(&mut self, names: &[String]) -> bool {
        if self.resource_type.is_wildcard() {
            return false;
        }

        let names: BTreeSet<String> = names.iter().cloned().collect();
        let changed = names != self.names;
        self.names = names;
        changed
    }

    /// Returns the resources this stream should hold from `snapshot`: every resource of a
    /// wildcard type, or the subscribed names that exist. Names that do not
    /// exist yet stay subscribed and are sent once they appear.
    pub(crate) fn content(&self, snapshot: &Snapshot) -> Content {
        snapshot
            .resources_of(self.resource_type)
            .filter(|stored| self.resource_type.is_wildcard() || self.names.contains(stored.resource.name()))
            .map(|stored| (stored.resource.name().to_string(), stored.any.clone()))
            .collect()
    }
}

/// `next`, plus the resources of `sent` that `next` no longer has: the
/// content sent while a change still adds and modifies, before anything is
/// removed.
pub(crate) fn with_removals_held(sent: &Content, next: &Content) -> Content {
    let mut merged = next.clone();
    for (name, any) in sent {
        merged.entry(name.clone()).or_insert_with(|| any.clone());
    }
    merged
}

/// Kind of a request, which decides how it is handled, following the SotW rules of
/// Envoy's xDS protocol.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestKind<'a> {
    /// The first request for the type, or one without a nonce: a
    /// subscription with nothing to acknowledge.
    Subscribe,
    /// The nonce is not the latest one sent for the type, so the request
    /// refers to an outdated response and is ignored.
    Stale,
    /// The proxy accepted the latest response.
    Ack,
    /// The proxy rejected the latest response with this error message.
    Nack(&'a str),
}

pub(crate) fn classify<'a>(request: &'a DiscoveryRequest, state: Option<&TypeState>) -> RequestKind<'a> {
    let Some(state) = state else {
        return RequestKind::Subscribe;
    };
    if request.response_nonce.is_empty() {
        return RequestKind::Subscribe;
    }
    if request.response_nonce != state.last_nonce {
        return RequestKind::Stale;
    }

    match &request.error_detail {
        Some(status) => RequestKind::Nack(&status.message),
        None => RequestKind::Ack,
    }
}
