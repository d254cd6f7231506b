//! The catalog: each kind of integration with its configuration schema, its auth modes and its
//! actions with their input and output schemas. `GET /api/integrations/catalog` answers it as
//! is; connections are checked against it (config schema, auth mode, the fields an auth mode
//! needs) and actions' inputs against their input schemas.

use std::sync::OnceLock;

use flowgrid_domain::FieldError;
use flowgrid_domain::schema::CompiledSchema;
use serde_json::{Map, Value, json};

/// One auth mode of a kind.
pub struct AuthMode {
    /// Its name (`basic`, `oauth`, `token`, ...).
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Config fields it needs besides the kind's required ones.
    pub requires: &'static [&'static str],
    /// What the secret is (`None`: the mode has no secret).
    pub secret: Option<&'static str>,
}

/// One action of a kind.
pub struct Action {
    /// Its name (`create-incident`).
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Whether it creates a record upstream (made exactly once per idempotency key).
    pub creates: bool,
    /// Input schema.
    pub input: Value,
    /// Output schema.
    pub output: Value,
}

/// One kind of integration.
pub struct Kind {
    /// `servicenow`, `jira`, `github`, `http`.
    pub name: &'static str,
    /// Human title.
    pub title: &'static str,
    /// Schema of a connection's `config`.
    pub config: Value,
    /// The config field holding the base URL (checked by the outbound guard).
    pub base_url_field: &'static str,
    /// Auth modes.
    pub auth: Vec<AuthMode>,
    /// Actions.
    pub actions: Vec<Action>,
}

impl Kind {
    /// The auth mode named `name`.
    pub fn auth_mode(&self, name: &str) -> Option<&AuthMode> {
        self.auth.iter().find(|a| a.name == name)
    }

    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Checks a connection's auth mode and config: the schema, then the fields the mode needs.
    /// Field errors name `auth` or `config.<field>`.
    pub fn check(&self, auth: &str, config: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
        let Some(mode) = self.auth_mode(auth) else {
            let names: Vec<&str> = self.auth.iter().map(|a| a.name).collect();
            return Err(vec![FieldError::new(
                "auth",
                format!("must be one of {}", names.join(", ")),
            )]);
        };
        let schema = CompiledSchema::compile(&self.config)
            .map_err(|e| vec![FieldError::new("config", e.message().to_owned())])?;
        schema.validate(&Value::Object(config.clone()), "config")?;
        let missing: Vec<FieldError> = mode
            .requires
            .iter()
            .filter(|f| {
                config
                    .get(**f)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            })
            .map(|f| {
                FieldError::new(
                    format!("config.{f}"),
                    format!("is required for auth mode {auth}"),
                )
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// The catalog entry as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "title": self.title,
            "configSchema": self.config,
            "authModes": self.auth.iter().map(|a| json!({
                "name": a.name,
                "description": a.description,
                "requires": a.requires,
                "secret": a.secret,
            })).collect::<Vec<_>>(),
            "actions": self.actions.iter().map(|a| json!({
                "name": a.name,
                "description": a.description,
                "createsRecord": a.creates,
                "inputSchema": a.input,
                "outputSchema": a.output,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every kind, in catalog order.
pub fn kinds() -> &'static [Kind] {
    static KINDS: OnceLock<Vec<Kind>> = OnceLock::new();
    KINDS.get_or_init(build)
}

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    kinds().iter().find(|k| k.name == name)
}

/// The whole catalog as `GET /api/integrations/catalog` answers it.
pub fn to_json() -> Value {
    json!({"items": kinds().iter().map(Kind::to_json).collect::<Vec<_>>()})
}

fn url_field(description: &str) -> Value {
    json!({"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048, "description": description})
}

fn short(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256, "description": description})
}

fn build() -> Vec<Kind> {
    vec![servicenow(), jira(), github(), http()]
}

fn servicenow() -> Kind {
    let incident = json!({
        "type": "object",
        "properties": {
            "sysId": {"type": "string"},
            "number": {"type": "string"},
            "state": {"type": "string"},
            "shortDescription": {"type": "string"},
            "correlationId": {"type": "string"}
        },
        "required": ["sysId", "number"]
    });
    Kind {
        name: "servicenow",
        title: "ServiceNow",
        config: json!({
            "type": "object",
            "properties": {
                "instanceUrl": url_field("The instance, e.g. https://acme.service-now.com"),
                "username": short("User name (auth mode basic)"),
                "clientId": short("OAuth client id (auth mode oauth)")
            },
            "required": ["instanceUrl"],
            "additionalProperties": false
        }),
        base_url_field: "instanceUrl",
        auth: vec![
            AuthMode {
                name: "basic",
                description: "HTTP basic auth with a user's name and password",
                requires: &["username"],
                secret: Some("the user's password"),
            },
            AuthMode {
                name: "oauth",
                description: "OAuth 2.0 client credentials (oauth_token.do)",
                requires: &["clientId"],
                secret: Some("the OAuth client secret"),
            },
        ],
        actions: vec![
            Action {
                name: "create-incident",
                description: "Creates an incident (Table API), tagged with the run's key in correlation_id so that it is created once",
                creates: true,
                input: json!({
                    "type": "object",
                    "properties": {
                        "shortDescription": {"type": "string", "minLength": 1, "maxLength": 160},
                        "description": {"type": "string", "maxLength": 32000},
                        "urgency": {"enum": ["1", "2", "3"]},
                        "impact": {"enum": ["1", "2", "3"]},
                        "category": {"type": "string", "maxLength": 40},
                        "assignmentGroup": {"type": "string", "maxLength": 64},
                        "callerId": {"type": "string", "maxLength": 64}
                    },
                    "required": ["shortDescription"],
                    "additionalProperties": false
                }),
                output: incident.clone(),
            },
            Action {
                name: "get-incident",
                description: "Reads an incident by sys_id",
                creates: false,
                input: json!({
                    "type": "object",
                    "properties": {"sysId": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
                    "required": ["sysId"],
                    "additionalProperties": false
                }),
                output: incident,
            },
        ],
    }
}

fn jira() -> Kind {
    let issue = json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, "key": {"type": "string"}, "self": {"type": "string"}},
        "required": ["id", "key"]
    });
    Kind {
        name: "jira",
        title: "Jira Cloud",
        config: json!({
            "type": "object",
            "properties": {
                "baseUrl": url_field("The site, e.g. https://acme.atlassian.net"),
                "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$", "maxLength": 254, "description": "The account's email"}
            },
            "required": ["baseUrl", "email"],
            "additionalProperties": false
        }),
        base_url_field: "baseUrl",
        auth: vec![AuthMode {
            name: "api-token",
            description: "Jira Cloud basic auth: the account's email and an API token",
            requires: &["email"],
            secret: Some("the API token"),
        }],
        actions: vec![
            Action {
                name: "create-issue",
                description: "Creates an issue; the description (text or Markdown) is sent as Atlassian Document Format, and the issue carries a label made from the run's key so that it is created once",
                creates: true,
                input: json!({
                    "type": "object",
                    "properties": {
                        "projectKey": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$"},
                        "summary": {"type": "string", "minLength": 1, "maxLength": 255},
                        "issueType": {"type": "string", "minLength": 1, "maxLength": 60, "default": "Task"},
                        "description": {"type": "string", "maxLength": 32000},
                        "descriptionFormat": {"enum": ["text", "markdown"], "default": "markdown"},
                        "labels": {"type": "array", "items": {"type": "string", "pattern": "^\\S{1,255}$"}, "maxItems": 20}
                    },
                    "required": ["projectKey", "summary"],
                    "additionalProperties": false
                }),
                output: issue.clone(),
            },
            Action {
                name: "get-issue",
                description: "Reads an issue by key",
                creates: false,
                input: json!({
                    "type": "object",
                    "properties": {"key": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*-[0-9]+$"}},
                    "required": ["key"],
                    "additionalProperties": false
                }),
                output: issue,
            },
        ],
    }
}

fn github() -> Kind {
    let owner = json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,38}$"});
    let repo_name = json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"});
    Kind {
        name: "github",
        title: "GitHub",
        config: json!({
            "type": "object",
            "properties": {
                "baseUrl": url_field("The API root; https://api.github.com unless GitHub Enterprise")
            },
            "additionalProperties": false
        }),
        base_url_field: "baseUrl",
        auth: vec![AuthMode {
            name: "token",
            description: "A personal access token or a GitHub App installation token (Bearer)",
            requires: &[],
            secret: Some("the token"),
        }],
        actions: vec![
            Action {
                name: "list-repositories",
                description: "Lists repositories of the token's user, of a user or of an organisation, every page (Link headers)",
                creates: false,
                input: json!({
                    "type": "object",
                    "properties": {
                        "owner": owner,
                        "ownerType": {"enum": ["user", "org"], "default": "user"},
                        "perPage": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
                        "maxPages": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
                    },
                    "additionalProperties": false
                }),
                output: json!({
                    "type": "object",
                    "properties": {
                        "repositories": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "integer"}, "name": {"type": "string"}, "fullName": {"type": "string"},
                            "private": {"type": "boolean"}, "htmlUrl": {"type": "string"}, "defaultBranch": {"type": "string"}
                        }}},
                        "pages": {"type": "integer"}
                    },
                    "required": ["repositories", "pages"]
                }),
            },
            Action {
                name: "list-issues",
                description: "Lists a repository's issues, every page (Link headers)",
                creates: false,
                input: json!({
                    "type": "object",
                    "properties": {
                        "owner": owner, "repo": repo_name,
                        "perPage": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
                        "maxPages": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
                    },
                    "required": ["owner", "repo"],
                    "additionalProperties": false
                }),
                output: json!({
                    "type": "object",
                    "properties": {"issues": {"type": "array"}, "pages": {"type": "integer"}},
                    "required": ["issues", "pages"]
                }),
            },
            Action {
                name: "create-issue",
                description: "Creates an issue; its body carries a hidden marker made from the run's key so that it is created once",
                creates: true,
                input: json!({
                    "type": "object",
                    "properties": {
                        "owner": owner, "repo": repo_name,
                        "title": {"type": "string", "minLength": 1, "maxLength": 256},
                        "body": {"type": "string", "maxLength": 60000},
                        "labels": {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 20}
                    },
                    "required": ["owner", "repo", "title"],
                    "additionalProperties": false
                }),
                output: json!({
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "number": {"type": "integer"}, "htmlUrl": {"type": "string"}},
                    "required": ["id", "number"]
                }),
            },
        ],
    }
}

fn http() -> Kind {
    Kind {
        name: "http",
        title: "HTTP",
        config: json!({
            "type": "object",
            "properties": {
                "baseUrl": url_field("Requests go to paths under this URL"),
                "username": short("User name (auth mode basic)"),
                "headerName": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$", "description": "Header carrying the secret (auth mode header)"},
                "testPath": {"type": "string", "pattern": "^/", "maxLength": 512, "description": "Path the connection test GETs (default /)"}
            },
            "required": ["baseUrl"],
            "additionalProperties": false
        }),
        base_url_field: "baseUrl",
        auth: vec![
            AuthMode {
                name: "none",
                description: "No credentials",
                requires: &[],
                secret: None,
            },
            AuthMode {
                name: "bearer",
                description: "Authorization: Bearer <secret>",
                requires: &[],
                secret: Some("the token"),
            },
            AuthMode {
                name: "basic",
                description: "HTTP basic auth",
                requires: &["username"],
                secret: Some("the password"),
            },
            AuthMode {
                name: "header",
                description: "The secret in a header of your choice",
                requires: &["headerName"],
                secret: Some("the header's value"),
            },
        ],
        actions: vec![Action {
            name: "request",
            description: "Sends one request under the base URL with the connection's credentials; an Idempotency-Key header carries the run's key",
            creates: false,
            input: json!({
                "type": "object",
                "properties": {
                    "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "GET"},
                    "path": {"type": "string", "pattern": "^/", "maxLength": 2048},
                    "query": {"type": "object", "additionalProperties": {"type": "string"}},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
            output: json!({
                "type": "object",
                "properties": {"status": {"type": "integer"}, "body": {}},
                "required": ["status"]
            }),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_in_the_catalog_compiles() {
        for kind in kinds() {
            CompiledSchema::compile(&kind.config)
                .unwrap_or_else(|e| panic!("{}: {}", kind.name, e.message()));
            for action in &kind.actions {
                CompiledSchema::compile(&action.input)
                    .unwrap_or_else(|e| panic!("{}: {}", action.name, e.message()));
                CompiledSchema::compile(&action.output)
                    .unwrap_or_else(|e| panic!("{}: {}", action.name, e.message()));
            }
        }
    }

    #[test]
    fn a_wrong_config_names_the_field() {
        let jira = kind("jira").unwrap();
        let mut config = Map::new();
        config.insert("baseUrl".into(), json!("https://acme.atlassian.net"));
        config.insert("email".into(), json!(42));
        let errors = jira.check("api-token", &config).unwrap_err();
        assert_eq!(errors[0].field, "config.email");
        let errors = jira.check("password", &config).unwrap_err();
        assert_eq!(errors[0].field, "auth");
        let snow = kind("servicenow").unwrap();
        let mut config = Map::new();
        config.insert("instanceUrl".into(), json!("https://x.service-now.com"));
        let errors = snow.check("basic", &config).unwrap_err();
        assert_eq!(errors[0].field, "config.username");
    }
}
