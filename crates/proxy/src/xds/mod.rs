//! The ADS client: subscribes to listeners, routes, clusters and endpoints,
//! applies each response through the config manager, and ACKs or NACKs it.
//! It uses incremental (delta) ADS when the bootstrap sets a delta `api_type`
//! and the control plane supports it, and state-of-the-world otherwise.

mod changes;
mod client;
mod connect;
mod delta;
mod subscription;

pub use client::spawn;
