//! Envoy's v3 xDS API (the subset Legate implements) and Legate's config
//! API, generated from the `.proto` files in this folder by `build.rs`.
//!
//! Module paths follow the proto packages, so `envoy.config.cluster.v3.Cluster`
//! is `legate_api::envoy::config::cluster::v3::Cluster`.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// Encoded `FileDescriptorSet` of every file in `proto/` and its imports, for
/// decoding config by reflection (JSON, YAML, unknown-field checks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
