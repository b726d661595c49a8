//! Per-method gRPC metrics of the `envoy.filters.http.grpc_stats` filter,
//! under the names gRPC's Prometheus integrations use
//! (`grpc_server_handled_total` and so on), without Legate's prefix.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{duration_buckets, HistogramFamily};

/// Service and method label of every call whose method has no series of
/// its own (not in the allowlist, or past the cap of the all-methods mode).
pub const OTHER_METHOD: &str = "other";

/// Call kinds, inferred from the number of messages each way when the
/// call ends, because the proxy does not see the service definition.
pub const CALL_TYPES: [&str; 4] = ["unary", "client_stream", "server_stream", "bidi_stream"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethodLabels {
    pub grpc_service: String,
    pub grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcTypeLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcHandledLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_type: &'static str,
    pub grpc_code: &'static str,
}

/// The gRPC metric families.
pub struct GrpcStats {
    started: Family<GrpcMethodLabels, Counter>,
    handled: Family<GrpcHandledLabels, Counter>,
    handling: HistogramFamily<GrpcTypeLabels>,
    received: Family<GrpcTypeLabels, Counter>,
    sent: Family<GrpcTypeLabels, Counter>,
}

impl GrpcStats {
    pub(super) fn register(registry: &mut Registry) -> Arc<Self> {
        let stats = GrpcStats {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(duration_buckets),
            received: Family::default(),
            sent: Family::default(),
        };
        registry.register("grpc_server_started", "gRPC calls started, per service and method", stats.started.clone());
        registry.register(
            "grpc_server_handled",
            "gRPC calls ended, per service, method, call type and status code",
            stats.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from request headers to the end of the call, per service, method and call type",
            Unit::Seconds,
            stats.handling.clone(),
        );
        registry.register("grpc_server_msg_received", "gRPC messages received from clients", stats.received.clone());
        registry.register("grpc_server_msg_sent", "gRPC messages sent to clients", stats.sent.clone());
        Arc::new(stats)
    }

    /// Handles for one method; the labels come from config or are
    /// `OTHER_METHOD`.
    pub fn method(self: &Arc<Self>, service: &str, method: &str) -> Arc<GrpcMethodStats> {
        let labels = GrpcMethodLabels { grpc_service: service.to_string(), grpc_method: method.to_string() };
        Arc::new(GrpcMethodStats {
            started: self.started.get_or_create_owned(&labels),
            by_type: Default::default(),
            labels,
            families: self.clone(),
        })
    }
}

/// Handles of one method. The series per call type and code are made on
/// first use, so a method shows only the kinds and codes it had.
pub struct GrpcMethodStats {
    labels: GrpcMethodLabels,
    pub started: Counter,
    by_type: [OnceLock<TypeStats>; 4],
    families: Arc<GrpcStats>,
}

struct TypeStats {
    handling: Histogram,
    received: Counter,
    sent: Counter,
    handled: [OnceLock<Counter>; 17],
}

impl GrpcMethodStats {
    /// Records an ended call: its type index in `CALL_TYPES`, status code
    /// index, duration and message counts.
    pub fn record(&self, call_type: usize, code: usize, seconds: f64, received: u64, sent: u64) {
        let grpc_type = CALL_TYPES[call_type];
        let type_labels = || GrpcTypeLabels {
            grpc_service: self.labels.grpc_service.clone(),
            grpc_method: self.labels.grpc_method.clone(),
            grpc_type,
        };
        let stats = self.by_type[call_type].get_or_init(|| TypeStats {
            handling: self.families.handling.get_or_create_owned(&type_labels()),
            received: self.families.received.get_or_create_owned(&type_labels()),
            sent: self.families.sent.get_or_create_owned(&type_labels()),
            handled: Default::default(),
        });
        stats.handling.observe(seconds);
        stats.received.inc_by(received);
        stats.sent.inc_by(sent);
        let handled = stats.handled[code].get_or_init(|| {
            self.families.handled.get_or_create_owned(&GrpcHandledLabels {
                grpc_service: self.labels.grpc_service.clone(),
                grpc_method: self.labels.grpc_method.clone(),
                grpc_type,
                grpc_code: crate::grpc::CODE_NAMES[code],
            })
        });
        handled.inc();
    }
}
