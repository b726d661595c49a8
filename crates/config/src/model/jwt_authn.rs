//! Settings of the JWT authentication filter (`envoy.filters.http.jwt_authn`),
//! with each provider's JWKS already parsed into key material.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::RouteMatch;

/// `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JwtAuthn {
    /// Providers sorted by name; requirements refer to them by index.
    pub providers: Vec<JwtProvider>,
    /// `rules`, in order: the first whose match fits the request decides.
    pub rules: Vec<JwtRule>,
    /// `requirement_map`, which `requirement_name` in a rule or route refers to.
    pub requirement_map: std::collections::HashMap<String, Arc<JwtRequirement>>,
    /// Headers the filter writes from verified tokens (payload and claims),
    /// which it removes from every request so a client cannot forge them.
    pub written_headers: Vec<HeaderName>,
}

/// One entry of `providers`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    pub name: String,
    /// The `iss` a token must carry; empty accepts any issuer.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any audience.
    pub audiences: Vec<String>,
    /// The keys of `local_jwks`.
    pub keys: Vec<Jwk>,
    /// Places to look for the token, in order.
    pub token_sources: Vec<TokenSource>,
    /// Keeps the token's header on the upstream request; false removes it.
    pub forward: bool,
    /// Header set to the token's base64url payload.
    pub forward_payload_header: Option<HeaderName>,
    /// Claims copied to upstream request headers.
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Tolerance when checking `exp` and `nbf`; default 60 s.
    pub clock_skew: Duration,
}

/// A place in the request where a provider looks for the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header, with a prefix (such as `Bearer `) that must precede the token.
    Header { name: HeaderName, value_prefix: String },
    /// A query parameter, by name.
    Param(String),
}

/// `claim_to_headers` entry: a claim (a dotted path for nested objects) and
/// the header it is copied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToHeader {
    pub claim_name: String,
    pub header_name: HeaderName,
}

/// One key of a JSON Web Key Set, decoded from base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's `alg`, when the JWKS sets it; a token must then use it.
    pub alg: Option<String>,
    pub key: JwkKey,
}

/// The public key material of a JWK, by `kty`.
#[derive(Clone, PartialEq, Eq)]
pub enum JwkKey {
    /// `kty: RSA`: big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// `kty: EC`: the uncompressed point (`0x04 || x || y`).
    Ec { curve: EcCurve, point: Vec<u8> },
    /// `kty: OKP`, `crv: Ed25519`: the 32-byte public key.
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kty = match &self.key {
            JwkKey::Rsa { .. } => "RSA",
            JwkKey::Ec { curve: EcCurve::P256, .. } => "EC P-256",
            JwkKey::Ec { curve: EcCurve::P384, .. } => "EC P-384",
            JwkKey::Ed25519(_) => "OKP Ed25519",
        };
        f.debug_struct("Jwk").field("kid", &self.kid).field("alg", &self.alg).field("kty", &kty).finish()
    }
}

/// `rules` entry: requests matching `matcher` must meet `requirement`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtRule {
    pub matcher: RouteMatch,
    /// `None` when the rule sets no requirement: matching requests pass.
    pub requirement: Option<Arc<JwtRequirement>>,
}

/// `JwtRequirement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRequirement {
    /// `provider_name`: a valid token of this provider (an index into
    /// `JwtAuthn::providers`).
    Provider(usize),
    /// `requires_any`: any one of the requirements.
    Any(Vec<JwtRequirement>),
    /// `allow_missing`: passes without a token, but a token present must be
    /// valid for one of the providers.
    AllowMissing,
    /// `allow_missing_or_failed`: always passes; a valid token still has its
    /// effects (claims to headers, payload header).
    AllowMissingOrFailed,
}

/// `PerRouteConfig` in a route's or virtual host's `typed_per_filter_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPerRoute {
    /// `disabled: true`: no JWT is required.
    Disabled,
    /// `requirement_name`: the filter's `requirement_map` entry to apply,
    /// in place of the rules.
    RequirementName(String),
}
