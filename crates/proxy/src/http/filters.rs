//! The HTTP filters a listener runs, decided once at config load so that
//! a request only checks flags.
//!
//! Each filter acts at a fixed point of the request: gRPC-Web rewrites the
//! request before routing and the response at its end, CORS replies to
//! preflights once the route is known and adds headers to every response,
//! and gRPC statistics count from the request headers to the status. The
//! router is always last.

use std::sync::Arc;

use legate_config::model::HttpFilter;

use crate::grpc::MethodTable;
use crate::stats::ProxyStats;

/// The filters of one connection manager.
pub struct FilterPlan {
    pub grpc_web: bool,
    pub cors: bool,
    pub grpc_stats: Option<MethodTable>,
}

impl FilterPlan {
    pub fn new(filters: &[HttpFilter], stats: &ProxyStats) -> Arc<FilterPlan> {
        let mut plan = FilterPlan { grpc_web: false, cors: false, grpc_stats: None };
        for filter in filters {
            match filter {
                HttpFilter::GrpcWeb => plan.grpc_web = true,
                HttpFilter::Cors => plan.cors = true,
                HttpFilter::GrpcStats(config) => plan.grpc_stats = Some(MethodTable::new(config, &stats.grpc)),
                HttpFilter::Router => {}
            }
        }
        Arc::new(plan)
    }
}
