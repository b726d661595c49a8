//! The control plane's Prometheus metrics: connected proxies, and per
//! resource type the responses pushed, their ACKs and NACKs, and the time
//! from a push to its ACK. Labels are resource types only, so no proxy can
//! create a series.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use legate_config::ResourceType;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    resource_type: &'static str,
}

fn type_labels(resource_type: ResourceType) -> TypeLabels {
    TypeLabels { resource_type: resource_type.short_name() }
}

/// Push-to-ACK buckets: 1 ms to about 16 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The control plane's metrics registry, shared by every ADS stream.
pub struct ControlPlaneStats {
    registry: Registry,
    pub connected: Gauge,
    /// 1 while a replica watches the config in etcd; stays 0 without etcd.
    pub etcd_watching: Gauge,
    pushes: Family<TypeLabels, Counter>,
    acks: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
    push_latency: Family<TypeLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for ControlPlaneStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlaneStats")
    }
}

impl Default for ControlPlaneStats {
    fn default() -> Self {
        let connected = Gauge::default();
        let etcd_watching = Gauge::default();
        let pushes = Family::default();
        let acks = Family::default();
        let nacks = Family::default();
        let push_latency: Family<TypeLabels, Histogram, fn() -> Histogram> = Family::new_with_constructor(latency_buckets);

        let mut registry = Registry::with_prefix("legate_control_plane");
        registry.register("proxies_connected", "Proxies with an open ADS stream", connected.clone());
        registry.register("etcd_watching", "1 while this replica watches the config in etcd", etcd_watching.clone());
        registry.register("pushes", "Discovery responses sent, per resource type", pushes.clone());
        registry.register("acks", "Responses proxies accepted, per resource type", acks.clone());
        registry.register("nacks", "Responses proxies rejected, per resource type", nacks.clone());
        registry.register_with_unit(
            "push_to_ack",
            "Time from sending a response to the proxy's ACK of it, per resource type",
            Unit::Seconds,
            push_latency.clone(),
        );
        ControlPlaneStats { registry, connected, etcd_watching, pushes, acks, nacks, push_latency }
    }
}

impl ControlPlaneStats {
    pub fn count_push(&self, resource_type: ResourceType) {
        self.pushes.get_or_create(&type_labels(resource_type)).inc();
    }

    pub fn count_ack(&self, resource_type: ResourceType, since_push: Option<std::time::Duration>) {
        self.acks.get_or_create(&type_labels(resource_type)).inc();
        if let Some(latency) = since_push {
            self.push_latency.get_or_create(&type_labels(resource_type)).observe(latency.as_secs_f64());
        }
    }

    pub fn count_nack(&self, resource_type: ResourceType) {
        self.nacks.get_or_create(&type_labels(resource_type)).inc();
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
