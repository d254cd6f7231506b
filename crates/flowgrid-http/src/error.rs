//! The HTTP face of the domain [`Error`]: an RFC 9457 `application/problem+json` response.
//!
//! Handlers return [`Result`], whose error is an [`ApiError`]; `?` on any domain result converts.
//! 5xx and 401 bodies never carry internal text: the internal detail travels to the request
//! middleware in a response extension ([`LoggedError`]) and is logged there, once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Result` of a handler: the error renders as problem+json.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A domain [`Error`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The HTTP status of a domain error.
pub fn status_of(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The internal text of an error, carried to the request middleware in response extensions
/// so that it is logged once there.
#[derive(Debug, Clone)]
pub struct LoggedError(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let mut problem = error.problem(crate::correlation::current());
        if let Error::Unauthorized(reason) = &error
            && is_development()
        {
            problem.detail = explained(&problem.detail, reason);
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status_of(&error), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &error {
            Error::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="flowgrid", error="invalid_token""#),
                );
            }
            Error::InvalidCredentials(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="flowgrid""#),
                );
            }
            Error::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
            .extensions_mut()
            .insert(LoggedError(error.to_string()));
        response
    }
}

/// Whether this process runs in development: `AZURE_FUNCTIONS_ENVIRONMENT=Development`, which
/// `flowgrid dev` sets for every handler it starts, as the Functions Core Tools do under
/// `func start`; Azure sets `Production` (the default when unset). In development a 401 says
/// why the token failed (its kid is not trusted, it has expired, ...); in production the answer
/// stays terse and the reason is only logged.
pub fn is_development() -> bool {
    static DEVELOPMENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEVELOPMENT.get_or_init(|| {
        std::env::var("AZURE_FUNCTIONS_ENVIRONMENT")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("development"))
    })
}

/// A 401's detail with the verification failure told (development only).
fn explained(detail: &str, reason: &str) -> String {
    format!("{} Development only: {reason}.", detail.trim_end())
}

/// Renders a domain [`Error`] as its problem+json response where no handler return type does
/// it (the local host's gateway answers, fallbacks).
pub trait ErrorResponse {
    /// The problem+json response of this error.
    fn into_response(self) -> Response;
}

impl ErrorResponse for Error {
    fn into_response(self) -> Response {
        ApiError(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_development_401_tells_the_reason_after_the_usual_detail() {
        let problem = Error::Unauthorized("the token has expired".into()).problem(None);
        let detail = explained(&problem.detail, "the token has expired");
        assert!(detail.starts_with(&problem.detail), "{detail}");
        assert!(
            detail.ends_with("Development only: the token has expired."),
            "{detail}"
        );
    }
}
