//! The per-app deployment manifest (`infra/apps.json`, which the Bicep loads) as the
//! `function.json` files of a `functions/` folder imply it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The apps of a `functions/` folder: its subfolders' names, sorted.
pub fn app_names(functions: &Path) -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(functions)
        .unwrap_or_else(|e| panic!("{}: {e}", functions.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| {
            p.file_name()
                .expect("a folder name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    apps.sort();
    apps
}

fn string_field<'v>(binding: &'v Value, field: &str, file: &str) -> &'v str {
    binding[field]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: a {} binding without `{field}`", binding["type"]))
}

/// The manifest as the `<app>/<function>/function.json` files under `functions` imply it:
/// per app its Service Bus connections and the entities it sends to and receives from, and its
/// `triggers`: the functions with a timer or Service Bus trigger (those the idle colour of a
/// blue/green pair runs disabled, docs/deploy.md); the queues and topics (with their subscriptions); one gateway operation per HTTP function and
/// method, sorted by app, function and method. Each app's `secrets` and `settings` are taken
/// from `current` (the manifest as it is), since no function definition names them.
///
/// Panics, naming the file (relative to the folder holding `functions`), on a definition the
/// deployment cannot serve: a binding type it does not deploy yet, a Service Bus binding
/// without its connection or entity, an HTTP trigger without `methods`, a route with an
/// optional parameter.
pub fn expected_manifest(functions: &Path, current: &Value) -> Value {
    let base = functions.parent().unwrap_or(functions);
    let mut apps = Vec::new();
    let mut operations = Vec::new();
    let mut queues = BTreeSet::new();
    let mut topics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in app_names(functions) {
        let mut connections = BTreeSet::new();
        let mut sends = BTreeSet::new();
        let mut receives = BTreeSet::new();
        let mut triggers = BTreeSet::new();
        let app_dir = functions.join(&app);
        let mut functions: Vec<PathBuf> = std::fs::read_dir(&app_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", app_dir.display()))
            .map(|e| e.expect("a readable directory entry").path())
            .filter(|p| p.join("function.json").is_file())
            .collect();
        functions.sort();
        for function_dir in functions {
            let function = function_dir
                .file_name()
                .expect("a folder name")
                .to_string_lossy()
                .into_owned();
            let path = function_dir.join("function.json");
            let file = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            let definition: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let bindings = definition["bindings"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: no bindings array"));
            for binding in bindings {
                match binding["type"].as_str().unwrap_or_default() {
                    "httpTrigger" => {
                        let route = binding["route"].as_str().unwrap_or(&function);
                        let (template, parameters) = url_template(route);
                        let methods = binding["methods"].as_array().unwrap_or_else(|| {
                            panic!(
                                "{file}: an httpTrigger without `methods` (the gateway needs them)"
                            )
                        });
                        for method in methods {
                            let method = method.as_str().unwrap_or_default().to_uppercase();
                            operations.push(json!({
                                "app": app, "function": function, "method": method,
                                "urlTemplate": template, "parameters": parameters,
                            }));
                        }
                    }
                    "http" => {}
                    "timerTrigger" => {
                        triggers.insert(function.clone());
                    }
                    kind @ ("serviceBusTrigger" | "serviceBus") => {
                        connections.insert(string_field(binding, "connection", &file).to_owned());
                        let trigger = kind == "serviceBusTrigger";
                        if trigger {
                            triggers.insert(function.clone());
                        }
                        let entity = if let Some(queue) = binding["queueName"].as_str() {
                            queues.insert(queue.to_owned());
                            queue.to_owned()
                        } else {
                            let topic = string_field(binding, "topicName", &file);
                            let subscriptions = topics.entry(topic.to_owned()).or_default();
                            if trigger {
                                let subscription = string_field(binding, "subscriptionName", &file);
                                subscriptions.insert(subscription.to_owned());
                                format!("{topic}/{subscription}")
                            } else {
                                topic.to_owned()
                            }
                        };
                        if trigger {
                            receives.insert(entity);
                        } else {
                            sends.insert(entity);
                        }
                    }
                    other => panic!(
                        "{file}: binding type {other:?} is not deployed by infra/ yet: add what it \
                         needs to the Bicep and to this check"
                    ),
                }
            }
        }
        // Hand-kept: which settings of the app come from Key Vault, and the app's own settings.
        let kept = |field: &str| {
            current["apps"]
                .as_array()
                .and_then(|apps| apps.iter().find(|a| a["name"] == app.as_str()))
                .and_then(|a| a.get(field).cloned())
                .unwrap_or_else(|| json!({}))
        };
        apps.push(json!({
            "name": app,
            "serviceBusConnections": connections,
            "sends": sends,
            "receives": receives,
            "secrets": kept("secrets"),
            "settings": kept("settings"),
            "triggers": triggers,
        }));
    }
    operations.sort_by_key(|o| {
        (
            o["app"].to_string(),
            o["function"].to_string(),
            o["method"].to_string(),
        )
    });
    let topics: Vec<Value> = topics
        .into_iter()
        .map(|(name, subscriptions)| json!({ "name": name, "subscriptions": subscriptions }))
        .collect();
    json!({ "apps": apps, "queues": queues, "topics": topics, "operations": operations })
}

/// An ASP.NET route template as an API Management URL template, with its parameters:
/// `agents/{id}/versions/{version:int}` → `/agents/{id}/versions/{version}`, `[id, version]`.
///
/// Panics on an unclosed `{` and on optional parameters (`{id?}`), which API Management cannot
/// express.
pub fn url_template(route: &str) -> (String, Vec<String>) {
    let mut template = String::from("/");
    let mut parameters = Vec::new();
    let mut rest = route.trim_start_matches('/');
    while let Some(open) = rest.find('{') {
        template.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or_else(|| panic!("route {route:?}: unclosed `{{`"));
        let inner = &rest[open + 1..close];
        let (wildcard, inner) = match inner.strip_prefix('*') {
            Some(inner) => ("*", inner),
            None => ("", inner),
        };
        let name: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !inner[name.len()..].ends_with('?'),
            "route {route:?}: optional parameters have no API Management equivalent"
        );
        template.push_str(&format!("{{{wildcard}{name}}}"));
        parameters.push(name);
        rest = &rest[close + 1..];
    }
    template.push_str(rest);
    (template, parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `functions/` folder in a temporary folder, with `write(app, function, bindings)`.
    struct Functions {
        dir: tempfile::TempDir,
    }

    impl Functions {
        fn new() -> Functions {
            let dir = tempfile::tempdir().expect("a temporary folder");
            std::fs::create_dir_all(dir.path().join("functions")).expect("functions/");
            Functions { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("functions")
        }

        fn write(&self, app: &str, function: &str, bindings: Value) {
            let folder = self.path().join(app).join(function);
            std::fs::create_dir_all(&folder).expect("a function folder");
            std::fs::write(
                folder.join("function.json"),
                json!({ "bindings": bindings }).to_string(),
            )
            .expect("function.json written");
        }

        fn panic_of(&self) -> String {
            let functions = self.path();
            let panic = std::panic::catch_unwind(|| expected_manifest(&functions, &json!({})))
                .expect_err("the manifest is refused");
            panic.downcast_ref::<String>().cloned().unwrap_or_default()
        }
    }

    #[test]
    fn service_bus_bindings_become_entities_connections_and_roles_in_the_manifest() {
        let functions = Functions::new();
        functions.write(
            "execution",
            "RunJob",
            json!([
                { "type": "serviceBusTrigger", "direction": "in", "name": "msg",
                  "queueName": "executions", "connection": "ServiceBusConnection" },
                { "type": "serviceBus", "direction": "out", "name": "events",
                  "topicName": "platform-events", "connection": "ServiceBusConnection" }
            ]),
        );
        functions.write(
            "execution",
            "OnAgentCompiled",
            json!([{ "type": "serviceBusTrigger", "direction": "in", "name": "msg",
                     "topicName": "agent-compiled", "subscriptionName": "execution",
                     "connection": "ServiceBusConnection" }]),
        );
        functions.write(
            "execution",
            "Schedules",
            json!([{ "type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *" }]),
        );
        functions.write(
            "execution",
            "CancelJob",
            json!([
                { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous",
                  "methods": ["post"], "route": "execute/cancel/{jobId:guid}" },
                { "type": "http", "direction": "out", "name": "res" }
            ]),
        );
        let manifest = expected_manifest(&functions.path(), &json!({}));
        assert_eq!(
            manifest,
            json!({
                "apps": [{
                    "name": "execution",
                    "serviceBusConnections": ["ServiceBusConnection"],
                    "sends": ["platform-events"],
                    "receives": ["agent-compiled/execution", "executions"],
                    "secrets": {},
                    "settings": {},
                    "triggers": ["OnAgentCompiled", "RunJob", "Schedules"],
                }],
                "queues": ["executions"],
                "topics": [
                    { "name": "agent-compiled", "subscriptions": ["execution"] },
                    { "name": "platform-events", "subscriptions": [] },
                ],
                "operations": [{
                    "app": "execution", "function": "CancelJob", "method": "POST",
                    "urlTemplate": "/execute/cancel/{jobId}", "parameters": ["jobId"],
                }],
            })
        );
    }

    #[test]
    fn operations_are_sorted_and_secrets_and_settings_are_kept() {
        let functions = Functions::new();
        let http = |methods: Value, route: Value| {
            json!([{ "type": "httpTrigger", "direction": "in", "name": "req",
                     "methods": methods, "route": route }])
        };
        functions.write("b", "Get", http(json!(["get", "delete"]), json!("b/{id}")));
        functions.write("a", "Health", http(json!(["get"]), Value::Null));
        let current = json!({ "apps": [
            { "name": "b", "secrets": { "KEY": "key" }, "settings": { "B_LIMIT": "4" } },
        ]});
        let manifest = expected_manifest(&functions.path(), &current);
        let names: Vec<&str> = manifest["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .filter_map(|a| a["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(manifest["apps"][0]["settings"], json!({}));
        assert_eq!(manifest["apps"][1]["secrets"], json!({ "KEY": "key" }));
        assert_eq!(manifest["apps"][1]["settings"], json!({ "B_LIMIT": "4" }));
        let operations: Vec<String> = manifest["operations"]
            .as_array()
            .expect("operations")
            .iter()
            .map(|o| format!("{} {} {}", o["app"], o["method"], o["urlTemplate"]))
            .collect();
        assert_eq!(
            operations,
            [
                r#""a" "GET" "/Health""#,
                r#""b" "DELETE" "/b/{id}""#,
                r#""b" "GET" "/b/{id}""#,
            ],
            "without a route the function's name is its route"
        );
    }

    #[test]
    fn bindings_the_deployment_cannot_serve_are_refused_naming_the_file() {
        let unknown = Functions::new();
        unknown.write(
            "agents",
            "OnBlob",
            json!([{ "type": "blobTrigger", "direction": "in", "name": "b", "path": "x/{name}" }]),
        );
        let message = unknown.panic_of();
        assert!(
            message.contains("functions/agents/OnBlob/function.json")
                && message.contains("\"blobTrigger\" is not deployed"),
            "{message}"
        );

        let no_connection = Functions::new();
        no_connection.write(
            "execution",
            "RunJob",
            json!([{ "type": "serviceBusTrigger", "direction": "in", "name": "m", "queueName": "q" }]),
        );
        assert!(no_connection.panic_of().contains("without `connection`"));

        let no_methods = Functions::new();
        no_methods.write(
            "agents",
            "List",
            json!([{ "type": "httpTrigger", "direction": "in", "name": "req" }]),
        );
        assert!(no_methods.panic_of().contains("without `methods`"));
    }

    #[test]
    fn routes_become_api_management_url_templates() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("agents", "/agents", &[]),
            ("/agents/{id}", "/agents/{id}", &["id"]),
            (
                "agents/{id}/versions/{version:int}",
                "/agents/{id}/versions/{version}",
                &["id", "version"],
            ),
            ("files/{*path}", "/files/{*path}", &["path"]),
            (
                "execute/cancel/{jobId:guid}",
                "/execute/cancel/{jobId}",
                &["jobId"],
            ),
        ];
        for (route, template, parameters) in cases {
            let (got, names) = url_template(route);
            assert_eq!(&got, template, "{route}");
            assert_eq!(names, *parameters, "{route}");
        }
    }

    #[test]
    fn optional_and_unclosed_route_parameters_are_refused() {
        for route in ["agents/{id?}", "agents/{id:int?}", "agents/{id"] {
            assert!(
                std::panic::catch_unwind(|| url_template(route)).is_err(),
                "{route} was accepted"
            );
        }
    }
}
