//! How a call out of Flowgrid (a model, a connector) failed.

/// A failed call: what to record, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// For the caller's record (a step's error, a problem's detail); never a secret.
    pub message: String,
    /// Whether another attempt may succeed (a timeout, a 5xx, a 429).
    pub retryable: bool,
}

impl CallError {
    /// A failure another attempt will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        CallError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure another attempt may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        CallError {
            message: message.into(),
            retryable: true,
        }
    }
}
