//! Verification of one compact JWS token against a provider: its signature
//! with the provider's keys, then `exp`, `nbf`, `iss` and `aud`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use legate_config::model::{EcCurve, Jwk, JwkKey, JwtProvider};

/// Tokens longer than this are rejected before any decoding, which bounds
/// the work an unauthenticated request can cause.
pub(super) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was rejected. The messages are Envoy's, and go into the
/// reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JwtError {
    Missing,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    AlgNotImplemented,
    PayloadBadBase64,
    PayloadBadJson,
    SignatureBadBase64,
    KidAlgUnmatch,
    VerificationFail,
    Expired,
    NotYetValid,
    UnknownIssuer,
    AudienceNotAllowed,
}

impl JwtError {
    pub(super) fn message(self) -> &'static str {
        match self {
            JwtError::Missing => "Jwt is missing",
            JwtError::BadFormat => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            JwtError::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            JwtError::HeaderBadJson => "Jwt header is an invalid JSON",
            JwtError::AlgNotImplemented => "Jwt header [alg] is not supported",
            JwtError::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            JwtError::PayloadBadJson => "Jwt payload is an invalid JSON",
            JwtError::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            JwtError::KidAlgUnmatch => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::VerificationFail => "Jwt verification fails",
            JwtError::Expired => "Jwt is expired",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
        }
    }

    /// 403 for a valid token meant for another audience, 401 otherwise, as Envoy replies.
    pub(super) fn status(self) -> StatusCode {
        match self {
            JwtError::AudienceNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// Rank when several providers reject: a missing token says least, and
    /// an unknown issuer usually means the token belongs to another provider.
    pub(super) fn rank(self) -> u8 {
        match self {
            JwtError::Missing => 0,
            JwtError::UnknownIssuer => 1,
            _ => 2,
        }
    }
}

/// A token that passed every check.
pub(super) struct Verified<'t> {
    /// The base64url payload segment, as `forward_payload_header` sends it.
    pub payload_segment: &'t str,
    pub claims: Map<String, Value>,
}

/// Verifies `token` for `provider`. The signature is checked before any
/// claim, so a forged token only ever learns that it failed verification.
pub(super) fn verify<'t>(provider: &JwtProvider, token: &'t str) -> Result<Verified<'t>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::BadFormat);
    }
    let mut segments = token.split('.');
    let (Some(header_segment), Some(payload_segment), Some(signature_segment), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(JwtError::BadFormat);
    };

    let header = decode_json(header_segment, JwtError::HeaderBadBase64, JwtError::HeaderBadJson)?;
    let Some(alg) = header.get("alg").and_then(Value::as_str) else {
        return Err(JwtError::AlgNotImplemented);
    };
    if !is_supported(alg) {
        return Err(JwtError::AlgNotImplemented);
    }
    let claims = decode_json(payload_segment, JwtError::PayloadBadBase64, JwtError::PayloadBadJson)?;
    let signature = URL_SAFE_NO_PAD.decode(signature_segment).map_err(|_| JwtError::SignatureBadBase64)?;

    let signed = &token[..header_segment.len() + 1 + payload_segment.len()];
    let kid = header.get("kid").and_then(Value::as_str);
    verify_signature(&provider.keys, alg, kid, signed.as_bytes(), &signature)?;
    check_time(&claims, provider)?;
    check_issuer(&claims, provider)?;
    check_audience(&claims, provider)?;
    Ok(Verified { payload_segment, claims })
}

fn decode_json(segment: &str, bad_base64: JwtError, bad_json: JwtError) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| bad_base64)?;
    serde_json::from_slice(&bytes).map_err(|_| bad_json)
}

fn is_supported(alg: &str) -> bool {
    matches!(alg, "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "EdDSA")
}

/// Tries each key that fits the token's `kid` and `alg`. A key without a
/// `kid` fits any token, as in Envoy.
fn verify_signature(keys: &[Jwk], alg: &str, kid: Option<&str>, signed: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    let mut candidates = keys
        .iter()
        .filter(|key| kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid)
        .filter(|key| key.alg.as_deref().is_none_or(|key_alg| key_alg == alg))
        .filter(|key| fits(alg, &key.key))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::KidAlgUnmatch);
    }
    if candidates.any(|key| verify_with(alg, &key.key, signed, signature)) {
        Ok(())
    } else {
        Err(JwtError::VerificationFail)
    }
}

fn fits(alg: &str, key: &JwkKey) -> bool {
    match key {
        JwkKey::Rsa { .. } => alg.starts_with("RS"),
        JwkKey::Ec { curve: EcCurve::P256, .. } => alg == "ES256",
        JwkKey::Ec { curve: EcCurve::P384, .. } => alg == "ES384",
        JwkKey::Ed25519(_) => alg == "EdDSA",
    }
}

fn verify_with(alg: &str, key: &JwkKey, signed: &[u8], signature: &[u8]) -> bool {
    match key {
        JwkKey::Rsa { n, e } => {
            let parameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n, e }.verify(parameters, signed, signature).is_ok()
        }
        JwkKey::Ec { curve: EcCurve::P256, point } => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, signature).is_ok()
        }
        JwkKey::Ec { curve: EcCurve::P384, point } => {
            UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(signed, signature).is_ok()
        }
        JwkKey::Ed25519(public_key) => UnparsedPublicKey::new(&signature::ED25519, public_key).verify(signed, signature).is_ok(),
    }
}

/// Checks `exp` and `nbf`, each with the provider's clock skew. A claim
/// that is present but not a number fails verification.
fn check_time(claims: &Map<String, Value>, provider: &JwtProvider) -> Result<(), JwtError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let skew = provider.clock_skew.as_secs();
    if let Some(exp) = claims.get("exp") {
        let exp = seconds(exp)?;
        if now > exp.saturating_add(skew) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = seconds(nbf)?;
        if now.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(())
}

fn seconds(value: &Value) -> Result<u64, JwtError> {
    match value {
        Value::Number(number) => {
            number.as_u64().or_else(|| number.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).ok_or(JwtError::VerificationFail)
        }
        _ => Err(JwtError::VerificationFail),
    }
}

fn check_issuer(claims: &Map<String, Value>, provider: &JwtProvider) -> Result<(), JwtError> {
    if provider.issuer.is_empty() || claims.get("iss").and_then(Value::as_str) == Some(provider.issuer.as_str()) {
        Ok(())
    } else {
        Err(JwtError::UnknownIssuer)
    }
}

/// Passes when the provider lists no audiences, or when `aud` (a string or
/// an array of strings) contains one of them.
fn check_audience(claims: &Map<String, Value>, provider: &JwtProvider) -> Result<(), JwtError> {
    if provider.audiences.is_empty() {
        return Ok(());
    }
    let allowed = |value: &Value| value.as_str().is_some_and(|aud| provider.audiences.iter().any(|allowed| allowed == aud));
    let found = match claims.get("aud") {
        Some(Value::Array(values)) => values.iter().any(allowed),
        Some(value) => allowed(value),
        None => false,
    };
    if found {
        Ok(())
    } else {
        Err(JwtError::AudienceNotAllowed)
    }
}
