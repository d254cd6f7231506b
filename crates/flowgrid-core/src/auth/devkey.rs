//! The local development signing key: an Ed25519 key kept in the data folder, created on first
//! use, so that tokens minted by `flowgrid token` verify in every handler started from the same
//! folder. In Azure, keys come from settings instead (`FLOWGRID_JWT_JWKS`).

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{ACCESS_TOKEN_TYPE, AccessClaims, Role};
use crate::{Error, Result};

const FILE_NAME: &str = "dev-signing-key.json";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    pkcs8: String,
}

/// The local development Ed25519 signing key.
pub struct DevKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Tenant id (`tid`).
    pub tenant: String,
    /// Role granted.
    pub role: Role,
    /// Subject (`sub`).
    pub user: String,
    /// Issuer (`iss`).
    pub issuer: String,
    /// Audience (`aud`).
    pub audience: String,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

impl DevKey {
    /// The key in `data_dir`, created (atomically, safe against concurrent first use by several
    /// processes) when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => return Self::decode(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        std::fs::create_dir_all(data_dir).map_err(|e| io_error(data_dir, e))?;
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::Internal("generating an Ed25519 key failed".into()))?;
        let kid = format!("dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let stored = StoredKey {
            kid,
            alg: "EdDSA".into(),
            pkcs8: STANDARD.encode(document.as_ref()),
        };
        let json =
            serde_json::to_vec_pretty(&stored).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = tmp_path(&path);
        write_private(&tmp, &json).map_err(|e| io_error(&tmp, e))?;
        // hard_link fails if another process created the key first; then theirs wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        Self::decode(&path, &bytes)
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| {
            Error::Config(format!(
                "{}: {what}; delete it to make a new key",
                path.display()
            ))
        };
        let stored: StoredKey = serde_json::from_slice(bytes).map_err(|_| bad("not a key file"))?;
        let pkcs8 = STANDARD
            .decode(&stored.pkcs8)
            .map_err(|_| bad("key is not base64"))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| bad("key is not an Ed25519 PKCS#8 key"))?;
        Ok(DevKey {
            kid: stored.kid,
            public: pair.public_key().as_ref().to_vec(),
            pkcs8,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> JwkSet {
        let doc = serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]});
        serde_json::from_value(doc).unwrap_or(JwkSet { keys: Vec::new() })
    }

    /// Signs `claims` as an access token.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }

    /// A development access token as `request` describes.
    pub fn mint(&self, request: &TokenRequest) -> Result<String> {
        let now = chrono::Utc::now().timestamp().max(0).cast_unsigned();
        self.sign(&AccessClaims {
            iss: request.issuer.clone(),
            sub: request.user.clone(),
            aud: request.audience.clone(),
            tid: request.tenant.clone(),
            roles: vec![request.role.as_str().to_owned()],
            jti: uuid::Uuid::new_v4().to_string(),
            sid: None,
            iat: now,
            nbf: now,
            exp: now + request.ttl_secs,
        })
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{}: {e}", path.display()))
}
