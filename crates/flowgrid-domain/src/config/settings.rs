//! Every variable `Config::from_env` reads, with its default and meaning: one list that the
//! docs point at, the infra checks compare with the deployed settings, and a test holds to what
//! the code reads.

/// A setting a process reads from its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// What applies when it is unset.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// Every setting of the shared library: what [`Config::from_env`] reads, and `FLOWGRID_LOG`
/// ([`crate::telemetry::init`]) and `FUNCTIONS_CUSTOMHANDLER_PORT`
/// ([`crate::http::bind_address`]). An app's own settings are in that app's `SETTINGS`.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "FLOWGRID_DATA_DIR",
        default: ".flowgrid",
        meaning: "folder for the embedded database and the local development signing key",
    },
    Setting {
        name: "FLOWGRID_STORE",
        default: "sqlite",
        meaning: "storage backend: `sqlite` (embedded, in the data folder) or `cosmos`",
    },
    Setting {
        name: "COSMOS_ENDPOINT",
        default: "(required with `cosmos`)",
        meaning: "the account endpoint, `https://<account>.documents.azure.com:443/` (`http://127.0.0.1:<port>/` for the emulator)",
    },
    Setting {
        name: "COSMOS_KEY",
        default: "(unset)",
        meaning: "the account key; unset: managed identity",
    },
    Setting {
        name: "COSMOS_DATABASE",
        default: "flowgrid",
        meaning: "the database",
    },
    Setting {
        name: "COSMOS_CREATE_CONTAINERS",
        default: "true",
        meaning: "create the database and containers when missing (`false` for accounts where the app may not)",
    },
    Setting {
        name: "AZURE_CLIENT_ID",
        default: "(unset)",
        meaning: "client id of the user-assigned managed identity for Cosmos and Blob Storage; unset: the system-assigned one",
    },
    Setting {
        name: "FLOWGRID_BLOBS",
        default: "fs",
        meaning: "blob backend: `fs` (the `blobs` folder in the data folder) or `azure`",
    },
    Setting {
        name: "BLOB_ENDPOINT",
        default: "(required with `azure`)",
        meaning: "the Blob service endpoint, `https://<account>.blob.core.windows.net` (`http://127.0.0.1:10000/devstoreaccount1` for Azurite)",
    },
    Setting {
        name: "BLOB_ACCOUNT_KEY",
        default: "(unset)",
        meaning: "the storage account key (Shared Key); unset: managed identity",
    },
    Setting {
        name: "BLOB_CONTAINER",
        default: "flowgrid",
        meaning: "the blob container (created when missing)",
    },
    Setting {
        name: "FLOWGRID_JWT_ISSUER",
        default: "http://localhost:7071/api/auth",
        meaning: "the `iss` every access token must carry",
    },
    Setting {
        name: "FLOWGRID_JWT_AUDIENCE",
        default: "flowgrid",
        meaning: "the `aud` every access token must carry",
    },
    Setting {
        name: "FLOWGRID_JWT_JWKS",
        default: "(unset)",
        meaning: "a JWKS document (JSON) with the public keys that sign tokens; unset: the built-in issuer's keys in storage (the data folder's database locally; the first is created on first use; see docs/auth.md)",
    },
    Setting {
        name: "FLOWGRID_KEY_ENCRYPTION_KEY",
        default: "(unset)",
        meaning: "base64 of 32 random bytes: the AES-256-GCM key that encrypts the built-in issuer's signing keys in storage (a Key Vault reference in Azure); unset: `key-encryption-key.json` in the data folder, created on first use",
    },
    Setting {
        name: "FLOWGRID_ACCESS_TOKEN_TTL_SECS",
        default: "900",
        meaning: "lifetime of access tokens the Auth app issues (60–3600)",
    },
    Setting {
        name: "FLOWGRID_REVOCATION_CACHE_SECS",
        default: "5",
        meaning: "how long a handler trusts its cached answer to \"is this session revoked?\" (0–60); a revoked session fails everywhere within this many seconds",
    },
    Setting {
        name: "FLOWGRID_OIDC_ISSUERS",
        default: "(unset)",
        meaning: "JSON array of external OpenID Connect issuers whose access tokens are accepted: `[{\"issuer\",\"audience\",\"tenantClaim\",\"rolesClaim\"}]` (`tenantClaim` defaults to `tid`, `rolesClaim` to `roles`)",
    },
    Setting {
        name: "FLOWGRID_OIDC_ALLOW_HTTP",
        default: "false",
        meaning: "`true` lets external issuers use plain `http://` on loopback (tests, local identity servers); otherwise only `https://`",
    },
    Setting {
        name: "FLOWGRID_LOG",
        default: "info",
        meaning: "log filter (`tracing` env-filter syntax)",
    },
    Setting {
        name: "FUNCTIONS_CUSTOMHANDLER_PORT",
        default: "0",
        meaning: "port to serve on (set by the Functions host)",
    },
];

#[cfg(test)]
mod settings_list_tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::super::Config;
    use super::*;

    /// Settings of [`SETTINGS`] that `Config::from_lookup` does not read, and who does.
    const READ_ELSEWHERE: &[(&str, &str)] = &[
        ("FLOWGRID_LOG", "telemetry::init"),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "http::bind_address"),
    ];

    /// The names `Config::from_lookup` asks for, with every branch taken (Cosmos, Azure blobs).
    fn asked() -> BTreeSet<String> {
        let values = [
            ("FLOWGRID_STORE", "cosmos"),
            ("COSMOS_ENDPOINT", "https://acct.documents.azure.com:443/"),
            ("FLOWGRID_BLOBS", "azure"),
            ("BLOB_ENDPOINT", "https://acct.blob.core.windows.net"),
        ];
        let asked = RefCell::new(BTreeSet::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("config");
        asked.into_inner()
    }

    #[test]
    fn settings_lists_exactly_what_the_config_reads() {
        let listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(listed.len(), SETTINGS.len(), "a setting is listed twice");
        let asked = asked();
        let unlisted: Vec<&String> = asked.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "Config::from_lookup reads {unlisted:?}: add it to SETTINGS"
        );
        let elsewhere = |name: &str| READ_ELSEWHERE.iter().any(|(n, _)| *n == name);
        let unread: Vec<&String> = listed
            .iter()
            .filter(|n| !asked.contains(*n) && !elsewhere(n))
            .collect();
        assert!(
            unread.is_empty(),
            "SETTINGS lists {unread:?}, which Config::from_lookup does not read"
        );
        for (name, reader) in READ_ELSEWHERE {
            assert!(
                listed.contains(*name) && !asked.contains(*name),
                "{name} (read by {reader}) must be in SETTINGS and not read by the Config"
            );
        }
    }

    #[test]
    fn every_setting_has_a_default_and_a_meaning() {
        for s in SETTINGS {
            assert!(
                !s.name.is_empty() && !s.default.is_empty() && !s.meaning.is_empty(),
                "{s:?}"
            );
        }
    }
}
