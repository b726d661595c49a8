//! Legate's config model, shared by the proxy and the control plane.
//!
//! Envoy v3 resources arrive as protobuf (xDS, the config API) or as
//! Envoy-format YAML/JSON (bootstrap files, `legate apply`). This crate turns
//! both into Legate's own model at one boundary, rejecting every field Legate
//! does not implement, so the data path never touches protos.

pub mod decode;
pub mod error;
pub mod model;
pub mod reflect;
pub mod resource;
pub mod text;
pub mod transcoder;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use resource::{Resource, ResourceType};
