//! Every kustomization in deploy/ renders with `kubectl kustomize`, and every
//! object passes `kubernetes-validate --strict` for the Kubernetes versions below.

use std::path::{Path, PathBuf};
use std::process::Command;

use legate_control_plane::webhook::{SidecarTemplate, SIDECAR_NAME};
use serde_json::Value;

use crate::{deploy_dir, read};

/// 1.29 is the first release with native sidecars on by default; 1.33 is a
/// current release.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.33.0"];

fn require_tool(name: &str, install: &str) {
    let found = Command::new(name).arg("--help").output().is_ok_and(|output| output.status.success());
    assert!(found, "{name} is missing; install it with `{install}` (.ci/run does)");
}

fn kustomization_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("kustomization.yaml").is_file())
        // A Component renders only as part of a Kustomization.
        .filter(|dir| !read(&dir.join("kustomization.yaml")).contains("kind: Component"))
        .collect();
    dirs.sort();
    dirs
}

fn render(dir: &Path) -> String {
    let output = Command::new("kubectl").arg("kustomize").arg(dir).output().expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Splits a YAML stream at its `---` lines and parses each document.
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|document| serde_yaml_ng::from_str::<Value>(document).expect("YAML document parses"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Runs the validator on `file` and returns its output; fails the test when
/// the validator fails.
fn validate(file: &Path, version: &str) -> String {
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} is invalid for Kubernetes {version}:\n{text}", file.display());
    text
}

fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let path = crate::support::temp_dir("manifests").join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn kustomizations_render_and_validate() {
    require_tool("kubectl", "apt-get install kubectl, or a release from dl.k8s.io");
    require_tool("kubernetes-validate", "python3 -m pip install kubernetes-validate");

    let dirs = kustomization_dirs();
    let names: Vec<String> = dirs.iter().map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["config", "control-plane", "control-plane-ha", "example"], "kustomizations in deploy/");

    for dir in dirs {
        let rendered = render(&dir);
        let objects = documents(&rendered);
        assert!(!objects.is_empty(), "{} renders no objects", dir.display());
        let file = scratch_file("rendered.yaml", &rendered);
        for version in KUBERNETES_VERSIONS {
            let report = validate(&file, version);
            assert_eq!(
                report.matches(" passed for resource ").count(),
                objects.len(),
                "every object of {} must be validated for {version}:\n{report}",
                dir.display()
            );
        }
    }
}

#[test]
fn ha_control_plane_shares_config_through_etcd() {
    let objects = documents(&render(&deploy_dir().join("control-plane-ha")));
    let deployment = objects
        .iter()
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == "legate-control-plane")
        .expect("the control plane Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.iter().any(|arg| arg.starts_with("--etcd-endpoints=http://legate-etcd-0.legate-etcd")), "{args:?}");
    assert!(!args.iter().any(|arg| arg.starts_with("--data-dir")), "{args:?}");
    let volumes: Vec<&str> = pod["volumes"].as_array().unwrap().iter().filter_map(|volume| volume["name"].as_str()).collect();
    assert!(!volumes.contains(&"data"), "the replicas need no volume: {volumes:?}");
    assert!(!objects.iter().any(|object| object["kind"] == "PersistentVolumeClaim"), "no state file volume");
    assert!(objects.iter().any(|object| object["kind"] == "StatefulSet" && object["metadata"]["name"] == "legate-etcd"));
}

#[test]
fn validator_rejects_unknown_fields() {
    require_tool("kubernetes-validate", "python3 -m pip install kubernetes-validate");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: { name: typo }\nspec:\n  initContainers:\n  - { name: proxy, image: legate, restartPolicyy: Always }\n  containers:\n  - { name: app, image: app }\n";
    let file = scratch_file("typo.yaml", pod);
    let output = Command::new("kubernetes-validate").args(["--strict", "--kubernetes-version", "1.33.0"]).arg(&file).output().unwrap();
    assert!(!output.status.success(), "a misspelt field must fail strict validation");
}

#[test]
fn example_uses_native_sidecar() {
    let objects = documents(&render(&deploy_dir().join("example")));
    let deployment = objects
        .iter()
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == "echo")
        .expect("the example app Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    assert_eq!(sidecar["name"], SIDECAR_NAME);
    assert_eq!(sidecar["restartPolicy"], "Always", "the proxy must be a native sidecar");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "legate-sidecar-bootstrap");

    let config_map = objects
        .iter()
        .find(|object| object["kind"] == "ConfigMap" && object["metadata"]["name"] == "legate-sidecar-bootstrap")
        .expect("the sidecar bootstrap ConfigMap");
    assert_eq!(
        config_map["data"]["bootstrap.yaml"].as_str().unwrap(),
        read(&deploy_dir().join("sidecar/bootstrap.yaml")),
        "the ConfigMap carries deploy/sidecar/bootstrap.yaml unchanged"
    );
}

/// The sidecar written out in the example is the one the webhook injects,
/// with the control plane's flags from deploy/control-plane.
#[test]
fn example_sidecar_matches_webhook() {
    let objects = documents(&read(&deploy_dir().join("example/app.yaml")));
    let written = &objects[0]["spec"]["template"]["spec"]["initContainers"][0];
    let template = SidecarTemplate {
        image: "legate:0.1.0".to_string(),
        bootstrap_config_map: "legate-sidecar-bootstrap".to_string(),
        cluster_label: "app".to_string(),
        ads_token_secret: Some("legate-ads-token".to_string()),
    };
    assert_eq!(written, &template.container());
}

#[test]
fn injected_pods_pass_schema() {
    require_tool("kubernetes-validate", "python3 -m pip install kubernetes-validate");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/control-plane/tests/webhook");
    for case in ["plain_pod", "several_containers_pod"] {
        let mut pod: Value = serde_json::from_str(&read(&fixtures.join(format!("{case}.expected.json")))).unwrap();
        // Pods from a ReplicaSet have only generateName at admission time;
        // the schema check needs nothing more.
        pod["metadata"]["name"] = "echo-5c9f7d8b6d-x2x7q".into();
        let file = scratch_file(&format!("{case}.json"), &pod.to_string());
        for version in KUBERNETES_VERSIONS {
            validate(&file, version);
        }
    }
}
