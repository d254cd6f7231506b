//! Credential encryption under the key-encryption key (KEK): AES-256-GCM with a fresh nonce per
//! record and the record's identity as associated data, so a sealed value decrypts only as the
//! record it was made for. The built-in issuer's signing keys use it today; connection secrets
//! (Integrations) use it next. Each sealed record keeps the KEK's id ([`KeyEncryptionKey::id`]) so
//! that a rotation can tell which key opens it.
//!
//! The KEK comes from `FLOWGRID_KEY_ENCRYPTION_KEY` (a Key Vault reference in Azure) or, when that
//! is unset, from `key-encryption-key.json` in the data folder, created on first use.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowgrid_domain::config::Config;
use flowgrid_domain::{Error, Result};

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

    /// The key of 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
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

    /// Encrypts `plain`, bound to `aad` (a record's identity, so a sealed value cannot be moved
    /// to another record): base64 of a fresh 96-bit nonce, the ciphertext and the tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<String> {
        let mut data = plain.to_vec();
        let nonce = self
            .aead()?
            .seal_in_place_append_tag(Aad::from(aad), &mut data)
            .map_err(|_| Error::Internal("encrypting a secret failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&data);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`KeyEncryptionKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let bad = || {
            Error::Config("a stored secret cannot be decrypted under the key-encryption key".into())
        };
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

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` only if it does not exist yet (another process may race us: then
/// theirs wins), readable by the owner only.
pub fn write_new_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
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
    fn a_sealed_value_opens_only_with_its_key_and_its_record() {
        let sealed = kek(1).seal(b"secret", b"record-1").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(kek(1).open(&sealed, b"record-1").unwrap(), b"secret");
        assert!(kek(2).open(&sealed, b"record-1").is_err());
        assert!(kek(1).open(&sealed, b"record-2").is_err());
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let key = kek(1);
        assert_ne!(key.seal(b"x", b"r").unwrap(), key.seal(b"x", b"r").unwrap());
    }
}
