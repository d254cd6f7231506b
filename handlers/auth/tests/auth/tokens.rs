//! Token rules (RFC 8725): what the shared verifier refuses, key rotation, discovery and JWKS,
//! and development tokens from the data folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowgrid_http::auth::{Role, TokenVerifier};
use flowgrid_testkit::Client;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common;
use crate::common::{AuthApp, access};

const ISS: &str = "https://issuer.test/api/auth";
const AUD: &str = "flowgrid";

struct TestKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("test setup");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("test setup");
        TestKey {
            kid: kid.into(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn jwks(&self) -> JwkSet {
        serde_json::from_value(json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public)
        }]}))
        .expect("test setup")
    }

    fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        h
    }

    fn sign(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .expect("test setup")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "u1", "tid": "acme", "roles": ["editor"],
        "jti": "j1", "iat": now(), "nbf": now(), "exp": now() + 600
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn verifier(key: &TestKey) -> TokenVerifier {
    TokenVerifier::new(&key.jwks(), ISS, AUD).expect("test setup")
}

#[test]
fn a_well_formed_token_verifies_and_names_its_tenant_and_role() {
    let key = TestKey::new("k1");
    let claims = verifier(&key)
        .verify(&key.sign(&key.header(), &claims()))
        .unwrap();
    let caller = claims.into_caller().unwrap();
    assert_eq!(caller.tenant.as_str(), "acme");
    assert_eq!(caller.role, Some(Role::Editor));
}

#[test]
fn alg_none_is_refused() {
    let key = TestKey::new("k1");
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert!(
        verifier(&key)
            .verify(&format!("{header}.{payload}."))
            .is_err()
    );
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    let key = TestKey::new("k1");
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k1".into());
    for secret in [
        key.public.clone(),
        URL_SAFE_NO_PAD.encode(&key.public).into_bytes(),
    ] {
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert!(verifier(&key).verify(&token).is_err());
    }
}

#[test]
fn a_flipped_signature_byte_or_a_tampered_payload_is_refused() {
    let key = TestKey::new("k1");
    let token = key.sign(&key.header(), &claims());
    let (rest, sig) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[0] ^= 1;
    let flipped = format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert!(verifier(&key).verify(&flipped).is_err());
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered = URL_SAFE_NO_PAD.encode(with(claims(), "tid", json!("victim")).to_string());
    parts[1] = &tampered;
    assert!(verifier(&key).verify(&parts.join(".")).is_err());
}

#[test]
fn wrong_issuer_audience_or_type_is_refused() {
    let key = TestKey::new("k1");
    let v = verifier(&key);
    assert!(
        v.verify(&key.sign(
            &key.header(),
            &with(claims(), "iss", json!("https://evil.test"))
        ))
        .is_err()
    );
    assert!(
        v.verify(&key.sign(&key.header(), &with(claims(), "aud", json!("another-api"))))
            .is_err()
    );
    for typ in [None, Some("JWT"), Some("id_token+jwt")] {
        let mut header = key.header();
        header.typ = typ.map(str::to_owned);
        assert!(v.verify(&key.sign(&header, &claims())).is_err(), "{typ:?}");
    }
}

#[test]
fn time_claims_have_sixty_seconds_of_leeway_and_no_more() {
    let key = TestKey::new("k1");
    let v = verifier(&key);
    let t = now();
    assert!(
        v.verify(&key.sign(&key.header(), &with(claims(), "exp", json!(t - 59))))
            .is_ok()
    );
    assert!(
        v.verify(&key.sign(&key.header(), &with(claims(), "exp", json!(t - 61))))
            .is_err()
    );
    assert!(
        v.verify(&key.sign(&key.header(), &with(claims(), "nbf", json!(t + 59))))
            .is_ok()
    );
    assert!(
        v.verify(&key.sign(&key.header(), &with(claims(), "nbf", json!(t + 61))))
            .is_err()
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(v.verify(&key.sign(&key.header(), &no_exp)).is_err());
}

#[test]
fn an_unknown_or_hostile_kid_is_refused() {
    let key = TestKey::new("k1");
    let other = TestKey::new("k2");
    let v = verifier(&key);
    assert!(v.verify(&other.sign(&other.header(), &claims())).is_err());
    let mut header = key.header();
    header.kid = Some("../../etc/passwd' OR 1=1".into());
    assert!(v.verify(&key.sign(&header, &claims())).is_err());
    header.kid = None;
    assert!(v.verify(&key.sign(&header, &claims())).is_err());
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_are_refused_and_never_fetched() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let key = TestKey::new("k1");
    let v = verifier(&key);
    let mut jku = key.header();
    jku.jku = Some(url.clone());
    let mut x5u = key.header();
    x5u.x5u = Some(url.clone());
    let mut jwk = key.header();
    jwk.jwk = key.jwks().keys.first().cloned();
    for header in [jku, x5u, jwk] {
        assert!(v.authenticate(&key.sign(&header, &claims())).await.is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn every_refused_token_is_a_bare_401_problem_in_an_app() {
    let app = AuthApp::new().await;
    let key = TestKey::new("k1");
    let reply = app
        .agents
        .get("/api/agents", &key.sign(&key.header(), &claims()))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["detail"], "A valid bearer token is required.");
    assert!(reply.headers.contains_key("www-authenticate"));
    assert_eq!(
        app.agents.get("/api/agents", "").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn after_key_rotation_new_tokens_use_the_new_key_and_old_tokens_stay_valid_everywhere() {
    let app = AuthApp::new().await;
    let old = access(&app.owner().await);
    // The Agents app has seen (and cached) only the first key.
    assert_eq!(
        app.agents.get("/api/agents", &old).await.status,
        StatusCode::OK
    );
    let (kid, published) =
        flowgrid_auth::admin::rotate_keys(app.auth.config(), &app.auth.state().stores)
            .await
            .unwrap();
    assert_eq!(published.len(), 2);
    let new = access(&app.owner().await);
    let header = jsonwebtoken::decode_header(&new).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_ne!(jsonwebtoken::decode_header(&old).unwrap().kid, header.kid);
    // The Agents app learns the new key on its first unknown kid; the old key still works.
    assert_eq!(
        app.agents.get("/api/agents", &new).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.agents.get("/api/agents", &old).await.status,
        StatusCode::OK
    );
    let jwks = app.auth.get("/api/auth/.well-known/jwks.json", "").await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&kid.as_str()));
    // Development tokens follow the issuer's current key too.
    let dev = app.auth.dir().token(&app.tenant, Role::Viewer);
    assert_eq!(
        jsonwebtoken::decode_header(&dev).unwrap().kid.as_deref(),
        Some(kid.as_str())
    );
}

#[tokio::test]
async fn the_discovery_document_and_jwks_describe_the_built_in_issuer() {
    let app = AuthApp::new().await;
    let doc = app
        .auth
        .get("/api/auth/.well-known/openid-configuration", "")
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["issuer"], "http://localhost:7071/api/auth");
    assert_eq!(
        doc.body["jwks_uri"],
        "http://localhost:7071/api/auth/.well-known/jwks.json"
    );
    let jwks = app.auth.get("/api/auth/.well-known/jwks.json", "").await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "private key material published");
    // The published keys verify the issuer's tokens on their own.
    let set: JwkSet = serde_json::from_value(jwks.body.clone()).unwrap();
    let v = TokenVerifier::new(&set, "http://localhost:7071/api/auth", "flowgrid").unwrap();
    assert!(v.verify(&access(&app.owner().await)).is_ok());
}

#[tokio::test]
async fn a_development_token_from_the_data_folder_works_in_both_apps() {
    let app = AuthApp::new().await;
    let token = app.auth.dir().token(&app.tenant, Role::Admin);
    assert_eq!(
        app.agents.get("/api/agents", &token).await.status,
        StatusCode::OK
    );
    let me = app.auth.get("/api/auth/user", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["external"], true);
    assert_eq!(
        app.auth.get("/api/auth/users", &token).await.status,
        StatusCode::OK
    );
}

#[test]
fn the_signing_key_is_encrypted_at_rest() {
    let dir = flowgrid_testkit::DataDir::new();
    let config = dir.config(&[]);
    let key = flowgrid_http::auth::DevKey::from_config(&config).unwrap();
    let db = std::fs::read(dir.path().join("flowgrid.db")).unwrap();
    let wal = std::fs::read(dir.path().join("flowgrid.db-wal")).unwrap_or_default();
    let stored: Vec<u8> = [db, wal].concat();
    // The PKCS#8 prefix of an Ed25519 private key never appears in the database files.
    let prefix = [
        0x30u8, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
    ];
    assert!(!stored.windows(prefix.len()).any(|w| w == prefix));
    assert!(
        stored
            .windows(key.kid().len())
            .any(|w| w == key.kid().as_bytes())
    );
    // With another key-encryption key the stored key cannot be used.
    let other = dir.config(&[(
        "FLOWGRID_KEY_ENCRYPTION_KEY",
        &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )]);
    assert!(flowgrid_http::auth::DevKey::from_config(&other).is_err());
}

#[tokio::test]
async fn keys_from_settings_sign_and_are_published_and_every_app_trusts_them_through_the_jwks_setting()
 {
    let (new, old) = (TestKey::new("vault-2"), TestKey::new("vault-1"));
    let b64 = |k: &TestKey| base64::engine::general_purpose::STANDARD.encode(&k.pkcs8);
    let private = json!([
        {"kid": new.kid, "privateKey": b64(&new)},
        {"kid": old.kid, "privateKey": b64(&old)},
    ])
    .to_string();
    let mut public = new.jwks();
    public.keys.extend(old.jwks().keys);
    let public = serde_json::to_string(&public).expect("jwks");
    let app = AuthApp::with(
        &[("FLOWGRID_JWT_JWKS", public.as_str())],
        common::LOOSE,
        common::LOOSE,
    )
    .await;
    let keys = flowgrid_auth::settings_keys(|name| {
        (name == flowgrid_auth::SIGNING_KEYS_SETTING).then(|| private.clone())
    })
    .expect("keys");
    let state = app
        .auth
        .state()
        .clone()
        .with_signing_keys(app.auth.config(), keys)
        .expect("state");
    let auth = Client::new(flowgrid_auth::router(state));
    let login = auth
        .post_json(
            "/api/auth/login",
            "",
            json!({"email": app.owner_email, "password": app.owner_password}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = access(&login.body);
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.kid.as_deref(), Some("vault-2"));
    assert_eq!(
        app.agents.get("/api/agents", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        auth.get("/api/auth/user", &token).await.status,
        StatusCode::OK
    );
    let jwks = auth.get("/api/auth/.well-known/jwks.json", "").await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(kids, ["vault-2", "vault-1"]);
    // Without the public keys in FLOWGRID_JWT_JWKS the app refuses to start.
    let bare = AuthApp::new().await;
    let keys = flowgrid_auth::settings_keys(|_| Some(private.clone())).expect("keys");
    let err = bare
        .auth
        .state()
        .clone()
        .with_signing_keys(bare.auth.config(), keys)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("FLOWGRID_JWT_JWKS"), "{err}");
    let bad = flowgrid_auth::settings_keys(|_| {
        Some(r#"[{"kid":"k","privateKey":"bm90IGEga2V5"}]"#.into())
    })
    .expect_err("not a key")
    .to_string();
    assert!(bad.contains("FLOWGRID_JWT_SIGNING_KEYS"), "{bad}");
}
