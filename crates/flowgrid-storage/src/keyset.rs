//! Keyset paging, the same on both backends: a listing query asks for one row more than the
//! page holds, in a fixed order; the page is the first `limit` rows, and when there was one
//! more, the continuation token (opaque to callers, base64 of JSON) names where the last item
//! ended so that the next query starts after it. Stable under concurrent inserts; a forged
//! token is a 400 ([`decode_token`]).
//!
//! The positions below are the tokens' contents; their field names are what tokens already
//! handed out hold, so they must not change.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use flowgrid_domain::store::{Page, decode_token, encode_token};
use flowgrid_domain::{Error, Result};

/// Newest first on SQLite: `(created_ms, id)` of the last item (agents, jobs).
#[derive(Serialize, Deserialize)]
pub(crate) struct ByCreated {
    pub(crate) c: i64,
    pub(crate) i: String,
}

/// Newest first on Cosmos: the `sortKey` of the last item (agents, jobs).
#[derive(Serialize, Deserialize)]
pub(crate) struct BySortKey {
    pub(crate) s: String,
}

/// In id order: the id of the last item (users).
#[derive(Serialize, Deserialize)]
pub(crate) struct ById {
    pub(crate) i: String,
}

/// Newest version first: the version number of the last item (an agent's history).
#[derive(Serialize, Deserialize)]
pub(crate) struct ByVersion {
    pub(crate) v: u32,
}

/// A position a continuation token can hold, checked against its own fields.
pub(crate) trait Position: Serialize + DeserializeOwned {
    /// Whether every field holds a value the API could have handed out.
    fn is_sane(&self) -> bool;
}

/// A text field of a position: an id or a sort key, 1-512 characters, no control characters.
fn sane_text(s: &str) -> bool {
    (1..=512).contains(&s.len()) && !s.chars().any(char::is_control)
}

impl Position for ByCreated {
    fn is_sane(&self) -> bool {
        sane_text(&self.i)
    }
}

impl Position for BySortKey {
    fn is_sane(&self) -> bool {
        sane_text(&self.s)
    }
}

impl Position for ById {
    fn is_sane(&self) -> bool {
        sane_text(&self.i)
    }
}

impl Position for ByVersion {
    fn is_sane(&self) -> bool {
        self.v >= 1
    }
}

/// The position a continuation token names; `None` for the first page.
///
/// A token is taken only when it is exactly what [`page`] would have handed out for the
/// position it decodes to (the same bytes once encoded again) and that position's fields are
/// sane: a forged or edited token (`1e999` for a number, an extra or reordered field, padding,
/// a number where text belongs) is a 400 like a garbled one.
pub(crate) fn after<K: Position>(continuation_token: Option<&str>) -> Result<Option<K>> {
    let Some(token) = continuation_token else {
        return Ok(None);
    };
    let position: K = decode_token(token)?;
    if !position.is_sane() || encode_token(&position) != token {
        return Err(Error::BadRequest(
            "continuationToken is not a token this API issued".into(),
        ));
    }
    Ok(Some(position))
}

/// One page from the rows of a query that asked for `limit + 1`: the first `limit` rows become
/// the items (`item`), and when there was one more, the token names the position of the last
/// of them (`key`).
pub(crate) fn page<R, T, K: Serialize>(
    mut rows: Vec<R>,
    limit: usize,
    key: impl Fn(&R) -> K,
    item: impl FnMut(R) -> Result<T>,
) -> Result<Page<T>> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let continuation_token = if more {
        rows.last().map(|last| encode_token(&key(last)))
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(item).collect::<Result<_>>()?,
        continuation_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn token(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_token_handed_out_reads_back_as_its_position() {
        let handed_out = encode_token(&ByCreated {
            c: 1_764_000_000_000,
            i: "0f8e2a9c-1111-4222-8333-444455556666".into(),
        });
        let back: ByCreated = after(Some(&handed_out)).unwrap().unwrap();
        assert_eq!(back.c, 1_764_000_000_000);
        assert!(after::<ByCreated>(None).unwrap().is_none());
    }

    #[test]
    fn a_forged_or_edited_token_is_a_bad_request() {
        for forged in [
            token(r#"{"c":1e999,"i":"x"}"#),
            token(r#"{"c":1.0,"i":"x"}"#),
            token(r#"{"c":1,"i":"x","x":1}"#),
            token(r#"{"i":"x","c":1}"#),
            token(r#"{"c":1, "i":"x"}"#),
            token(r#"{"c":1,"i":""}"#),
            token(r#"{"c":1,"i":"a\u0000b"}"#),
            token(r#"{"c":1,"i":5}"#),
            token("[1,\"x\"]"),
            "not base64!".into(),
        ] {
            let err = after::<ByCreated>(Some(&forged)).map(|_| ()).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{forged}: {err:?}");
        }
        for forged in [
            token(r#"{"v":0}"#),
            token(r#"{"v":1e999}"#),
            token(r#"{"v":-1}"#),
        ] {
            assert!(after::<ByVersion>(Some(&forged)).is_err(), "{forged}");
        }
        assert!(after::<ByVersion>(Some(&token(r#"{"v":3}"#))).is_ok());
    }
}
