//! Decides whether a pod gets the Legate proxy sidecar and builds the JSONPatch that adds it.

use serde_json::{json, Map, Value};

/// Name of the injected container. A pod with a container or init container
/// of this name already has the proxy and is left as it is.
pub const SIDECAR_NAME: &str = "legate-proxy";

/// Pod annotation that opts a pod out of injection when set to `"false"`.
pub const INJECT_ANNOTATION: &str = "sidecar.legate.io/inject";

/// Pod annotation naming the ConfigMap that holds the pod's `bootstrap.yaml`,
/// in place of the webhook's default.
pub const BOOTSTRAP_ANNOTATION: &str = "sidecar.legate.io/bootstrap";

/// Annotation the webhook sets on every pod it injects.
pub const STATUS_ANNOTATION: &str = "sidecar.legate.io/status";

/// Port of the proxy's inbound listener in the sidecar bootstrap.
pub const INBOUND_PORT: u16 = 15006;

/// Port of the proxy's admin listener (`/ready`) in the sidecar bootstrap.
pub const ADMIN_PORT: u16 = 9901;

const BOOTSTRAP_VOLUME: &str = "legate-bootstrap";
const BOOTSTRAP_DIR: &str = "/etc/legate";
const ADS_TOKEN_VOLUME: &str = "legate-ads-token";
const ADS_TOKEN_DIR: &str = "/etc/legate-ads";

/// Settings of the injected sidecar that vary between installations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarTemplate {
    /// Container image of the proxy.
    pub image: String,
    /// ConfigMap, in the pod's namespace, with the proxy's `bootstrap.yaml`.
    pub bootstrap_config_map: String,
    /// Pod label whose value becomes the proxy's node cluster.
    pub cluster_label: String,
    /// Secret, in the pod's namespace, whose `token` key is the bearer
    /// token the proxy sends on its ADS stream; `None` sends no token.
    pub ads_token_secret: Option<String>,
}

/// What the webhook does with one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// The pod is admitted unchanged.
    Skipped(SkipReason),
    /// The pod is admitted with these JSONPatch operations applied.
    Patched(Vec<Value>),
}

/// Why a pod is admitted without the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod's `sidecar.legate.io/inject` annotation is `"false"`.
    OptedOut,
    /// The pod already has a container named `legate-proxy`.
    AlreadyInjected,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted out by annotation",
            SkipReason::AlreadyInjected => "sidecar already present",
        }
    }
}

impl SidecarTemplate {
    /// Decides on `pod`, a Pod object as the API server sends it.
    pub fn inject(&self, pod: &Value) -> Injection {
        if annotation(pod, INJECT_ANNOTATION) == Some("false") {
            return Injection::Skipped(SkipReason::OptedOut);
        }
        if has_sidecar(pod) {
            return Injection::Skipped(SkipReason::AlreadyInjected);
        }
        let config_map = annotation(pod, BOOTSTRAP_ANNOTATION).unwrap_or(&self.bootstrap_config_map);
        let mut operations = vec![self.add_init_container(pod)];
        operations.extend(self.add_volumes(pod, config_map));
        operations.push(add_status_annotation(pod));
        Injection::Patched(operations)
    }

    /// Puts the sidecar first among the init containers, so that it is
    /// running before the pod's other init containers make network calls.
    fn add_init_container(&self, pod: &Value) -> Value {
        let sidecar = self.container();
        match pod["spec"]["initContainers"].as_array() {
            Some(existing) if !existing.is_empty() => add("/spec/initContainers/0", sidecar),
            _ => add("/spec/initContainers", json!([sidecar])),
        }
    }

    /// The proxy as a native sidecar: an init container with
    /// `restartPolicy: Always` (Kubernetes 1.29 or newer). Kubernetes starts
    /// the app containers once its startup probe passes and stops it after
    /// they have exited.
    pub fn container(&self) -> Value {
        let ready_probe = json!({ "httpGet": { "path": "/ready", "port": ADMIN_PORT } });
        let mut container = json!({
            "name": SIDECAR_NAME,
            "image": self.image,
            "restartPolicy": "Always",
            "args": [
                "proxy",
                "--config", format!("{BOOTSTRAP_DIR}/bootstrap.yaml"),
                "--concurrency", "2",
                "--service-node", "$(POD_NAME).$(POD_NAMESPACE)",
                "--service-cluster", "$(LEGATE_SERVICE_CLUSTER)",
            ],
            "env": [
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("LEGATE_SERVICE_CLUSTER", &format!("metadata.labels['{}']", self.cluster_label)),
            ],
            "ports": [
                { "name": "legate-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP" },
                { "name": "legate-admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
            ],
            "startupProbe": with_timing(&ready_probe, 1, 120),
            "readinessProbe": with_timing(&ready_probe, 5, 3),
            "resources": sidecar_resources(),
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
            },
            "volumeMounts": [{ "name": BOOTSTRAP_VOLUME, "mountPath": BOOTSTRAP_DIR, "readOnly": true }],
        });
        if self.ads_token_secret.is_some() {
            push(&mut container["args"], json!("--ads-token-file"));
            push(&mut container["args"], json!(format!("{ADS_TOKEN_DIR}/token")));
            push(&mut container["volumeMounts"], json!({ "name": ADS_TOKEN_VOLUME, "mountPath": ADS_TOKEN_DIR, "readOnly": true }));
        }
        container
    }

    /// Adds the bootstrap ConfigMap and, with an ADS token, its Secret as
    /// pod volumes.
    fn add_volumes(&self, pod: &Value, config_map: &str) -> Vec<Value> {
        let mut volumes = vec![json!({ "name": BOOTSTRAP_VOLUME, "configMap": { "name": config_map } })];
        if let Some(secret) = &self.ads_token_secret {
            volumes.push(json!({ "name": ADS_TOKEN_VOLUME, "secret": { "secretName": secret } }));
        }
        match pod["spec"]["volumes"].as_array() {
            Some(_) => volumes.into_iter().map(|volume| add("/spec/volumes/-", volume)).collect(),
            None => vec![add("/spec/volumes", Value::Array(volumes))],
        }
    }
}

fn push(array: &mut Value, item: Value) {
    if let Some(items) = array.as_array_mut() {
        items.push(item);
    }
}

/// Requests and limits of the sidecar.
// NOTE: sized from a release build's RSS with the sidecar bootstrap, about
// 13 MiB after light traffic (deploy/README.md, "Sidecar resources"). A
// proxy with thousands of routes or connections needs more.
fn sidecar_resources() -> Value {
    json!({
        "requests": { "cpu": "50m", "memory": "32Mi" },
        "limits": { "memory": "128Mi" },
    })
}

fn with_timing(probe: &Value, period_seconds: u32, failure_threshold: u32) -> Value {
    let mut probe = probe.clone();
    probe["periodSeconds"] = json!(period_seconds);
    probe["failureThreshold"] = json!(failure_threshold);
    probe
}

fn field_env(name: &str, field_path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": field_path } } })
}

fn add_status_annotation(pod: &Value) -> Value {
    match pod["metadata"]["annotations"].as_object() {
        Some(_) => add(&format!("/metadata/annotations/{}", escape_pointer(STATUS_ANNOTATION)), json!("injected")),
        None => {
            let mut annotations = Map::new();
            annotations.insert(STATUS_ANNOTATION.to_string(), json!("injected"));
            add("/metadata/annotations", Value::Object(annotations))
        }
    }
}

fn add(path: &str, value: Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

/// Escapes a key for use as one JSON Pointer segment (RFC 6901).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key].as_str()
}

fn has_sidecar(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|containers| containers.iter().any(|container| container["name"] == SIDECAR_NAME))
    })
}
