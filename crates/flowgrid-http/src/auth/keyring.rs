//! The built-in issuer's signing keys: Ed25519 keys kept in storage with their private half
//! encrypted (AES-256-GCM) under a key-encryption key, several published at once for rotation.
//!
//! The key-encryption key comes from `FLOWGRID_KEY_ENCRYPTION_KEY` (a Key Vault reference in
//! Azure) or, when that is unset, from `key-encryption-key.json` in the data folder, created on
//! first use. The newest key signs; a key replaced by a newer one stays in the JWKS for
//! [`RETIRED_KEY_RETENTION`] so tokens it signed keep verifying until they expire.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{ACCESS_TOKEN_TYPE, AccessClaims};
use flowgrid_domain::config::Config;
use flowgrid_domain::store::{SigningKeyStore, StoredSigningKey};
use flowgrid_domain::{Error, Result};
pub use flowgrid_providers::crypto::KeyEncryptionKey;

/// How long a retired key stays published: longer than the longest access-token lifetime
/// (60 min) plus leeway, so every token it signed expires first.
pub const RETIRED_KEY_RETENTION: chrono::Duration = chrono::Duration::hours(2);

/// A private signing key of the built-in issuer.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new Ed25519 key, and its stored form encrypted under `kek`.
    pub fn generate(
        kek: &KeyEncryptionKey,
        now: DateTime<Utc>,
    ) -> Result<(Self, StoredSigningKey)> {
        let document = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| Error::Internal("generating an Ed25519 key failed".into()))?;
        let kid = format!(
            "k{}-{}",
            now.format("%Y%m%d"),
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let key = Self::from_pkcs8(kid.clone(), document.as_ref())?;
        let stored = StoredSigningKey {
            kid: kid.clone(),
            alg: "EdDSA".into(),
            public_jwk: serde_json::to_string(&key.public_jwk_json())
                .map_err(|e| Error::Internal(e.to_string()))?,
            encrypted_private: kek.seal(document.as_ref(), kid.as_bytes())?,
            kek_id: kek.id().to_owned(),
            created_at: now,
            retired_at: None,
        };
        Ok((key, stored))
    }

    /// Decrypts a stored key.
    pub fn decrypt(stored: &StoredSigningKey, kek: &KeyEncryptionKey) -> Result<Self> {
        if stored.kek_id != kek.id() {
            return Err(Error::Config(format!(
                "signing key {} was encrypted with key-encryption key {}, but the configured one is {} \
                 (check FLOWGRID_KEY_ENCRYPTION_KEY)",
                stored.kid,
                stored.kek_id,
                kek.id()
            )));
        }
        let pkcs8 = kek.open(&stored.encrypted_private, stored.kid.as_bytes())?;
        Self::from_pkcs8(stored.kid.clone(), &pkcs8)
    }

    /// A key from its PKCS#8 document.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| Error::Config(format!("key {kid} is not an Ed25519 PKCS#8 key")))?;
        Ok(SigningKey {
            kid,
            public: pair.public_key().as_ref().to_vec(),
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn public_jwk_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        })
    }

    /// The public key as a JWKS with this key only.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: serde_json::from_value::<Jwk>(self.public_jwk_json())
                .into_iter()
                .collect(),
        }
    }

    /// Signs `claims` as an access token (`typ: at+jwt`, `kid`).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeySetting {
    kid: String,
    private_key: String,
}

/// Signing keys given in a setting named `setting`: a JSON array `[{"kid","privateKey"}]`,
/// `privateKey` being base64 of an Ed25519 PKCS#8 DER key, newest (signing) first.
pub fn parse_signing_keys(setting: &str, doc: &str) -> Result<Vec<SigningKey>> {
    let bad = |problem: &str| flowgrid_domain::config::setting_error(setting, problem);
    let entries: Vec<KeySetting> =
        serde_json::from_str(doc).map_err(|_| bad("not a JSON array of {kid, privateKey}"))?;
    if entries.is_empty() {
        return Err(bad("the array is empty"));
    }
    entries
        .into_iter()
        .map(|e| {
            let ok_kid = (1..=64).contains(&e.kid.len())
                && e.kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_kid {
                return Err(bad("a kid is 1-64 characters of A-Z a-z 0-9 - _"));
            }
            let pkcs8 = STANDARD
                .decode(e.private_key.trim())
                .map_err(|_| bad(&format!("key {}: privateKey is not base64", e.kid)))?;
            SigningKey::from_pkcs8(e.kid.clone(), &pkcs8)
                .map_err(|_| bad(&format!("key {}: not an Ed25519 PKCS#8 key", e.kid)))
        })
        .collect()
}

/// The public halves of `keys` as one JWKS.
pub fn public_jwks(keys: &[SigningKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().flat_map(|k| k.jwks().keys).collect(),
    }
}

/// The keys to publish at `now`: the unretired ones and those retired within the retention.
pub fn published_jwks(keys: &[StoredSigningKey], now: DateTime<Utc>) -> JwkSet {
    let keys = keys
        .iter()
        .filter(|k| k.retired_at.is_none_or(|r| r + RETIRED_KEY_RETENTION > now))
        .filter_map(|k| serde_json::from_str::<Jwk>(&k.public_jwk).ok())
        .collect();
    JwkSet { keys }
}

/// The key that signs now: the newest unretired one (keys are listed newest first).
fn current(keys: &[StoredSigningKey]) -> Option<&StoredSigningKey> {
    keys.iter().find(|k| k.retired_at.is_none())
}

/// The issuer's current signing key, creating the first one when storage has none.
pub async fn current_signing_key(
    store: &dyn SigningKeyStore,
    kek: &KeyEncryptionKey,
) -> Result<SigningKey> {
    let keys = store.list().await?;
    if let Some(stored) = current(&keys) {
        return SigningKey::decrypt(stored, kek);
    }
    let (key, stored) = SigningKey::generate(kek, Utc::now())?;
    store.insert(&stored).await?;
    Ok(key)
}

/// Makes a new signing key current; the previous ones stay published for
/// [`RETIRED_KEY_RETENTION`], older retired ones are deleted. Returns the new key id.
pub async fn rotate(store: &dyn SigningKeyStore, kek: &KeyEncryptionKey) -> Result<String> {
    let now = Utc::now();
    let (key, stored) = SigningKey::generate(kek, now)?;
    store.insert(&stored).await?;
    store.retire_all_except(key.kid(), now).await?;
    store
        .delete_retired_before(now - RETIRED_KEY_RETENTION)
        .await?;
    Ok(key.kid)
}

/// The current signing key of the data folder's embedded database, synchronously (the
/// `flowgrid token` command and test helpers), creating the first key when there is none.
pub fn current_signing_key_blocking(config: &Config) -> Result<SigningKey> {
    let kek = KeyEncryptionKey::from_config(config)?;
    let db = flowgrid_storage::sqlite::Sqlite::open_blocking(&config.sqlite_path())?;
    db.run_blocking(|conn| {
        let keys = flowgrid_storage::sqlite::list_signing_keys(conn)?;
        if let Some(stored) = current(&keys) {
            return Ok(SigningKey::decrypt(stored, &kek)?);
        }
        let (key, stored) = SigningKey::generate(&kek, Utc::now())?;
        flowgrid_storage::sqlite::insert_signing_key(conn, &stored)?;
        Ok(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_stored_key_decrypts_only_with_its_key_encryption_key() {
        let (key, stored) = SigningKey::generate(&kek(1), Utc::now()).unwrap();
        assert!(
            !stored
                .encrypted_private
                .contains(&STANDARD.encode(&key.pkcs8))
        );
        let back = SigningKey::decrypt(&stored, &kek(1)).unwrap();
        assert_eq!(back.public, key.public);
        assert!(SigningKey::decrypt(&stored, &kek(2)).is_err());
        let mut forged = stored.clone();
        forged.kek_id = kek(2).id().to_owned();
        assert!(SigningKey::decrypt(&forged, &kek(2)).is_err());
    }

    #[test]
    fn retired_keys_stay_published_for_the_retention_only() {
        let now = Utc::now();
        let (_, mut old) = SigningKey::generate(&kek(1), now).unwrap();
        let (_, new) = SigningKey::generate(&kek(1), now).unwrap();
        old.retired_at = Some(now - chrono::Duration::minutes(30));
        assert_eq!(
            published_jwks(&[new.clone(), old.clone()], now).keys.len(),
            2
        );
        old.retired_at = Some(now - RETIRED_KEY_RETENTION - chrono::Duration::seconds(1));
        assert_eq!(published_jwks(&[new, old], now).keys.len(), 1);
    }
}
