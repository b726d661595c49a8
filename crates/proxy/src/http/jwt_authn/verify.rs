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

/// The reason a token was rejected. The messages are Envoy's, and go into
/// the reply body.
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

    /// Rank when several providers reject: a missing token is the least
    /// specific, and an unknown issuer usually means the token belongs to another provider.
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
/// `kid` fits any token.
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

#[cfg(test)]
mod tests {
    use super::*;

    // An RSA-2048 key and tokens signed with it by `openssl dgst -sign`,
    // because ring cannot generate RSA keys. The claims are iss
    // https://issuer.example, aud api, sub carol and exp 4102444800 (the year 2100).
    const RSA_N: &str = "ysDWAE9YhfeliCsBK1gRmxD9sw7jUgnowcZnQ_XHcihCDxLTJt8ZKwFH-8gGd9mtywLz5lJMwtQUVCyJml1__joUbn_3WJ8m4jVxFYyI8gq5IPRR2Q-LuDCl2yxDZgl7z2jDxVWegvlW-1ZjLBCiaxyUuCjACxUi1G6MNZI93_uskql097LoyOhvfmEaOyp-81zsr60gc6qDToOJGBNihJGzsX_fuMFs3lMOEsLQ6hDUXMbM_wED6L9ZzAaJj47gveZmmx6kjDsQR3SGof4AXuL-N9YuVI7vAYCu6qQ3Qsgu-ElTd2fkVHDmwtNvIxTm76pm5flzw8_QWxrYpkjGfQ";
    const RS256_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjoiYXBpIiwic3ViIjoiY2Fyb2wiLCJleHAiOjQxMDI0NDQ4MDB9.MCKk1V4tq__6rA4LAGTEs1yj3qtHN_troUHlmQib8wq1g2vMQwuMnwkE3h-V0-yNPqwzWf8QEid4yFJgbmgzdOIHMRSqcrHf5xeY570l-TIexT3P00gt2Apgzr2cGkFDu9kDyole9kaHAlZ9w45YHM2UpdGs-ecL-N-Oz4gUhjNSfUg7R-yudENte-tOKhbvNTUf6oZe80yxFS_LepnxQtR2kDLbuegbiFK9uKdsFwRxxi1rD7WUkv9OWeHf6Op3EzZlyhFQBPrTpypPthXT2ty7csjLEFVR8c8434nhc3HlMrDQ_pmmn1QcJHQ6I3bTrNRWJzabNGbirmVs8cwrtg";
    const RS512_TOKEN: &str = "eyJhbGciOiJSUzUxMiIsImtpZCI6InJzYS0xIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjoiYXBpIiwic3ViIjoiY2Fyb2wiLCJleHAiOjQxMDI0NDQ4MDB9.aTqGfE_9K61kYQ5fEoJntMzhahwSuaPVUA-Y9bXYH6JeyTGem4vKHowC1S4wGTnWGw5ZPnHwwNttR-DPTvVgXGjJri4SDX2eV44rAfkl31PnmWSkC-m_Q0xmsN6whs56IS5g6P0tWgDlSwK5B3C4yUzg_f4HJsVjhSeH4u6IXqnGTugJA8PRWatQMYb9ixVd8txJ9EL4TzBlBu1hJLNeIzfdi55s449w7H_UvISeB2rcNhSeTjZ_0s9KJn3l4gGjEs4lksszz6vv5hg8OnbTyR3KzogBvNxRaEgW05F1IsgICKWg0OrQILxwEK52a5J-oy2_h_YlMFFX-ONtbANrig";

    fn rsa_provider(kid: &str, alg: Option<&str>) -> JwtProvider {
        let key = JwkKey::Rsa { n: URL_SAFE_NO_PAD.decode(RSA_N).unwrap(), e: vec![1, 0, 1] };
        JwtProvider {
            name: "rsa".into(),
            issuer: "https://issuer.example".into(),
            audiences: vec!["api".into()],
            keys: vec![Jwk { kid: Some(kid.into()), alg: alg.map(str::to_string), key }],
            token_sources: Vec::new(),
            forward: false,
            forward_payload_header: None,
            claim_to_headers: Vec::new(),
            clock_skew: std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn rsa_signatures_verify() {
        let provider = rsa_provider("rsa-1", None);
        let verified = verify(&provider, RS256_TOKEN).unwrap_or_else(|error| panic!("{error:?}"));
        assert_eq!(verified.claims["sub"], "carol");
        assert!(verify(&provider, RS512_TOKEN).is_ok(), "RS512");
    }

    #[test]
    fn tampered_payload_fails() {
        let (signed, signature) = RS256_TOKEN.rsplit_once('.').unwrap();
        let (header, _) = signed.split_once('.').unwrap();
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://issuer.example","aud":"api","sub":"mallory","exp":4102444800}"#);
        let tampered = format!("{header}.{payload}.{signature}");
        assert_eq!(verify(&rsa_provider("rsa-1", None), &tampered).err(), Some(JwtError::VerificationFail));
    }

    #[test]
    fn key_selection_by_kid_and_alg() {
        assert_eq!(verify(&rsa_provider("rsa-2", None), RS256_TOKEN).err(), Some(JwtError::KidAlgUnmatch), "other kid");
        assert_eq!(verify(&rsa_provider("rsa-1", Some("RS512")), RS256_TOKEN).err(), Some(JwtError::KidAlgUnmatch), "other alg");
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let provider = rsa_provider("rsa-1", None);
        assert_eq!(verify(&provider, "a.b").err(), Some(JwtError::BadFormat));
        assert_eq!(verify(&provider, &"a".repeat(MAX_TOKEN_BYTES + 1)).err(), Some(JwtError::BadFormat));
        let none_alg = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode("{}"));
        assert_eq!(verify(&provider, &none_alg).err(), Some(JwtError::AlgNotImplemented));
        assert_eq!(verify(&provider, "!!.e30.e30").err(), Some(JwtError::HeaderBadBase64));
    }
}
