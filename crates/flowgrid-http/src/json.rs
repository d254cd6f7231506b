//! Flowgrid's own `Json` extractor and response type: every rejection is a problem+json
//! answer with the path of the offending field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, Error, FieldError};

/// JSON request body or response. As an extractor it requires `application/json`, enforces the
/// body limit (413), answers malformed JSON with 400 and wrong types, missing or unknown fields
/// with 422 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_body(req, state).await?;
        Ok(parse(&bytes).map(Json)?)
    }
}

/// A request body type with secret fields (passwords, tokens): its rejections never echo them.
pub trait Secrets {
    /// The JSON names of the secret fields (`password`, `refreshToken`).
    const FIELDS: &'static [&'static str];
}

/// A JSON request body like [`Json`] whose error messages never echo a value: field errors on
/// [`Secrets::FIELDS`] say only "must be a string", and a malformed document is not quoted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretJson<T>(pub T);

impl<T, S> FromRequest<S> for SecretJson<T>
where
    T: DeserializeOwned + Secrets,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_body(req, state).await?;
        Ok(SecretJson(parse_secret(&bytes, T::FIELDS)?))
    }
}

/// A [`SecretJson`] body that may be absent: an empty (or all-whitespace) body reads as
/// `T::default()`, whatever its content type.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Secrets + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(Error::UnsupportedMediaType.into());
        }
        Ok(OptionalJson(parse_secret(&bytes, T::FIELDS)?))
    }
}

/// The body of a request that must be JSON: 415 for another media type, 413 over the limit.
async fn read_json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    if !is_json(req.headers()) {
        return Err(Error::UnsupportedMediaType);
    }
    read_body(req, state).await
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit_bytes: super::body_limit_bytes(),
            }
        } else {
            Error::BadRequest("The request body could not be read.".into())
        }
    })
}

/// Parses like [`parse`], with messages that never echo a value of `secret_fields` nor the
/// document's text.
pub fn parse_secret<T: DeserializeOwned>(bytes: &[u8], secret_fields: &[&str]) -> Result<T, Error> {
    parse(bytes).map_err(|e| match e {
        Error::Validation(errors) => Error::Validation(
            errors
                .into_iter()
                .map(|f| {
                    if secret_fields.iter().any(|s| f.field == *s) {
                        FieldError::new(f.field, "must be a string")
                    } else {
                        f
                    }
                })
                .collect(),
        ),
        Error::BadRequest(_) => Error::BadRequest("The request body is not valid JSON.".into()),
        other => other,
    })
}

/// Parses a JSON document into `T`, with the same error mapping as the extractor.
///
/// Strict: a struct (at any depth) is read from a JSON object only, never from an array by
/// position, so any other JSON type where an object is required is a 422 naming the field; a
/// string holding a lone UTF-16 surrogate (`"\ud800"`), which no Unicode text can hold, is a
/// 422 naming its field too.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T =
        serde_path_to_error::deserialize(crate::strict::Strict(&mut de)).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let field = if path == "." { String::new() } else { path };
            match inner.classify() {
                serde_json::error::Category::Data => Error::Validation(vec![FieldError::new(
                    field,
                    strip_position(&inner.to_string()),
                )]),
                _ if is_lone_surrogate(&inner) => Error::Validation(vec![FieldError::new(
                    field,
                    "is not valid Unicode text (a lone UTF-16 surrogate escape)",
                )]),
                _ => not_json(&inner),
            }
        })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// serde_json's errors for `\\uD800`-`\\uDFFF` escapes that do not form a pair.
fn is_lone_surrogate(e: &serde_json::Error) -> bool {
    let text = e.to_string();
    text.starts_with("lone leading surrogate") || text.starts_with("unexpected end of hex escape")
}

fn not_json(e: &serde_json::Error) -> Error {
    Error::BadRequest(format!("The request body is not valid JSON: {e}"))
}

/// serde_json appends " at line L column C"; for data errors the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => {
                ApiError(Error::Internal(format!("serializing response: {e}"))).into_response()
            }
        }
    }
}

/// A response body that is JSON already (a stored document served as it is), answered with
/// `application/json` like [`Json`], without decoding and encoding it again.
#[derive(Debug, Clone)]
pub struct RawJson(pub String);

impl IntoResponse for RawJson {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialized")]
    struct Outer {
        name: String,
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialized")]
    struct Inner {
        count: u32,
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = parse::<Outer>(b"{\"name\": ").unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    }

    #[test]
    fn a_wrong_type_names_the_nested_field() {
        let err = parse::<Outer>(br#"{"name":"a","inner":{"count":"x"}}"#).unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "inner.count");
    }

    #[test]
    fn an_unknown_field_is_rejected() {
        let err =
            parse::<Outer>(br#"{"name":"a","inner":{"count":1},"tenantId":"x"}"#).unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert!(errors[0].message.contains("tenantId"), "{errors:?}");
    }

    #[test]
    fn an_array_where_an_object_is_required_is_refused_at_any_depth() {
        let err = parse::<Inner>(br#"[1]"#).unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "");
        assert!(errors[0].message.contains("sequence"), "{errors:?}");
        let err = parse::<Outer>(br#"{"name":"a","inner":[1]}"#).unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "inner");
        for other in [&b"\"x\""[..], b"1", b"null", b"true"] {
            assert!(
                matches!(parse::<Inner>(other), Err(Error::Validation(_))),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert_eq!(
            parse::<std::collections::BTreeMap<String, Vec<u32>>>(br#"{"a":[1,2]}"#).unwrap()["a"],
            vec![1, 2]
        );
        assert_eq!(
            parse::<serde_json::Value>(b"[1]").unwrap(),
            serde_json::json!([1])
        );
    }

    #[test]
    fn a_lone_surrogate_is_a_validation_error_naming_the_field() {
        for body in [
            &br#"{"name":"\ud800","inner":{"count":1}}"#[..],
            br#"{"name":"a\ud800b","inner":{"count":1}}"#,
            br#"{"name":"\udc00","inner":{"count":1}}"#,
        ] {
            let err = parse::<Outer>(body).unwrap_err();
            let Error::Validation(errors) = err else {
                panic!("expected validation for {}", String::from_utf8_lossy(body))
            };
            assert_eq!(errors[0].field, "name");
        }
        assert!(parse::<Outer>(br#"{"name":"\ud83d\ude00","inner":{"count":1}}"#).is_ok());
    }

    #[test]
    fn trailing_garbage_is_a_bad_request() {
        let err = parse::<Inner>(br#"{"count":1} x"#).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    }
}
