//! The correlation id of the request being served, available anywhere in its task.
//!
//! Fresh ids (correlation ids, trace and span ids) come from a per-thread generator seeded once
//! from the operating system: they must be unique and unguessable enough for tracing, not secret,
//! and a system call per id (three per request) was a measurable share of the request path.

use std::cell::Cell;

use axum::http::HeaderMap;

/// The header carrying the correlation id in and out.
pub const HEADER: &str = "x-correlation-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The correlation id of the request this task serves, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Calls `f` with the current correlation id, without copying it; `None` outside a request.
pub fn with_current<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    CURRENT.try_with(|id| f(id)).ok()
}

/// Runs `f` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    CURRENT.scope(id, f).await
}

/// The caller's correlation id when it is a sane token (1–128 chars of `[A-Za-z0-9._:-]`),
/// else a fresh one. Anything else is replaced, so logs never carry caller-chosen junk.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map(str::to_owned)
        .unwrap_or_else(new_id)
}

/// A fresh correlation id: a random (version 4) UUID, hyphenated.
pub fn new_id() -> String {
    let bytes = random_u128().to_le_bytes();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
    a ^ b.rotate_left(32)
}

/// The next 64 random bits of this thread's generator (SplitMix64 over a seeded counter).
fn random_u64() -> u64 {
    STATE.with(|state| {
        let x = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

/// Whether `id` is a correlation id this kit would keep (1–128 chars of `[A-Za-z0-9._:-]`).
pub fn is_sane(id: &str) -> bool {
    is_valid(id)
}

fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A W3C `traceparent` for this request: the caller's when well-formed, else a new root.
pub fn traceparent(headers: &HeaderMap) -> String {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok())
        && is_valid_traceparent(tp)
    {
        return tp.to_owned();
    }
    // All-zero ids are invalid; a zero draw (2^-128, 2^-64) becomes 1.
    let trace = random_u128().max(1);
    let span = random_u64().max(1);
    let mut tp = String::with_capacity(55);
    tp.push_str("00-");
    push_hex(&mut tp, trace, 32);
    tp.push('-');
    push_hex(&mut tp, u128::from(span), 16);
    tp.push_str("-01");
    tp
}

/// Appends the low `digits` hex digits of `value`, lower case, most significant first.
fn push_hex(out: &mut String, value: u128, digits: u32) {
    for i in (0..digits).rev() {
        let nibble = ((value >> (4 * i)) & 0xf) as u8;
        out.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
    }
}

fn is_valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_caller_id_is_kept_and_junk_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(from_headers(&h), "abc-123");
        h.insert(HEADER, "has space".parse().unwrap());
        let generated = from_headers(&h);
        assert_ne!(generated, "has space");
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
    }

    #[test]
    fn traceparent_is_propagated_when_valid_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        assert_eq!(traceparent(&h), tp);
        h.insert("traceparent", "00-zz-11-01".parse().unwrap());
        let fresh = traceparent(&h);
        assert!(is_valid_traceparent(&fresh), "{fresh}");
    }

    #[test]
    fn fresh_ids_are_well_formed_and_do_not_repeat_across_threads() {
        let draw = || {
            (0..1000)
                .flat_map(|_| [new_id(), traceparent(&HeaderMap::new())])
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(draw).join().unwrap();
        let mine = draw();
        let mut all = std::collections::HashSet::new();
        for id in mine.iter().chain(&other) {
            assert!(all.insert(id.clone()), "{id} repeated");
            if id.starts_with("00-") {
                assert!(is_valid_traceparent(id), "{id}");
            } else {
                let uuid = uuid::Uuid::parse_str(id).unwrap();
                assert_eq!(uuid.get_version_num(), 4, "{id}");
                assert_eq!(uuid.hyphenated().to_string(), *id);
            }
        }
    }
}
