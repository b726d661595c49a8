//! Parsing of a JSON Web Key Set (RFC 7517) into the public keys Legate can
//! verify with: RSA, EC P-256 and P-384, and Ed25519.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

use crate::model::{EcCurve, Jwk, JwkKey};

/// base64url, with or without padding, as JWKS publishers differ.
const BASE64URL: GeneralPurpose =
    GeneralPurpose::new(&URL_SAFE, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// The reason a JWKS was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the \"keys\" array is missing")]
    NoKeysArray,
    #[error("the \"keys\" array is empty")]
    Empty,
    #[error("keys[{index}]: {reason}")]
    Key { index: usize, reason: String },
}

/// Parses the JWKS text into keys, rejecting any key Legate cannot use so
/// that a typo does not silently leave a provider without its key.
pub(crate) fn parse(text: &str) -> Result<Vec<Jwk>, JwksError> {
    let document: Value = serde_json::from_str(text)?;
    let Some(keys) = document.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::NoKeysArray);
    };
    if keys.is_empty() {
        return Err(JwksError::Empty);
    }
    keys.iter().enumerate().map(|(index, key)| jwk(key).map_err(|reason| JwksError::Key { index, reason })).collect()
}

fn jwk(value: &Value) -> Result<Jwk, String> {
    let Some(fields) = value.as_object() else {
        return Err("a key must be a JSON object".to_string());
    };
    let key = match text_field(fields, "kty")? {
        "RSA" => JwkKey::Rsa { n: bytes_field(fields, "n")?, e: bytes_field(fields, "e")? },
        "EC" => ec_key(fields)?,
        "OKP" => {
            let curve = text_field(fields, "crv")?;
            if curve != "Ed25519" {
                return Err(format!("crv {curve:?} is not supported for kty OKP; Legate reads Ed25519"));
            }
            JwkKey::Ed25519(sized_bytes_field(fields, "x", 32)?)
        }
        other => return Err(format!("kty {other:?} is not supported; Legate reads RSA, EC and OKP")),
    };
    let optional = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(Jwk { kid: optional("kid"), alg: optional("alg"), key })
}

fn ec_key(fields: &Map<String, Value>) -> Result<JwkKey, String> {
    let (curve, length) = match text_field(fields, "crv")? {
        "P-256" => (EcCurve::P256, 32),
        "P-384" => (EcCurve::P384, 48),
        other => return Err(format!("crv {other:?} is not supported for kty EC; Legate reads P-256 and P-384")),
    };
    let mut point = Vec::with_capacity(1 + 2 * length);
    point.push(0x04);
    point.extend(sized_bytes_field(fields, "x", length)?);
    point.extend(sized_bytes_field(fields, "y", length)?);
    Ok(JwkKey::Ec { curve, point })
}

fn text_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    fields.get(name).and_then(Value::as_str).ok_or_else(|| format!("{name:?} is missing or not a string"))
}

fn bytes_field(fields: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let bytes = BASE64URL.decode(text_field(fields, name)?).map_err(|error| format!("{name:?} is not valid base64url: {error}"))?;
    if bytes.is_empty() {
        return Err(format!("{name:?} is empty"));
    }
    Ok(bytes)
}

fn sized_bytes_field(fields: &Map<String, Value>, name: &str, length: usize) -> Result<Vec<u8>, String> {
    let bytes = bytes_field(fields, name)?;
    if bytes.len() != length {
        return Err(format!("{name:?} must be {length} bytes, not {}", bytes.len()));
    }
    Ok(bytes)
}
