//! Password hashing with argon2id, and verification that costs the same whether or not the
//! account exists.
//!
//! Parameters: OWASP's Password Storage Cheat Sheet lists equivalent argon2id settings (m=19 MiB,
//! t=2, p=1 as the minimum; more memory with fewer passes is equivalent). [`Params::PRODUCTION`]
//! is tuned so one verification takes about 100 ms on the 2-core development machine (see
//! `docs/auth.md` for the measurement). Hashes keep their parameters, so old hashes still verify
//! after a change and are re-hashed on the next login.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use flowgrid_domain::{Error, FieldError, Result};
use tokio::sync::Semaphore;

/// Shortest password accepted (OWASP ASVS 2.1.1 asks for at least 12).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Hashes running at once; each holds `m_cost` KiB of memory.
const CONCURRENT_HASHES: usize = 4;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Params {
    /// Production: 46 MiB, 2 passes, 1 lane (above OWASP's 46 MiB/t=1 row); about 100 ms here.
    pub const PRODUCTION: Params = Params {
        m_cost: 47_104,
        t_cost: 2,
        p_cost: 1,
    };

    /// Cheap parameters for tests of everything but the cost itself.
    pub const TEST: Params = Params {
        m_cost: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    fn argon2(self) -> Result<Argon2<'static>> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes and verifies passwords on blocking threads, a few at a time.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// The hash of a random password, verified when the account does not exist.
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// A hasher with `params` (computes its dummy hash once).
    pub fn new(params: Params) -> Result<Self> {
        let dummy = hash_blocking(params, &random_token(24)?)?;
        Ok(Passwords {
            params,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> Params {
        self.params
    }

    /// How many argon2 verifications this hasher has run (every login attempt runs exactly one
    /// per candidate account, real or dummy).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let _permit = self.permit().await?;
        let params = self.params;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(params, &password))
            .await
            .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches `hash`; with no hash (no such account, no password set) it
    /// verifies against the dummy hash, so the work and the time are the same, and says no.
    pub async fn verify(&self, hash: Option<&str>, password: &str) -> Result<bool> {
        let _permit = self.permit().await?;
        let real = hash.is_some();
        let phc = hash.map_or_else(|| self.dummy.to_string(), str::to_owned);
        let password = password.to_owned();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let matched = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|_| Error::Internal("a stored password hash is malformed".into()))?;
            Ok::<_, Error>(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("verifying task: {e}")))??;
        Ok(real && matched)
    }

    /// Whether `hash` was made with other parameters than the current ones.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        let param = |name: &str| parsed.params.get_decimal(name);
        parsed.algorithm.as_str() != "argon2id"
            || param("m") != Some(self.params.m_cost)
            || param("t") != Some(self.params.t_cost)
            || param("p") != Some(self.params.p_cost)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hasher closed".into()))
    }
}

fn hash_blocking(params: Params, password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Internal("no randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt: {e}")))?;
    params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Checks a new password against the policy (length only, per NIST SP 800-63B).
pub fn check_new_password(password: &str, field: &str) -> Result<()> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(Error::Validation(vec![FieldError::new(
            field,
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        )]));
    }
    Ok(())
}

/// `bytes` random bytes, base64url (no padding).
pub fn random_token(bytes: usize) -> Result<String> {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Internal("no randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 of `token`, hex: how opaque tokens are stored.
pub fn token_hash(token: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify_only_the_right_password() {
        let p = Passwords::new(Params::TEST).unwrap();
        let hash = p.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(
            p.verify(Some(&hash), "correct horse battery")
                .await
                .unwrap()
        );
        assert!(!p.verify(Some(&hash), "wrong horse battery").await.unwrap());
        assert!(!p.verify(None, "correct horse battery").await.unwrap());
        assert_eq!(p.verifications(), 3);
        assert!(!p.needs_rehash(&hash));
        assert!(
            Passwords::new(Params::PRODUCTION)
                .unwrap()
                .needs_rehash(&hash)
        );
    }

    #[test]
    fn production_parameters_meet_the_owasp_minimum_for_argon2id() {
        // OWASP: m=19 MiB with t=2, or the equivalent rows with more memory and fewer passes.
        let p = Params::PRODUCTION;
        assert!(p.m_cost >= 19 * 1024 && p.t_cost >= 2 && p.p_cost >= 1);
    }

    #[test]
    fn new_passwords_need_twelve_to_128_characters() {
        assert!(check_new_password("short", "password").is_err());
        assert!(check_new_password(&"x".repeat(129), "password").is_err());
        assert!(check_new_password("twelve chars", "password").is_ok());
    }
}
