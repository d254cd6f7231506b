//! External OpenID Connect issuers: discovery and JWKS from a local test server, fetched once at
//! start-up, refreshed on an unknown kid at most once a minute, never otherwise on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowgrid_http::auth::{Role, TokenVerifier};
use flowgrid_testkit::eventually;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common;
use crate::common::AuthApp;

const AUDIENCE: &str = "api://flowgrid";

struct EcKey {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl EcKey {
    fn new(kid: &str) -> EcKey {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("test setup");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
            .expect("test setup");
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        EcKey {
            kid: kid.into(),
            pkcs8: doc.as_ref().to_vec(),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .expect("test setup")
    }
}

/// A local identity provider: discovery + JWKS, counting every request.
struct Provider {
    issuer: String,
    keys: Arc<std::sync::Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let issuer = format!(
            "http://{}/tenant-1/v2.0",
            listener.local_addr().expect("test setup")
        );
        let keys: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (doc_issuer, doc_hits, jwks_keys, jwks_hits) =
            (issuer.clone(), hits.clone(), keys.clone(), hits.clone());
        let app = axum::Router::new()
            .route(
                "/tenant-1/v2.0/.well-known/openid-configuration",
                get(move || {
                    doc_hits.fetch_add(1, Ordering::SeqCst);
                    let issuer = doc_issuer.clone();
                    async move {
                        axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}))
                    }
                }),
            )
            .route(
                "/tenant-1/v2.0/keys",
                get(move || {
                    jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let keys = jwks_keys.lock().expect("test setup").clone();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { issuer, keys, hits }
    }

    fn publish(&self, key: &EcKey) {
        self.keys.lock().expect("test setup").push(key.jwk.clone());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn settings(&self) -> String {
        json!([{ "issuer": self.issuer, "audience": AUDIENCE, "tenantClaim": "org", "rolesClaim": "groups" }]).to_string()
    }

    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": "entra-user-1", "org": "contoso",
            "groups": ["admin", "unrelated-group"], "iat": now, "nbf": now, "exp": now + 600,
        })
    }
}

fn settings(provider: &Provider) -> Vec<(&'static str, String)> {
    vec![
        ("FLOWGRID_OIDC_ISSUERS", provider.settings()),
        ("FLOWGRID_OIDC_ALLOW_HTTP", "true".into()),
    ]
}

#[tokio::test]
async fn an_external_issuers_token_is_accepted_by_the_agents_app_with_tenant_and_roles_from_the_named_claims()
 {
    let provider = Provider::start().await;
    let key = EcKey::new("ext-1");
    provider.publish(&key);
    let s = settings(&provider);
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = AuthApp::with(&pairs, common::LOOSE, common::LOOSE).await;
    // Both apps fetch discovery + JWKS once at start-up, off the request path.
    assert!(
        eventually(Duration::from_secs(5), || async { provider.hits() >= 4 })
            .await
            .is_some()
    );
    let settled = provider.hits();
    let token = key.sign(&provider.claims());
    let reply = app.agents.get("/api/agents", &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let validated = app
        .auth
        .post_json("/api/auth/validate", "", json!({"token": token}))
        .await;
    assert_eq!(validated.status, StatusCode::OK, "{}", validated.text);
    assert_eq!(validated.body["claims"]["tid"], "contoso");
    assert_eq!(
        validated.body["claims"]["roles"],
        json!(["admin", "unrelated-group"])
    );
    let me = app.auth.get("/api/auth/user", &token).await;
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["tenantId"], "contoso");
    for _ in 0..5 {
        app.agents.get("/api/agents", &token).await;
    }
    assert_eq!(provider.hits(), settled, "known keys never cause a fetch");
}

#[tokio::test]
async fn a_new_kid_is_fetched_at_once_and_only_a_kid_still_unknown_is_throttled_for_a_minute() {
    let provider = Provider::start().await;
    let first = EcKey::new("ext-1");
    provider.publish(&first);
    let s = settings(&provider);
    let dir = flowgrid_testkit::DataDir::new();
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = dir.config(&pairs);
    // Built outside a runtime: no start-up fetch, so the first token's kid is unknown.
    let verifier = std::thread::spawn(move || TokenVerifier::from_config(&config))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(provider.hits(), 0);
    let claims = verifier
        .authenticate(&first.sign(&provider.claims()))
        .await
        .unwrap();
    assert_eq!(claims.into_caller().unwrap().role, Some(Role::Admin));
    assert_eq!(provider.hits(), 2, "one discovery and one JWKS fetch");
    // A key the provider publishes now (a rotation) is fetched with its first token (after the
    // least gap between two fetches), once for all the concurrent requests that carry it.
    let second = EcKey::new("ext-2");
    provider.publish(&second);
    let token = second.sign(&provider.claims());
    let (a, b, c) = tokio::join!(
        verifier.authenticate(&token),
        verifier.authenticate(&token),
        verifier.authenticate(&token)
    );
    assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
    assert_eq!(provider.hits(), 4, "one more discovery and JWKS fetch");
    // A kid the provider does not publish is fetched for once, then refused without fetching.
    let unknown = EcKey::new("ext-never");
    for _ in 0..10 {
        assert!(
            verifier
                .authenticate(&unknown.sign(&provider.claims()))
                .await
                .is_err()
        );
    }
    assert_eq!(provider.hits(), 6, "the unknown kid is looked for once");
    assert!(
        verifier
            .authenticate(&first.sign(&provider.claims()))
            .await
            .is_ok()
    );
    assert_eq!(
        flowgrid_http::auth::OIDC_REFRESH_INTERVAL,
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn external_id_tokens_wrong_audiences_and_missing_tenants_are_refused() {
    let provider = Provider::start().await;
    let key = EcKey::new("ext-1");
    provider.publish(&key);
    let s = settings(&provider);
    let dir = flowgrid_testkit::DataDir::new();
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let verifier = TokenVerifier::from_config(&dir.config(&pairs)).unwrap();
    assert!(
        verifier
            .authenticate(&key.sign(&provider.claims()))
            .await
            .is_ok()
    );
    let mut id_token = provider.claims();
    id_token["nonce"] = json!("n-0S6_WzA2Mj");
    assert!(verifier.authenticate(&key.sign(&id_token)).await.is_err());
    let mut other_aud = provider.claims();
    other_aud["aud"] = json!("some-client-id");
    assert!(verifier.authenticate(&key.sign(&other_aud)).await.is_err());
    let mut no_tenant = provider.claims();
    no_tenant.as_object_mut().unwrap().remove("org");
    assert!(verifier.authenticate(&key.sign(&no_tenant)).await.is_err());
    let mut other_issuer = provider.claims();
    other_issuer["iss"] = json!("https://login.example.com/other/v2.0");
    assert!(
        verifier
            .authenticate(&key.sign(&other_issuer))
            .await
            .is_err()
    );
}

#[test]
fn plain_http_issuers_need_the_explicit_allow_setting() {
    let dir = flowgrid_testkit::DataDir::new();
    let issuers = json!([{ "issuer": "http://127.0.0.1:9/x", "audience": "a" }]).to_string();
    let config = dir.config(&[("FLOWGRID_OIDC_ISSUERS", issuers.as_str())]);
    let err = TokenVerifier::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("FLOWGRID_OIDC_ISSUERS"), "{err}");
}

/// Signs `claims` as RS256 with `key` (what Entra ID uses), by hand.
fn rs256(key: &aws_lc_rs::rsa::KeyPair, kid: &str, claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn rs256_tokens_of_an_external_issuer_verify_and_hmac_with_its_modulus_does_not() {
    let provider = Provider::start().await;
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let parts = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    provider.keys.lock().expect("keys").push(json!({
        "kty": "RSA", "use": "sig", "kid": "rsa-1",
        "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e),
    }));
    let s = settings(&provider);
    let dir = flowgrid_testkit::DataDir::new();
    let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let verifier = TokenVerifier::from_config(&dir.config(&pairs)).unwrap();
    let claims = verifier
        .authenticate(&rs256(&rsa, "rsa-1", &provider.claims()))
        .await
        .expect("an RS256 token verifies");
    assert_eq!(claims.tid, "contoso");
    // HS256 keyed with the public modulus, under the RSA key's kid: refused.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    header.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &provider.claims(),
        &EncodingKey::from_secret(&parts.n),
    )
    .unwrap();
    assert!(verifier.authenticate(&forged).await.is_err());
}
