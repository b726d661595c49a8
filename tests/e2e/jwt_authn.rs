//! The JWT authentication filter with local JWKS. The tests sign tokens with
//! ES256 and EdDSA keys that ring generates, and check signature, expiry and
//! audience, claims passed upstream as headers, per-route disabling,
//! `requires_any`, `allow_missing` and gRPC replies. The token must stay out
//! of the access log and the metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::support::*;

const ISSUER: &str = "https://issuer.example";
const ED_ISSUER: &str = "https://ed.example";

/// The signing keys of one test: the `ec` provider's P-256 key, a second
/// P-256 key the proxy does not know, and the `ed` provider's Ed25519 key.
struct Keys {
    rng: SystemRandom,
    ec: EcdsaKeyPair,
    unknown_ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

impl Keys {
    fn generate() -> Keys {
        let rng = SystemRandom::new();
        let ec_pair = |rng: &SystemRandom| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng).unwrap()
        };
        let ec = ec_pair(&rng);
        let unknown_ec = ec_pair(&rng);
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        Keys { rng, ec, unknown_ec, ed }
    }

    /// Renders the `ec` provider's JWKS, with the public point split into `x` and `y`.
    fn ec_jwks(&self) -> String {
        let point = self.ec.public_key().as_ref();
        let key = json!({ "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]) });
        json!({ "keys": [key] }).to_string()
    }

    fn ed_jwks(&self) -> String {
        let key = json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(self.ed.public_key().as_ref()) });
        json!({ "keys": [key] }).to_string()
    }

    fn es256(&self, key: &EcdsaKeyPair, claims: &Value) -> String {
        mint(json!({ "alg": "ES256", "typ": "JWT", "kid": "ec-1" }), claims, |signed| {
            key.sign(&self.rng, signed).unwrap().as_ref().to_vec()
        })
    }

    fn eddsa(&self, claims: &Value) -> String {
        mint(json!({ "alg": "EdDSA", "typ": "JWT" }), claims, |signed| self.ed.sign(signed).as_ref().to_vec())
    }
}

fn mint(header: Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the `ec` provider accepts: its issuer, audience `api`, valid for an hour.
fn ec_claims() -> Value {
    json!({ "iss": ISSUER, "aud": ["web", "api"], "sub": "alice", "level": 7, "exp": now() + 3600, "nbf": now() - 10 })
}

/// Builds the `http_filters` entry with providers `ec` (claims to headers,
/// the payload header, audience `api`) and `ed`. Path `/any` accepts either
/// provider, `/optional` allows no token, and every other path needs `ec`.
fn jwt_filter(keys: &Keys) -> String {
    let ec_jwks = serde_json::to_string(&keys.ec_jwks()).unwrap();
    let ed_jwks = serde_json::to_string(&keys.ed_jwks()).unwrap();
    format!(
        r#"
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                ec:
                  issuer: "{ISSUER}"
                  audiences: [api]
                  local_jwks: {{ inline_string: {ec_jwks} }}
                  forward_payload_header: x-jwt-payload
                  claim_to_headers: [{{ claim_name: sub, header_name: x-jwt-sub }}, {{ claim_name: level, header_name: x-jwt-level }}]
                ed:
                  issuer: "{ED_ISSUER}"
                  local_jwks: {{ inline_string: {ed_jwks} }}
                  claim_to_headers: [{{ claim_name: sub, header_name: x-jwt-sub }}]
              rules:
              - match: {{ prefix: /any }}
                requires: {{ requires_any: {{ requirements: [{{ provider_name: ec }}, {{ provider_name: ed }}] }} }}
              - match: {{ prefix: /optional }}
                requires: {{ allow_missing: {{}} }}
              - match: {{ prefix: / }}
                requires: {{ provider_name: ec }}
              requirement_map:
                lenient: {{ allow_missing_or_failed: {{}} }}"#
    )
}

fn get(path: &str, token: Option<&str>) -> hyper::Request<Full<Bytes>> {
    let mut request = hyper::Request::get(path).header("host", "a");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// Starts a proxy with the filter and an access log at `dir/access.log`.
/// Route `/open` turns the filter off, `/lenient` applies the `lenient`
/// requirement, and `/misnamed` names a requirement the filter lacks.
async fn start(label: &str, keys: &Keys, backend: &Upstream) -> (Proxy, std::net::SocketAddr, std::path::PathBuf) {
    let dir = temp_dir(label);
    let log = dir.join("access.log");
    let hcm = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%REQ(:PATH)% %REQ(AUTHORIZATION)% %RESPONSE_CODE%\n" }} }}"#,
        log.display()
    );
    let routes = r#"              - match: { prefix: "/open" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                    disabled: true
              - match: { prefix: "/lenient" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                    requirement_name: lenient
              - match: { prefix: "/misnamed" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                    requirement_name: absent
              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    let bootstrap = static_bootstrap(&hcm, routes, &static_cluster("backend", backend.address.port(), None));
    let proxy = Proxy::start(&with_filters(bootstrap, &jwt_filter(keys)), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    (proxy, listener, log)
}

fn header<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_passes_claims_upstream() {
    let keys = Keys::generate();
    let backend = Upstream::start("backend").await;
    let (proxy, listener, log) = start("jwt-valid", &keys, &backend).await;
    let token = keys.es256(&keys.ec, &ec_claims());

    let (status, body, headers) = http1_request(listener, get("/a", Some(&token))).await.unwrap();
    assert_eq!(status, 200, "valid token: {body}");
    assert_eq!(header(&headers, "x-seen-x-jwt-sub"), Some("alice"), "string claim");
    assert_eq!(header(&headers, "x-seen-x-jwt-level"), Some("7"), "number claim");
    let payload = header(&headers, "x-seen-x-jwt-payload").expect("payload header");
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(decoded["sub"], "alice");
    assert_eq!(header(&headers, "x-seen-authorization"), None, "the token header is removed without forward");

    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).map(|text| text.lines().count() == 1).unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(written, "one access log line:\n{text}");
    assert!(text.contains("/a REDACTED 200"), "{text}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "the token is in the access log:\n{text}");

    let metrics = proxy.scrape().await;
    assert!(!metrics.contains(signature), "the token is in the metrics");
    assert_eq!(sample(&metrics, "legate_http_jwt_authn_total{result=\"ok\"}"), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_rejected() {
    let keys = Keys::generate();
    let backend = Upstream::start("backend").await;
    let (proxy, listener, _log) = start("jwt-invalid", &keys, &backend).await;

    let (status, body, headers) = http1_request(listener, get("/a", None)).await.unwrap();
    assert_eq!(status, 401, "missing token: {body}");
    assert_eq!(body.trim(), "Jwt is missing");
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer realm=\"http://a/a\""));

    let mut expired = ec_claims();
    expired["exp"] = json!(now() - 3600);
    let (status, body, headers) = http1_request(listener, get("/b", Some(&keys.es256(&keys.ec, &expired)))).await.unwrap();
    assert_eq!(status, 401, "expired token: {body}");
    assert_eq!(body.trim(), "Jwt is expired");
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer realm=\"http://a/b\", error=\"invalid_token\""));

    let forged = keys.es256(&keys.unknown_ec, &ec_claims());
    let (status, body, _) = http1_request(listener, get("/c", Some(&forged))).await.unwrap();
    assert_eq!(status, 401, "token signed by another key: {body}");
    assert_eq!(body.trim(), "Jwt verification fails");

    let mut other_audience = ec_claims();
    other_audience["aud"] = json!("billing");
    let (status, body, _) = http1_request(listener, get("/d", Some(&keys.es256(&keys.ec, &other_audience)))).await.unwrap();
    assert_eq!(status, 403, "audience not allowed: {body}");
    assert_eq!(body.trim(), "Audiences in Jwt are not allowed");

    let mut other_issuer = ec_claims();
    other_issuer["iss"] = json!("https://elsewhere.example");
    let (status, body, _) = http1_request(listener, get("/e", Some(&keys.es256(&keys.ec, &other_issuer)))).await.unwrap();
    assert_eq!(status, 401, "issuer not configured: {body}");
    assert_eq!(body.trim(), "Jwt issuer is not configured");

    let (status, _, _) = http1_request(listener, get("/f", Some("not-a-jwt"))).await.unwrap();
    assert_eq!(status, 401, "malformed token");
    assert_eq!(backend.hits(), 0, "rejected requests reach the upstream");

    let metrics = proxy.scrape().await;
    assert_eq!(sample(&metrics, "legate_http_jwt_authn_total{result=\"missing\"}"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "legate_http_jwt_authn_total{result=\"failed\"}"), Some(5.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_and_requirements() {
    let keys = Keys::generate();
    let backend = Upstream::start("backend").await;
    let (_proxy, listener, _log) = start("jwt-requirements", &keys, &backend).await;
    let ec_token = keys.es256(&keys.ec, &ec_claims());
    let ed_token = keys.eddsa(&json!({ "iss": ED_ISSUER, "sub": "bob", "exp": now() + 60 }));

    assert_eq!(http1_request(listener, get("/open", None)).await.unwrap().0, 200, "disabled route without a token");
    let mut forged = get("/open", None);
    forged.headers_mut().insert("x-jwt-sub", hyper::header::HeaderValue::from_static("mallory"));
    let (_, _, headers) = http1_request(listener, forged).await.unwrap();
    assert_eq!(header(&headers, "x-seen-x-jwt-sub"), None, "a claim header the client sent never reaches the upstream");

    let (status, body, headers) = http1_request(listener, get("/any", Some(&ed_token))).await.unwrap();
    assert_eq!(status, 200, "requires_any with the second provider's token: {body}");
    assert_eq!(header(&headers, "x-seen-x-jwt-sub"), Some("bob"));
    assert_eq!(http1_request(listener, get("/any", Some(&ec_token))).await.unwrap().0, 200, "requires_any with the first");
    assert_eq!(http1_request(listener, get("/any", None)).await.unwrap().0, 401, "requires_any without a token");
    assert_eq!(http1_request(listener, get("/a", Some(&ed_token))).await.unwrap().0, 401, "the ed token on an ec-only path");

    assert_eq!(http1_request(listener, get("/optional", None)).await.unwrap().0, 200, "allow_missing without a token");
    let forged = keys.es256(&keys.unknown_ec, &ec_claims());
    assert_eq!(http1_request(listener, get("/optional", Some(&forged))).await.unwrap().0, 401, "allow_missing with a bad token");
    assert_eq!(http1_request(listener, get("/optional", Some(&ec_token))).await.unwrap().0, 200, "allow_missing with a good token");

    let (status, _, headers) = http1_request(listener, get("/lenient", Some(&forged))).await.unwrap();
    assert_eq!(status, 200, "allow_missing_or_failed by requirement_name with a bad token");
    assert_eq!(header(&headers, "x-seen-x-jwt-sub"), None, "no claims from a bad token");
    let (status, _, headers) = http1_request(listener, get("/lenient", Some(&ec_token))).await.unwrap();
    assert_eq!(status, 200, "allow_missing_or_failed with a good token");
    assert_eq!(header(&headers, "x-seen-x-jwt-sub"), Some("alice"), "claims from a good token");
    assert_eq!(http1_request(listener, get("/misnamed", Some(&ec_token))).await.unwrap().0, 401, "unknown requirement_name");

    let query = format!("/a?access_token={ec_token}");
    assert_eq!(http1_request(listener, get(&query, None)).await.unwrap().0, 200, "token in the default query parameter");
}

/// A gRPC call without a token gets the gRPC form of the 401: status 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_gets_unauthenticated() {
    let keys = Keys::generate();
    let backend = Upstream::start("backend").await;
    let (_proxy, listener, _log) = start("jwt-grpc", &keys, &backend).await;

    let request = hyper::Request::post("/echo.Echo/Say")
        .header("host", "a")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let (status, _, headers) = http1_request(listener, request).await.unwrap();
    assert_eq!(status, 200, "gRPC replies use HTTP 200");
    assert_eq!(header(&headers, "grpc-status"), Some("16"), "UNAUTHENTICATED");
    assert_eq!(header(&headers, "grpc-message"), Some("Jwt is missing"));
}
