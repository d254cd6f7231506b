//! The one error enum of Flowgrid and its rendering as RFC 9457 `application/problem+json`.
//!
//! Every failure a client can see is one of these variants. Each variant's doc names the HTTP
//! status it becomes. 5xx bodies never carry internal text. The HTTP kit (`flowgrid-http`) turns
//! an error into a response with [`Error::problem`]; this crate knows no HTTP framework, so the
//! status is a plain number here.

use serde::Serialize;

/// `Result` with Flowgrid's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A validation failure on one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path of the field in the request (`definition.instructions`, `steps[2].id`).
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
    /// The same place as an RFC 6901 JSON Pointer into the request body (`/input/tags/0`), when
    /// the error comes from a JSON Schema check (see the `schema` module): unambiguous where a
    /// member name contains `.` or `[`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For an error in an agent's step: the step's `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// For an error in a template or expression: its 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// For a template that uses a variable that does not exist: the variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
}

impl FieldError {
    /// A field error at `field` saying `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            pointer: None,
            step: None,
            line: None,
            variable: None,
        }
    }

    /// The same error, in the step `id`.
    #[must_use]
    pub fn in_step(mut self, id: impl Into<String>) -> Self {
        self.step = Some(id.into());
        self
    }

    /// The same error, also located by the JSON Pointer `pointer`.
    #[must_use]
    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

/// Every failure Flowgrid reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request cannot be read (malformed JSON, bad id, bad query parameter).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 422: the request was read but its content is invalid; one entry per field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 401: no token, or a token that fails verification. The text is logged, never returned.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 401: a login, refresh or one-time token exchange failed. The same body whatever was
    /// wrong (unknown email, wrong password, used token), so nothing can be learnt from it.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),
    /// 403: the caller is authenticated but their role does not allow the action.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: no such resource for this tenant (also for other tenants' resources).
    #[error("not found")]
    NotFound,
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the change conflicts with existing state (duplicate name, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 412: `If-Match` did not match the current ETag.
    #[error("precondition failed")]
    PreconditionFailed,
    /// 413: the request body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge { limit_bytes: usize },
    /// 415: the request body is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 429: too many requests; retry after the given number of seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: a dependency (storage, blobs, queue) is unreachable. The text is logged, never returned.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500 (never reaches a client in practice): a missing or malformed setting, reported at
    /// start-up with the variable's name.
    #[error("configuration: {0}")]
    Config(String),
    /// 500: a bug or an unexpected failure. The text is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status code of this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Validation(_) => 422,
            Error::Unauthorized(_) | Error::InvalidCredentials(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound => 404,
            Error::MethodNotAllowed => 405,
            Error::Conflict(_) => 409,
            Error::PreconditionFailed => 412,
            Error::PayloadTooLarge { .. } => 413,
            Error::UnsupportedMediaType => 415,
            Error::TooManyRequests { .. } => 429,
            Error::Unavailable(_) => 503,
            Error::Config(_) | Error::Internal(_) => 500,
        }
    }

    /// The reason phrase of [`Error::status_code`], the problem's `title`.
    pub fn title(&self) -> &'static str {
        match self.status_code() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            412 => "Precondition Failed",
            413 => "Payload Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Entity",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }

    /// The stable problem `type` slug; the full type is `urn:flowgrid:problem:<slug>`.
    pub fn slug(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad-request",
            Error::Validation(_) => "validation",
            Error::Unauthorized(_) => "unauthorized",
            Error::InvalidCredentials(_) => "invalid-credentials",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound => "not-found",
            Error::MethodNotAllowed => "method-not-allowed",
            Error::Conflict(_) => "conflict",
            Error::PreconditionFailed => "precondition-failed",
            Error::PayloadTooLarge { .. } => "payload-too-large",
            Error::UnsupportedMediaType => "unsupported-media-type",
            Error::TooManyRequests { .. } => "too-many-requests",
            Error::Unavailable(_) => "unavailable",
            Error::Config(_) | Error::Internal(_) => "internal",
        }
    }

    /// What the client is told. Never internal text for 401 and 5xx.
    fn public_detail(&self) -> String {
        match self {
            Error::BadRequest(d) | Error::Conflict(d) | Error::Forbidden(d) => d.clone(),
            Error::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid", errors.len()),
            },
            Error::Unauthorized(_) => "A valid bearer token is required.".into(),
            Error::InvalidCredentials(_) => "The credentials are not valid.".into(),
            Error::NotFound => "No such resource.".into(),
            Error::MethodNotAllowed => "This route does not accept that method.".into(),
            Error::PreconditionFailed => {
                "The resource has changed since it was read (If-Match does not match its ETag)."
                    .into()
            }
            Error::PayloadTooLarge { limit_bytes } => {
                format!("The request body is larger than the limit of {limit_bytes} bytes.")
            }
            Error::UnsupportedMediaType => "The request body must be application/json.".into(),
            Error::TooManyRequests { retry_after_secs } => {
                format!("Too many requests; retry after {retry_after_secs} s.")
            }
            Error::Unavailable(_) => "A dependency is unavailable; retry later.".into(),
            Error::Config(_) | Error::Internal(_) => "An unexpected error occurred.".into(),
        }
    }

    /// The RFC 9457 body for this error, for the request with `correlation_id`.
    pub fn problem(&self, correlation_id: Option<String>) -> Problem {
        Problem {
            type_: format!("urn:flowgrid:problem:{}", self.slug()),
            title: self.title().to_owned(),
            status: self.status_code(),
            detail: self.public_detail(),
            correlation_id,
            errors: match self {
                Error::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
        }
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Stable problem type URI (`urn:flowgrid:problem:<slug>`).
    #[serde(rename = "type")]
    pub type_: String,
    /// The status code's reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A human explanation of this occurrence.
    pub detail: String,
    /// The request's correlation id, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Field errors, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}
