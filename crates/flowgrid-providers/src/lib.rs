//! Seams the apps share for calling out of Flowgrid: the outbound guard (SSRF rules, timeouts,
//! capped bodies), credential encryption under the key-encryption key, the LLM provider trait
//! with the offline provider, and the integration connector trait.

pub mod crypto;
pub mod outbound;
