//! The sidecar injection webhook over HTTPS: AdmissionReview documents from
//! files, the returned JSONPatch applied to the pod, and bad requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use legate_control_plane::webhook::{self, Injection, SidecarTemplate};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::rustls;

/// A webhook served on a loopback port with a throwaway certificate, and a
/// client config that trusts only that certificate.
struct TestWebhook {
    address: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    _stop: oneshot::Sender<()>,
}

fn template() -> SidecarTemplate {
    SidecarTemplate {
        image: "legate:0.1.0".to_string(),
        bootstrap_config_map: "legate-sidecar-bootstrap".to_string(),
        cluster_label: "app".to_string(),
        ads_token_secret: None,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook")
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("legate-webhook-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestWebhook {
    async fn start(label: &str) -> TestWebhook {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = temp_dir(label);
        let cert_path = dir.join("tls.crt");
        let key_path = dir.join("tls.key");
        std::fs::write(&cert_path, certified.cert.pem()).unwrap();
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

        let server_tls = webhook::server_config(&cert_path, &key_path).expect("certificate loads");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(webhook::serve(listener, server_tls, template(), async {
            let _ = stopped.await;
        }));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestWebhook { address, client_tls: Arc::new(client_tls), _stop: stop }
    }

    /// Sends one request over a new TLS connection and returns the status
    /// and body.
    async fn send(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let tcp = TcpStream::connect(self.address).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.client_tls.clone());
        let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(server_name, tcp).await.expect("TLS handshake with the webhook");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);

        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    /// Posts an AdmissionReview and returns its `response` object.
    async fn review(&self, review: &Value) -> Value {
        let (status, body) = self.send("POST", "/inject", serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, 200, "webhook answered {}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        answer["response"].clone()
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Applies the response's JSONPatch, if any, to the reviewed pod.
fn patched_pod(review: &Value, response: &Value) -> Value {
    let mut pod = review["request"]["object"].clone();
    let Some(patch) = response["patch"].as_str() else {
        assert!(response.get("patchType").is_none(), "patchType without a patch: {response}");
        return pod;
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSONPatch");
    json_patch::patch(&mut pod, &patch).expect("patch applies to the pod");
    pod
}

/// Reviews `<case>.review.json` and compares the patched pod with
/// `<case>.expected.json`. With LEGATE_BLESS=1 the expected file is written
/// from the result instead, for review by hand.
async fn check_case(webhook: &TestWebhook, case: &str) -> Value {
    let review = read_json(&fixtures().join(format!("{case}.review.json")));
    let response = webhook.review(&review).await;
    assert_eq!(response["uid"], review["request"]["uid"], "response uid must match the request's");
    assert_eq!(response["allowed"], true);

    let pod = patched_pod(&review, &response);
    let expected_path = fixtures().join(format!("{case}.expected.json"));
    if std::env::var_os("LEGATE_BLESS").is_some() {
        std::fs::write(&expected_path, serde_json::to_string_pretty(&pod).unwrap() + "\n").unwrap();
    }
    let expected = read_json(&expected_path);
    assert_eq!(pod, expected, "patched pod differs from {}", expected_path.display());
    response
}

#[tokio::test]
async fn plain_pod_gets_sidecar() {
    let webhook = TestWebhook::start("plain").await;
    let response = check_case(&webhook, "plain_pod").await;
    assert!(response["patch"].is_string(), "a plain pod must be patched");
}

#[tokio::test]
async fn opted_out_pod_unchanged() {
    let webhook = TestWebhook::start("opted-out").await;
    let response = check_case(&webhook, "opted_out_pod").await;
    assert!(response.get("patch").is_none(), "an opted-out pod must not be patched");
}

#[tokio::test]
async fn injected_pod_left_alone() {
    let webhook = TestWebhook::start("injected").await;
    let response = check_case(&webhook, "injected_pod").await;
    assert!(response.get("patch").is_none(), "a pod with the sidecar must not be patched again");
}

#[tokio::test]
async fn several_containers_keep_order() {
    let webhook = TestWebhook::start("several").await;
    let response = check_case(&webhook, "several_containers_pod").await;
    assert!(response["patch"].is_string(), "the pod must be patched");
}

#[tokio::test]
async fn injection_is_idempotent() {
    let webhook = TestWebhook::start("idempotent").await;
    let mut review = read_json(&fixtures().join("plain_pod.review.json"));
    let first = webhook.review(&review).await;
    review["request"]["object"] = patched_pod(&review, &first);

    let second = webhook.review(&review).await;
    assert!(second.get("patch").is_none(), "a second review of the injected pod must not patch it");
}

#[tokio::test]
async fn other_objects_not_patched() {
    let webhook = TestWebhook::start("other").await;
    let mut review = read_json(&fixtures().join("plain_pod.review.json"));
    review["request"]["kind"]["kind"] = "ConfigMap".into();
    let response = webhook.review(&review).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "only pods are patched");

    let mut update = read_json(&fixtures().join("plain_pod.review.json"));
    update["request"]["operation"] = "UPDATE".into();
    let response = webhook.review(&update).await;
    assert!(response.get("patch").is_none(), "only new pods are patched");
}

#[tokio::test]
async fn invalid_reviews_get_400() {
    let webhook = TestWebhook::start("invalid").await;

    let (status, body) = webhook.send("POST", "/inject", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not valid JSON"));

    let wrong_kind = serde_json::json!({ "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": { "uid": "a" } });
    let (status, body) = webhook.send("POST", "/inject", serde_json::to_vec(&wrong_kind).unwrap()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("admission.k8s.io/v1beta1"));

    let no_uid = serde_json::json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {} });
    let (status, body) = webhook.send("POST", "/inject", serde_json::to_vec(&no_uid).unwrap()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("uid"));
}

#[tokio::test]
async fn wrong_path_or_method() {
    let webhook = TestWebhook::start("routes").await;
    let (status, _) = webhook.send("POST", "/mutate", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let (status, _) = webhook.send("GET", "/inject", Vec::new()).await;
    assert_eq!(status, 405);
}

#[test]
fn missing_certificate_is_error() {
    let dir = temp_dir("missing");
    let error = webhook::server_config(&dir.join("absent.crt"), &dir.join("absent.key")).unwrap_err();
    assert!(error.to_string().contains("absent.crt"), "error names the file: {error}");

    std::fs::write(dir.join("empty.crt"), "").unwrap();
    let error = webhook::server_config(&dir.join("empty.crt"), &dir.join("absent.key")).unwrap_err();
    assert!(matches!(error, webhook::TlsError::NoCertificate { .. }), "got {error}");
}

#[test]
fn ads_token_secret_is_mounted() {
    let template = SidecarTemplate { ads_token_secret: Some("legate-ads-token".to_string()), ..template() };
    let args = template.container()["args"].clone();
    let args: Vec<&str> = args.as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
    assert_eq!(args[args.len() - 2..], ["--ads-token-file", "/etc/legate-ads/token"]);

    let with_volumes = serde_json::json!({ "metadata": {}, "spec": { "containers": [{ "name": "app" }], "volumes": [{ "name": "data", "emptyDir": {} }] } });
    let Injection::Patched(operations) = template.inject(&with_volumes) else { panic!("the pod is injected") };
    let secret_volumes: Vec<_> = operations.iter().filter(|operation| operation["value"]["secret"]["secretName"] == "legate-ads-token").collect();
    assert_eq!(secret_volumes.len(), 1, "{operations:?}");
    assert_eq!(secret_volumes[0]["path"], "/spec/volumes/-");

    let without_volumes = serde_json::json!({ "metadata": {}, "spec": { "containers": [{ "name": "app" }] } });
    let Injection::Patched(operations) = template.inject(&without_volumes) else { panic!("the pod is injected") };
    let volumes = operations.iter().find(|operation| operation["path"] == "/spec/volumes").expect("a volumes list is added");
    assert_eq!(volumes["value"][1]["secret"]["secretName"], "legate-ads-token");
}
