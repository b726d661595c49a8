//! The resource files in deploy/config pass `legate apply` on a real control
//! plane, and every bootstrap in deploy/ passes `legate proxy --mode validate`.

use std::path::PathBuf;

use crate::support::{legate, temp_dir, ControlPlane};
use crate::{deploy_dir, read};

fn resource_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("config"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .filter(|path| read(path).contains("\"@type\""))
        .collect();
    files.sort();
    files
}

#[test]
fn config_files_apply_cleanly() {
    let files = resource_files();
    assert_eq!(files.len(), 2, "deploy/config holds gateway.yaml and mesh.yaml: {files:?}");
    let control_plane = ControlPlane::start(&temp_dir("deploy-config"));
    for file in files {
        let output = control_plane.apply(&read(&file));
        assert!(
            output.status.success(),
            "legate apply -f {} failed:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn deploy_bootstraps_validate() {
    let bootstraps = ["sidecar/bootstrap.yaml", "example/gateway-bootstrap.yaml", "examples/websocket.yaml", "examples/grpc.yaml"];
    for bootstrap in bootstraps {
        let path = deploy_dir().join(bootstrap);
        let output = legate(&["proxy", "--config", path.to_str().unwrap(), "--mode", "validate"]);
        assert!(output.status.success(), "{bootstrap} is invalid:\n{}", String::from_utf8_lossy(&output.stderr));
    }
}
