//! The circuit breaker metrics, read from the live clusters' breakers at
//! each scrape instead of kept as series per cluster.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::BreakerLabels;
use crate::upstream::{BreakerReading, ClusterCircuit};

/// The breakers of every cluster that still exists. A removed cluster's
/// series disappear once its last request ends.
#[derive(Debug, Clone, Default)]
pub(super) struct BreakerCollector {
    circuits: Arc<Mutex<Vec<Weak<ClusterCircuit>>>>,
}

impl BreakerCollector {
    pub(super) fn add(&self, circuit: &Arc<ClusterCircuit>) {
        self.lock().push(Arc::downgrade(circuit));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<ClusterCircuit>>> {
        self.circuits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the live circuits, newest first with one per cluster name,
    /// and removes the entries of dropped ones. A cluster removed and added again while
    /// requests still use the old one has two live circuits, and the new
    /// one is in force.
    fn live(&self) -> Vec<Arc<ClusterCircuit>> {
        let mut circuits = self.lock();
        circuits.retain(|circuit| circuit.strong_count() > 0);
        let mut names = HashSet::new();
        let mut live: Vec<Arc<ClusterCircuit>> = circuits.iter().rev().filter_map(Weak::upgrade).collect();
        live.retain(|circuit| names.insert(circuit.cluster().to_string()));
        live
    }
}

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readings: Vec<(BreakerLabels, BreakerReading)> = self
            .live()
            .iter()
            .flat_map(|circuit| circuit.readings().map(|reading| (labels(circuit.cluster(), &reading), reading)).collect::<Vec<_>>())
            .collect();

        let open = |reading: &BreakerReading| ConstGauge::new(i64::from(reading.is_open()));
        let remaining = |reading: &BreakerReading| ConstGauge::new(reading.remaining() as i64);
        encode_family(&mut encoder, "circuit_breaker_open", "1 while a circuit breaker is full, per cluster, priority and resource", &readings, open)?;
        encode_family(
            &mut encoder,
            "circuit_breaker_remaining",
            "Units left before a circuit breaker is full, per cluster, priority and resource",
            &readings,
            remaining,
        )?;
        encode_counter(&mut encoder, &readings)
    }
}

fn labels(cluster: &str, reading: &BreakerReading) -> BreakerLabels {
    BreakerLabels { cluster: cluster.to_string(), priority: reading.priority.as_str(), resource: reading.resource.as_str() }
}

fn encode_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    readings: &[(BreakerLabels, BreakerReading)],
    gauge: impl Fn(&BreakerReading) -> ConstGauge<i64>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, reading) in readings {
        gauge(reading).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn encode_counter(encoder: &mut DescriptorEncoder, readings: &[(BreakerLabels, BreakerReading)]) -> Result<(), std::fmt::Error> {
    let help = "Requests, connections or retries refused by a full circuit breaker";
    let mut metric = encoder.encode_descriptor("upstream_overflow", help, None, MetricType::Counter)?;
    for (labels, reading) in readings {
        ConstCounter::new(reading.overflow).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}
