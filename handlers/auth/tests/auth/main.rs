//! The Auth app's integration tests, one binary: login and its throttles (`login`), sessions and
//! refresh-token rotation (`sessions`), token verification and the issuer (`tokens`), external
//! OIDC issuers (`external_issuer`), user management (`users`), and the real executables spawned
//! as the host spawns them (`process`).

mod common;
mod external_issuer;
mod login;
mod process;
mod sessions;
mod tokens;
mod users;
