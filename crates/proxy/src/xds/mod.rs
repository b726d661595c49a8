//! The ADS client: subscribes to listeners, routes, clusters and endpoints,
//! applies each response through the config manager, and ACKs or NACKs it.

mod changes;
mod client;
mod connect;
mod subscription;

pub use client::spawn;
