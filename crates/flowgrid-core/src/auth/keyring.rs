//! The built-in issuer's signing keys: Ed25519 keys kept in storage with their private half
//! encrypted (AES-256-GCM) under a key-encryption key, several published at once for rotation.
//!
//! The key-encryption key comes from `FLOWGRID_KEY_ENCRYPTION_KEY` (a Key Vault reference in
//! Azure) or, when that is unset, from `key-encryption-key.json` in the data folder, created on
//! first use. The newest key signs; a key replaced by a newer one stays in the JWKS for
//! [`RETIRED_KEY_RETENTION`] so tokens it signed keep verifying until they expire.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{ACCESS_TOKEN_TYPE, AccessClaims};
use crate::config::Config;
use crate::store::{SigningKeyStore, StoredSigningKey};
use crate::{Error, Result};

/// How long a retired key stays published: longer than the longest access-token lifetime
/// (60 min) plus leeway, so every token it signed expires first.
pub const RETIRED_KEY_RETENTION: chrono::Duration = chrono::Duration::hours(2);

const KEK_FILE: &str = "key-encryption-key.json";

/// The key that encrypts signing keys at rest.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KekFile {
    key: String,
}

impl KeyEncryptionKey {
    /// The key from `FLOWGRID_KEY_ENCRYPTION_KEY`, or else the data folder's (created on first use).
    pub fn from_config(config: &Config) -> Result<Self> {
        match &config.key_encryption_key {
            Some(secret) => Self::from_bytes(secret.expose()),
            None => Self::load_or_create(&config.data_dir),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Config("the key-encryption key must be 32 bytes".into()))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let id = hex(&digest.as_ref()[..8]);
        Ok(KeyEncryptionKey { bytes, id })
    }

    fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEK_FILE);
        let bad = || Error::Config(format!("{}: not a key-encryption key file", path.display()));
        let contents = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| Error::Internal("no randomness".into()))?;
                let json = serde_json::to_vec(&KekFile {
                    key: STANDARD.encode(key),
                })
                .map_err(|e| Error::Internal(e.to_string()))?;
                write_new_private(data_dir, &path, &json)?;
                std::fs::read(&path).map_err(|e| io_error(&path, e))?
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let file: KekFile = serde_json::from_slice(&contents).map_err(|_| bad())?;
        let bytes = STANDARD.decode(file.key).map_err(|_| bad())?;
        Self::from_bytes(&bytes)
    }

    /// A fingerprint naming this key (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> Result<RandomizedNonceKey> {
        RandomizedNonceKey::new(&AES_256_GCM, &self.bytes)
            .map_err(|_| Error::Internal("bad AES key".into()))
    }

    fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<String> {
        let mut data = plain.to_vec();
        let nonce = self
            .aead()?
            .seal_in_place_append_tag(Aad::from(aad), &mut data)
            .map_err(|_| Error::Internal("encrypting a signing key failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&data);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let bad = || Error::Config("a stored signing key cannot be decrypted".into());
        let raw = STANDARD.decode(sealed).map_err(|_| bad())?;
        if raw.len() < 12 {
            return Err(bad());
        }
        let (nonce, rest) = raw.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut data = rest.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

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
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
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
    let bad = |problem: &str| crate::config::setting_error(setting, problem);
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
    let db = crate::store::sqlite::Sqlite::open_blocking(&config.sqlite_path())?;
    db.run_blocking(|conn| {
        let keys = crate::store::sqlite::list_signing_keys(conn)?;
        if let Some(stored) = current(&keys) {
            return SigningKey::decrypt(stored, &kek);
        }
        let (key, stored) = SigningKey::generate(&kek, Utc::now())?;
        match crate::store::sqlite::insert_signing_key(conn, &stored) {
            Ok(()) => Ok(key),
            Err(e) => Err(e),
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` only if it does not exist yet (another process may race us: then
/// theirs wins), readable by the owner only.
pub(crate) fn write_new_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tmp = tmp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{}: {e}", path.display()))
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
