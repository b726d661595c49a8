//! Tests of the files in deploy/: Kubernetes manifests against the API
//! schemas, resource files and bootstraps against Legate, the container
//! image's runtime libraries, and the sidecar scenario run without Kubernetes.

#[path = "../e2e/support/mod.rs"]
mod support;

mod config_files;
mod image;
mod manifests;
mod sidecar;

use std::path::{Path, PathBuf};

/// The repository's deploy/ folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}
