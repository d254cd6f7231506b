//! A per-process cache of tokens whose signature and claims already passed verification, so a
//! client that reuses its access token (the common case) pays for the signature check once.
//!
//! The whole token string is the key, so only the exact token that was verified hits. A hit is
//! served until the token's `exp` (plus the same 60 s leeway the first check allowed) or for at
//! most [`MAX_AGE`], whichever comes first: a key withdrawn from the key set stops being honoured
//! through the cache within that time. The session denylist is checked on every request anyway.

use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AccessClaims, LEEWAY_SECS};

/// Longest time one verification is reused.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Most tokens remembered; beyond that, expired entries are dropped, then everything.
const CAPACITY: usize = 10_000;

struct Entry {
    claims: AccessClaims,
    until: Instant,
}

/// Tokens that passed verification recently.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<String, Entry, TailHash>>,
}

/// How many trailing bytes of a token are hashed.
const HASHED_TAIL: usize = 64;

/// The process's keyed SipHash over the last [`HASHED_TAIL`] bytes of a token only: the tail is
/// the signature, different for every token that verified, so hashing the whole token (most of
/// a lookup's cost) adds nothing; keys are still compared in full. Only verified tokens are
/// stored, so a caller cannot fill a bucket with tokens that share a tail.
#[derive(Default, Clone)]
struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = Tail;

    fn build_hasher(&self) -> Tail {
        Tail(self.0.build_hasher())
    }
}

struct Tail(DefaultHasher);

impl Hasher for Tail {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified recently and has not expired since.
    pub(crate) fn get(&self, token: &str) -> Option<AccessClaims> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(token)?;
        (Instant::now() < entry.until && !expired(&entry.claims)).then(|| entry.claims.clone())
    }

    /// Remembers that `token` verified to `claims`, unless it is remembered already.
    pub(crate) fn insert_if_absent(&self, token: &str, claims: &AccessClaims) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.contains_key(token) {
            return;
        }
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now < e.until && !expired(&e.claims));
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.to_owned(),
            Entry {
                claims: claims.clone(),
                until: now + MAX_AGE,
            },
        );
    }
}

fn expired(claims: &AccessClaims) -> bool {
    let now = chrono::Utc::now().timestamp().max(0).cast_unsigned();
    claims.exp.saturating_add(LEEWAY_SECS) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            tid: "t".into(),
            roles: vec![],
            jti: "j".into(),
            sid: None,
            client_id: None,
            iat: 0,
            nbf: 0,
            exp,
        }
    }

    #[test]
    fn only_the_exact_verified_token_hits() {
        let cache = VerifiedTokens::default();
        let later = chrono::Utc::now().timestamp().cast_unsigned() + 600;
        cache.insert_if_absent("a.b.c", &claims(later));
        assert_eq!(cache.get("a.b.c").map(|c| c.exp), Some(later));
        assert!(cache.get("a.b.d").is_none());
    }

    #[test]
    fn tokens_that_share_their_tail_are_told_apart() {
        let cache = VerifiedTokens::default();
        let later = chrono::Utc::now().timestamp().cast_unsigned() + 600;
        let tail = "s".repeat(HASHED_TAIL);
        let (a, b) = (format!("a.x.{tail}"), format!("b.x.{tail}"));
        cache.insert_if_absent(&a, &claims(later));
        assert_eq!(cache.get(&a).map(|c| c.exp), Some(later));
        assert!(cache.get(&b).is_none());
        cache.insert_if_absent(&b, &claims(later + 1));
        assert_eq!(cache.get(&b).map(|c| c.exp), Some(later + 1));
        assert_eq!(cache.get(&a).map(|c| c.exp), Some(later));
    }

    #[test]
    fn a_hit_does_not_extend_the_entry() {
        let cache = VerifiedTokens::default();
        let later = chrono::Utc::now().timestamp().cast_unsigned() + 600;
        cache.insert_if_absent("a.b.c", &claims(later));
        let first = cache.entries.lock().unwrap()["a.b.c"].until;
        cache.insert_if_absent("a.b.c", &claims(later));
        assert_eq!(cache.entries.lock().unwrap()["a.b.c"].until, first);
    }

    #[test]
    fn an_expired_token_is_not_served_from_the_cache() {
        let cache = VerifiedTokens::default();
        let past = chrono::Utc::now().timestamp().cast_unsigned() - LEEWAY_SECS - 1;
        cache.insert_if_absent("x.y.z", &claims(past));
        assert!(cache.get("x.y.z").is_none());
    }
}
