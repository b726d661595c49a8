//! One module per scenario. Each runs its measurements (or reuses ones
//! another scenario already took) and returns a section of the results page.
//!
//! A new scenario is a module with a `Scenario` implementation added to
//! `all()`.

pub mod added_latency;
pub mod config_change;
pub mod cpu_per_request;
pub mod fan_out;
pub mod grpc;
pub mod grpc_streaming;
pub mod grpc_unary;
pub mod grpc_web;
pub mod http1;
pub mod memory;
pub mod throughput;
pub mod websocket;

use crate::bench::Bench;
use crate::report::Section;

pub trait Scenario {
    /// The scenario's number in the benchmark plan, used to order the page
    /// and to select scenarios with `--scenarios`.
    fn number(&self) -> u8;
    fn title(&self) -> &'static str;
    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section>;
}

/// Every scenario in the order it runs: throughput first, because the
/// fixed-rate scenarios take their rate from it.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(throughput::Throughput),
        Box::new(cpu_per_request::CpuPerRequest),
        Box::new(added_latency::AddedLatency),
        Box::new(grpc_unary::GrpcUnary),
        Box::new(grpc_streaming::GrpcStreaming),
        Box::new(grpc_web::GrpcWeb),
        Box::new(websocket::WebSocket),
        Box::new(memory::Memory),
        Box::new(config_change::ConfigChange),
        Box::new(fan_out::FanOut),
    ]
}
