//! Seams the apps share for calling out of Flowgrid: the outbound guard (SSRF rules, timeouts,
//! capped bodies), credential encryption under the key-encryption key, the LLM provider trait
//! with the offline provider (`llm`), and the integration connector trait (`connector`).

pub mod connector;
pub mod crypto;
mod error;
pub mod integrations;
pub mod llm;
pub mod otel;
pub mod outbound;

pub use error::CallError;
