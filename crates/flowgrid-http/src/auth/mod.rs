//! Access tokens: verification of bearer JWTs, the caller they identify, roles, and the local
//! development signing key.
//!
//! Tokens are asymmetric JWTs (EdDSA with Ed25519, or ES256) with header `typ: at+jwt` and a
//! `kid` found in the configured key set. `iss`, `aud`, `exp` and `nbf` are checked with 60 s
//! leeway. The tenant (`tid`) and roles come from the token only. Headers that point elsewhere
//! for keys (`jku`, `x5u`, an embedded `jwk`) are refused, never followed.
//!
//! The built-in issuer's keys live in storage (private halves encrypted, see [`keyring`]);
//! external OpenID Connect issuers come from settings. Tokens of a login session carry `sid`,
//! checked against the revocation denylist with a short cache (see `FLOWGRID_REVOCATION_CACHE_SECS`).

mod caller;
mod devkey;
pub mod keyring;
mod keys;
mod lazy;
mod oidc;
mod revocation;
mod verified;
mod verify;

pub use caller::Caller;
pub use devkey::{DevKey, TokenRequest};
pub use flowgrid_domain::Role;
pub use keys::{OIDC_REFRESH_INTERVAL, STORED_KEYS_REFRESH_INTERVAL};
pub use verify::{AccessClaims, TokenVerifier};

/// The JOSE `typ` of Flowgrid access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The `client_id` (RFC 9068) of tokens the built-in issuer mints at login and refresh.
pub const LOGIN_CLIENT_ID: &str = "flowgrid";
/// The `client_id` of development tokens minted by `flowgrid token` ([`DevKey::mint`]).
pub const CLI_CLIENT_ID: &str = "flowgrid-cli";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
