//! Answers an `admission.k8s.io/v1` AdmissionReview with the sidecar patch.

use base64::Engine;
use serde_json::{json, Value};

use super::inject::{Injection, SidecarTemplate};

/// An AdmissionReview the webhook cannot answer; the API server gets 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not valid JSON")]
    InvalidJson(#[source] serde_json::Error),
    #[error("expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {api_version:?} {kind:?}")]
    WrongKind { api_version: String, kind: String },
    #[error("AdmissionReview has no request.uid")]
    MissingUid,
}

/// The webhook's answer to one review, with what was decided for logging.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    pub response: Value,
    pub uid: String,
    /// `None` when the request was for something other than creating a pod.
    pub injection: Option<Injection>,
}

/// Parses an AdmissionReview and returns the AdmissionReview to send back.
/// Every request is allowed; a pod that gets the sidecar gets a JSONPatch.
pub fn review(body: &[u8], template: &SidecarTemplate) -> Result<Reviewed, ReviewError> {
    let review: Value = serde_json::from_slice(body).map_err(ReviewError::InvalidJson)?;
    check_kind(&review)?;
    let request = &review["request"];
    let uid = request["uid"].as_str().filter(|uid| !uid.is_empty()).ok_or(ReviewError::MissingUid)?;

    let injection = is_pod_create(request).then(|| template.inject(&request["object"]));
    let response = match &injection {
        Some(Injection::Patched(operations)) => patched_response(uid, operations),
        _ => json!({ "uid": uid, "allowed": true }),
    };
    let response = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response });
    Ok(Reviewed { response, uid: uid.to_string(), injection })
}

fn check_kind(review: &Value) -> Result<(), ReviewError> {
    let api_version = review["apiVersion"].as_str().unwrap_or_default();
    let kind = review["kind"].as_str().unwrap_or_default();
    if api_version == "admission.k8s.io/v1" && kind == "AdmissionReview" {
        return Ok(());
    }
    Err(ReviewError::WrongKind { api_version: api_version.to_string(), kind: kind.to_string() })
}

/// Whether the request creates a pod: the MutatingWebhookConfiguration asks
/// only for those, but a wider rule must not patch other objects.
fn is_pod_create(request: &Value) -> bool {
    let kind = &request["kind"];
    request["operation"] == "CREATE" && kind["group"] == "" && kind["kind"] == "Pod" && request["object"].is_object()
}

fn patched_response(uid: &str, operations: &[Value]) -> Value {
    let patch = serde_json::to_vec(operations).expect("JSON values always serialize");
    json!({
        "uid": uid,
        "allowed": true,
        "patchType": "JSONPatch",
        "patch": base64::engine::general_purpose::STANDARD.encode(patch),
    })
}
