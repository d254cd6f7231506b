//! Offline checks of the Azure deployment in `infra/` (issue 7). Nothing can be deployed from a
//! test, so these read the real files on every run and check what can be checked without Azure
//! (the analysis of Bicep and function.json files is `flowgrid_testkit::bicep`, tested there):
//!
//! - every `.bicep` file parses with a real Bicep grammar (tree-sitter-bicep), and every file a
//!   Bicep file refers to (modules, imports, `loadJsonContent`/`loadTextContent`) exists;
//! - `infra/apps.json`, the per-app part of the deployment, equals what the `function.json`
//!   files under `functions/` imply: one entry per app, every Service Bus connection, queue,
//!   topic and subscription, every HTTP route of the gateway; so every app has a Function App and
//!   nothing is declared that no function uses;
//! - every setting the code reads (the `SETTINGS` lists of the shared library's config and of
//!   each app, which their unit tests hold to what the code reads) is in
//!   `local.settings.example.json` and is deployed, apart from a short list of local-only
//!   settings (keys), and nothing else is;
//! - the Cosmos containers in the Bicep are exactly the storage layer's `CONTAINERS`;
//! - no keys: no `listKeys`, local auth off everywhere, data-plane roles only;
//! - blue/green: every app is two Function Apps behind a weighted API Management pool with a
//!   circuit breaker per colour, a per-tenant choice reading the app's weight named value, and
//!   the idle colour's timer and Service Bus functions disabled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use flowgrid_domain::config::Setting;
use flowgrid_testkit::bicep::{Bicep, app_names, expected_manifest, files_under};
use serde_json::Value;

/// Settings the code reads that are deliberately not deployed, with the reason.
const LOCAL_ONLY_SETTINGS: &[(&str, &str)] = &[
    (
        "COSMOS_KEY",
        "an account key; in Azure the apps use their managed identity (AZURE_CLIENT_ID)",
    ),
    (
        "BLOB_ACCOUNT_KEY",
        "a storage key; in Azure the apps use their managed identity (AZURE_CLIENT_ID)",
    ),
    (
        "FLOWGRID_OIDC_ALLOW_HTTP",
        "plain-http issuers are for tests and local identity servers only",
    ),
    (
        "FLOWGRID_OUTBOUND_ALLOWLIST",
        "lets http steps reach plain-http and private addresses: local development and tests only",
    ),
    (
        "FUNCTIONS_WORKER_RUNTIME",
        "on Flex Consumption the runtime lives in functionAppConfig (it is set only on Elastic Premium)",
    ),
];

/// Settings the Functions platform (not Flowgrid's code) reads, which the Bicep may set.
const PLATFORM_SETTINGS: &[&str] = &[
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID",
    // OpenTelemetry's own variables: the Functions host (telemetryMode OpenTelemetry) and
    // every handler (flowgrid_providers::otel) read them; docs/observability.md.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// Settings of `flowgrid_domain::config::SETTINGS` that the Functions host sets itself, not app
/// settings.
const SET_BY_THE_HOST: &[&str] = &["FUNCTIONS_CUSTOMHANDLER_PORT"];

/// Data-plane roles (and the deployer's secrets role) the Bicep may assign; nothing that can
/// manage resources or read keys.
const ALLOWED_ROLES: &[&str] = &[
    "Storage Blob Data Owner",
    "Storage Blob Data Contributor",
    "Azure Service Bus Data Sender",
    "Azure Service Bus Data Receiver",
    "Key Vault Secrets User",
    "Key Vault Secrets Officer",
    "Monitoring Metrics Publisher",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The Bicep file at `path` (relative to the workspace).
fn bicep(path: &str) -> Bicep {
    Bicep::read(&root().join(path))
}

/// Every `.bicep` file under `infra/`.
fn bicep_files() -> Vec<PathBuf> {
    files_under(&root().join("infra"), "bicep")
}

// ---------------------------------------------------------------------------------------------
// Settings the code reads

/// The settings each app reads on top of the shared library's: its `SETTINGS`.
fn own_settings_of(app: &str) -> Vec<Setting> {
    match app {
        flowgrid_agents::APP => flowgrid_agents::SETTINGS.to_vec(),
        flowgrid_auth::APP => flowgrid_auth::SETTINGS.to_vec(),
        flowgrid_execution::APP => [
            flowgrid_execution::SETTINGS,
            flowgrid_execution::AI_SETTINGS,
            flowgrid_integrations::CONNECTOR_SETTINGS,
        ]
        .concat(),
        flowgrid_integrations::APP => flowgrid_integrations::settings(),
        flowgrid_analytics::APP => flowgrid_analytics::SETTINGS.to_vec(),
        flowgrid_design::APP => [
            flowgrid_design::SETTINGS,
            flowgrid_design::settings::AI_SETTINGS,
        ]
        .concat(),
        other => panic!(
            "functions/{other}: an app these checks do not know; add its SETTINGS to own_settings_of"
        ),
    }
}

fn names(settings: &[Setting]) -> BTreeSet<String> {
    settings.iter().map(|s| s.name.to_owned()).collect()
}

/// The names in `local.settings.example.json`.
fn local_settings() -> BTreeSet<String> {
    let doc = read_json(&root().join("local.settings.example.json"));
    doc["Values"]
        .as_object()
        .expect("local.settings.example.json has a Values object")
        .keys()
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_bicep_file_parses_with_the_bicep_grammar() {
    let files = bicep_files();
    let names: Vec<String> = files.iter().map(|f| relative(f)).collect();
    assert!(
        names.iter().any(|n| n == "infra/main.bicep") && names.len() > 1,
        "expected infra/main.bicep and its modules, found {names:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        for e in Bicep::read(file).syntax_errors() {
            problems.push(format!(
                "{}:{}:{}: {}",
                relative(file),
                e.line,
                e.column,
                e.what
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "Bicep syntax errors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_file_a_bicep_file_refers_to_exists() {
    for file in bicep_files() {
        let parsed = Bicep::read(&file);
        let dir = parsed.path().parent().expect("a file in a folder");
        for reference in parsed.referenced_files() {
            assert!(
                dir.join(&reference).is_file(),
                "{} refers to {reference}, which does not exist",
                relative(&file)
            );
        }
    }
}

#[test]
fn every_app_in_functions_has_a_function_app() {
    let apps = app_names(&root().join("functions"));
    assert!(!apps.is_empty(), "no apps under functions/");
    let manifest = read_json(&root().join("infra/apps.json"));
    let declared: Vec<String> = manifest["apps"]
        .as_array()
        .expect("infra/apps.json has an apps array")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        declared, apps,
        "infra/apps.json must list every app in functions/, in order"
    );

    // main.bicep deploys two Function Apps (blue and green) per manifest entry.
    let main = bicep("infra/main.bicep");
    assert!(
        main.referenced_files().iter().any(|f| f == "apps.json"),
        "main.bicep must load apps.json"
    );
    let looped = main.modules().into_iter().any(|m| {
        m.path == "modules/functionapp.bicep" && m.looped_over.as_deref() == Some("slots")
    });
    assert!(
        looped,
        "main.bicep must deploy modules/functionapp.bicep for each slot (app and colour)"
    );
    let slots = main.text(main.variable("slots").expect("var slots"));
    for part in [
        "range(0, 2 * length(apps))",
        "app: s / 2",
        "colour: colourNames[s % 2]",
    ] {
        assert!(
            slots.contains(part),
            "slots must be every app in both colours; {part} missing from {slots}"
        );
    }
    let app = bicep("infra/modules/functionapp.bicep");
    let types = app.resource_types();
    for ty in ["Microsoft.Web/sites", "Microsoft.Web/serverfarms"] {
        assert!(types.contains(ty), "functionapp.bicep declares no {ty}");
    }
    assert!(
        app.source().contains("name: 'custom'") && app.source().contains("version: '1.0'"),
        "the Flex runtime must be custom 1.0"
    );
}

#[test]
fn the_deployment_manifest_matches_the_function_definitions() {
    let path = root().join("infra/apps.json");
    let current = read_json(&path);
    let expected = expected_manifest(&root().join("functions"), &current);
    // API Management refuses two operations with one method and URL template (parameter names
    // aside), and operation names must be unique.
    let mut routes = BTreeMap::new();
    for op in expected["operations"].as_array().expect("operations") {
        let template = op["urlTemplate"].as_str().unwrap_or_default();
        let shape: String = template
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let key = (op["method"].to_string(), shape.to_lowercase());
        let name = format!("{}/{}", op["app"], op["function"]);
        if let Some(other) = routes.insert(key, name.clone()) {
            panic!("{name} and {other} both answer {} {template}", op["method"]);
        }
    }

    assert!(
        current == expected,
        "infra/apps.json does not match the function.json files; it should read:\n{}",
        serde_json::to_string_pretty(&expected).expect("JSON serializes")
    );

    // The Bicep turns every entry into resources: Service Bus entities and roles, connection
    // settings, gateway operations routed to the app.
    let sb = bicep("infra/modules/servicebus.bicep");
    let types = sb.resource_types();
    for ty in [
        "Microsoft.ServiceBus/namespaces/queues",
        "Microsoft.ServiceBus/namespaces/topics",
        "Microsoft.ServiceBus/namespaces/topics/subscriptions",
        "Microsoft.Authorization/roleAssignments",
    ] {
        assert!(types.contains(ty), "servicebus.bicep declares no {ty}");
    }
    let all: String = bicep_files().iter().map(|f| read(f)).collect();
    for used in [
        "manifest.queues",
        "manifest.topics",
        "manifest.operations",
        ".sends",
        ".receives",
        ".serviceBusConnections",
        ".secrets",
        ".settings",
    ] {
        assert!(
            all.contains(used),
            "the Bicep does not use {used} of apps.json"
        );
    }
    let app = bicep("infra/modules/functionapp.bicep");
    for suffix in ["__fullyQualifiedNamespace", "__credential", "__clientId"] {
        assert!(
            app.source().contains(&format!("'${{c}}{suffix}'")),
            "functionapp.bicep must set <connection>{suffix} for each Service Bus connection"
        );
    }
    let apim = bicep("infra/modules/apim.bicep");
    assert!(
        apim.resource_types()
            .contains("Microsoft.ApiManagement/service/apis/operations")
            && apim.source().contains("for op in operations"),
        "apim.bicep must declare one operation per entry of operations"
    );
}

#[test]
fn every_setting_the_code_reads_is_deployed_and_nothing_else() {
    let local = local_settings();
    let core = names(flowgrid_domain::config::SETTINGS);
    assert!(
        core.contains("FLOWGRID_STORE"),
        "flowgrid_domain::config::SETTINGS lacks FLOWGRID_STORE: {core:?}"
    );

    // local.settings.example.json lists what the shared library reads, and nothing of
    // Flowgrid's that neither it nor an app lists.
    let missing: Vec<&String> = core
        .iter()
        .filter(|n| !SET_BY_THE_HOST.contains(&n.as_str()) && !local.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "config.rs reads {missing:?}, which local.settings.example.json does not list"
    );
    // Every setting an app reads is listed too; an app's own settings (those the shared library
    // does not read) are deployed to that app through apps.json.
    let mut own: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in app_names(&root().join("functions")) {
        let reads = names(&own_settings_of(&app));
        own.insert(app, reads.difference(&core).cloned().collect());
    }
    for name in core.iter().chain(own.values().flatten()) {
        assert!(
            local.contains(name) || SET_BY_THE_HOST.contains(&name.as_str()),
            "the code reads {name}, which local.settings.example.json does not list"
        );
    }

    let undocumented: Vec<&String> = local
        .iter()
        .filter(|n| {
            ["FLOWGRID_", "COSMOS_", "BLOB_", "AZURE_"]
                .iter()
                .any(|p| n.starts_with(p))
                && !core.contains(*n)
                && !own.values().any(|o| o.contains(*n))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "local.settings.example.json lists {undocumented:?}, which neither config.rs nor an app lists in its SETTINGS"
    );

    // What the Bicep sets: the *Settings objects, and the Key Vault references of apps.json.
    let mut deployed = BTreeSet::new();
    // Connection prefixes the function.json files name: the Functions host reads them.
    let mut connections = BTreeSet::new();
    for file in ["infra/main.bicep", "infra/modules/functionapp.bicep"] {
        deployed.extend(bicep(file).declared_settings());
    }
    let manifest = read_json(&root().join("infra/apps.json"));
    for app in manifest["apps"].as_array().expect("an apps array") {
        // Service Bus connections are set identity-based by functionapp.bicep (checked in
        // the_deployment_manifest_matches_the_function_definitions).
        for connection in app["serviceBusConnections"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let connection = connection.as_str().unwrap_or_default();
            connections.insert(connection.to_owned());
            for suffix in ["fullyQualifiedNamespace", "credential", "clientId"] {
                deployed.insert(format!("{connection}__{suffix}"));
            }
        }
        let name = app["name"].as_str().unwrap_or_default();
        let reads = own.get(name).cloned().unwrap_or_default();
        let settings = app["settings"]
            .as_object()
            .expect("a settings object per app");
        for (setting, value) in settings {
            assert!(
                reads.contains(setting),
                "infra/apps.json sets {setting} for {name}, which only handlers/{name} should read: \
                 it reads none such, or the shared library reads it too (then it belongs in \
                 flowgridSettings in infra/main.bicep)"
            );
            assert!(
                value.is_string(),
                "{name}: {setting}: app settings are strings"
            );
            deployed.insert(setting.clone());
        }
        let secrets = app["secrets"]
            .as_object()
            .expect("a secrets object per app");
        for (setting, secret) in secrets {
            let secret = secret.as_str().unwrap_or_default();
            assert!(
                !secret.is_empty()
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{setting}: Key Vault secret names are letters, digits and dashes: {secret:?}"
            );
            deployed.insert(setting.clone());
        }
    }
    assert!(
        deployed.contains("FLOWGRID_STORE"),
        "no settings found in the Bicep"
    );
    for (app, reads) in &own {
        let entry = manifest["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app.as_str()))
            .expect("every app is in apps.json");
        for name in reads {
            let here = |field: &str| entry[field].get(name).is_some();
            let excused = LOCAL_ONLY_SETTINGS.iter().any(|(n, _)| n == name);
            assert!(
                here("settings") || here("secrets") || excused,
                "handlers/{app} reads {name}: add it to the app's settings (or secrets) in infra/apps.json"
            );
        }
    }

    for (name, why) in LOCAL_ONLY_SETTINGS {
        assert!(
            local.contains(*name),
            "{name} is excused from deployment ({why}) but the code no longer reads it; drop it \
             from LOCAL_ONLY_SETTINGS"
        );
    }
    for name in ["COSMOS_KEY", "BLOB_ACCOUNT_KEY", "FLOWGRID_OIDC_ALLOW_HTTP"] {
        assert!(!deployed.contains(name), "{name} must not be deployed");
    }

    let excused = |n: &str| LOCAL_ONLY_SETTINGS.iter().any(|(name, _)| *name == n);
    let undeployed: Vec<&String> = local
        .iter()
        .filter(|n| !excused(n))
        .filter(|n| {
            // A connection (AzureWebJobsStorage) is deployed identity-based, as `<name>__…`.
            !deployed.contains(*n) && !deployed.iter().any(|d| d.starts_with(&format!("{n}__")))
        })
        .collect();
    assert!(
        undeployed.is_empty(),
        "the code reads {undeployed:?}, which the Bicep does not set"
    );

    let unused: Vec<&String> = deployed
        .iter()
        .filter(|d| {
            !local.contains(*d)
                && !PLATFORM_SETTINGS.contains(&d.as_str())
                && !local
                    .iter()
                    .chain(&connections)
                    .any(|n| d.starts_with(&format!("{n}__")))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the Bicep sets {unused:?}, which neither the code nor the Functions platform reads"
    );
}

#[test]
fn every_cosmos_container_the_storage_layer_uses_is_declared() {
    use flowgrid_storage::cosmos::{CONTAINERS, PARTITION_KEY, TTL_CONTAINERS};
    let cosmos = bicep("infra/modules/cosmos.bicep");
    let list = cosmos
        .variable("containers")
        .expect("cosmos.bicep has `var containers = [...]`");
    let mut declared = BTreeSet::new();
    for entry in cosmos.objects_in(list) {
        let name = cosmos
            .property(entry, "name")
            .and_then(|v| cosmos.literal(v))
            .expect("every container has a literal name");
        let indexed = cosmos
            .property(entry, "indexedPaths")
            .map(|v| cosmos.text(v).to_owned())
            .unwrap_or_default();
        assert!(
            indexed.contains("'/tenantId/?'"),
            "container {name}: every query filters on tenantId, so it must be indexed"
        );
        let ttl = cosmos
            .property(entry, "defaultTtl")
            .map(|v| cosmos.text(v).trim().to_owned())
            .unwrap_or_default();
        let expires = TTL_CONTAINERS.contains(&name.as_str());
        assert_eq!(
            ttl,
            if expires { "-1" } else { "null" },
            "container {name}: `defaultTtl` must be -1 (TTL on, set per document) exactly for the \
             containers in TTL_CONTAINERS ({TTL_CONTAINERS:?}), and null for the others"
        );
        declared.insert(name);
    }
    let used: BTreeSet<String> = CONTAINERS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        declared, used,
        "the Cosmos containers in infra/modules/cosmos.bicep must be exactly the storage layer's \
         CONTAINERS"
    );
    let key = cosmos
        .variable("partitionKeyPath")
        .and_then(|v| cosmos.literal(v));
    assert_eq!(key.as_deref(), Some(PARTITION_KEY));
    let main = bicep("infra/main.bicep");
    assert!(
        main.source().contains("COSMOS_CREATE_CONTAINERS: 'false'"),
        "the apps hold a data-plane role only, so they must not try to create containers"
    );
}

#[test]
fn the_deployment_uses_no_keys_and_data_plane_roles_only() {
    let mut all = String::new();
    for file in bicep_files() {
        let source = read(&file);
        for forbidden in [
            "listKeys(",
            "listConnectionStrings(",
            "AccountKey=",
            "SharedAccessKey",
            "primaryMasterKey",
            "instrumentationKey",
        ] {
            assert!(
                !source.contains(forbidden),
                "{} uses {forbidden}: the deployment must use managed identities, not keys",
                relative(&file)
            );
        }
        all.push_str(&source);
    }
    for required in [
        "allowSharedKeyAccess: false",
        "disableLocalAuth: true",
        "DisableLocalAuth: true",
        "enableRbacAuthorization: true",
    ] {
        assert!(all.contains(required), "no `{required}` in the Bicep");
    }
    // Every role the Bicep assigns is one of the data-plane roles.
    let roles = bicep("infra/modules/roles.bicep");
    let ids = roles.variable("roleIds").expect("roles.bicep has roleIds");
    let names: BTreeSet<String> = roles.properties(ids).into_iter().map(|(k, _)| k).collect();
    let allowed: BTreeSet<String> = ALLOWED_ROLES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(
        names, allowed,
        "roles.bicep must hold data-plane roles only"
    );
    for file in bicep_files() {
        let parsed = Bicep::read(&file);
        for property in parsed.nodes("object_property") {
            if parsed.key(property).as_deref() == Some("roleDefinitionId") {
                let value = parsed.text(property);
                assert!(
                    value.contains("roleIds[")
                        || value.contains("sqlRoleDefinitions/${dataContributor}"),
                    "{}: a role outside roles.bicep: {value}",
                    relative(parsed.path())
                );
            }
        }
    }
}

#[test]
fn the_parameters_file_sets_only_declared_parameters_and_no_secrets() {
    let main = bicep("infra/main.bicep");
    let declared = main.parameters();
    let file = read_json(&root().join("infra/main.parameters.json"));
    let parameters = file["parameters"]
        .as_object()
        .expect("main.parameters.json has a parameters object");
    assert!(!parameters.is_empty());
    for (name, value) in parameters {
        assert!(
            declared.contains(name),
            "main.parameters.json sets {name}, which main.bicep does not declare"
        );
        assert!(
            value.get("reference").is_none(),
            "{name}: no secrets in the parameters file"
        );
        let lower = name.to_lowercase();
        assert!(
            !["key", "secret", "password"]
                .iter()
                .any(|w| lower.contains(w)),
            "{name}: no secrets in the parameters file"
        );
    }
}

#[test]
fn every_module_gets_the_parameters_it_declares_and_has_the_outputs_used() {
    let mut checked = 0;
    for file in bicep_files() {
        let parsed = Bicep::read(&file);
        let dir = file.parent().expect("a file in a folder");
        let mut outputs_of = BTreeMap::new();
        for module in parsed.modules() {
            let (symbol, path, passed) = (module.symbol, module.path, module.params);
            let module = Bicep::read(&dir.join(&path));
            let declared = module.parameters();
            for name in &passed {
                assert!(
                    declared.contains(name),
                    "{}: module {symbol} passes {name}, which {path} does not declare",
                    relative(&file)
                );
            }
            for name in &module.required_parameters() {
                assert!(
                    passed.contains(name),
                    "{}: module {symbol} does not pass {name}, which {path} requires",
                    relative(&file)
                );
            }
            outputs_of.insert(symbol, (path, module.outputs()));
            checked += 1;
        }
        for reference in parsed.output_references() {
            let (symbol, name, line) = (reference.symbol, reference.name, reference.line);
            let (path, outputs) = outputs_of.get(&symbol).unwrap_or_else(|| {
                panic!(
                    "{}:{line}: {symbol}.outputs, but {symbol} is no module",
                    relative(&file)
                )
            });
            assert!(
                outputs.contains(&name),
                "{}:{line}: {symbol}.outputs.{name}, which {path} does not output",
                relative(&file)
            );
        }
    }
    assert!(
        checked >= 7,
        "expected main.bicep's modules, checked {checked}"
    );
}

// ---------------------------------------------------------------------------------------------
// Blue/green (issue 15, item 8; docs/deploy.md "Canary, promote, rollback")

/// The text of `object.key`, panicking with what is missing.
fn value_text<'t>(
    file: &'t Bicep,
    object: flowgrid_testkit::bicep::Node<'t>,
    key: &str,
) -> &'t str {
    let value = file.property(object, key).unwrap_or_else(|| {
        panic!(
            "{}: no `{key}` in {}",
            relative(file.path()),
            file.text(object)
        )
    });
    file.text(value)
}

/// The property at `path` (keys, outermost first) of `object`.
fn at<'t>(
    file: &'t Bicep,
    object: flowgrid_testkit::bicep::Node<'t>,
    path: &[&str],
) -> flowgrid_testkit::bicep::Node<'t> {
    path.iter().fold(object, |node, key| {
        file.property(node, key).unwrap_or_else(|| {
            panic!(
                "{}: no `{}` (looking for {path:?}) in {}",
                relative(file.path()),
                key,
                file.text(node)
            )
        })
    })
}

#[test]
fn every_app_is_a_blue_green_pair_and_only_the_live_colour_runs_triggers() {
    let main = bicep("infra/main.bicep");
    // The two colours, from a parameter per app saying which is live and green's weight.
    let colours = main.variable("colourNames").expect("var colourNames");
    let names: Vec<String> = {
        let mut cursor = colours.walk();
        colours
            .named_children(&mut cursor)
            .filter_map(|c| main.literal(c))
            .collect()
    };
    assert_eq!(names, ["blue", "green"]);
    assert!(
        main.parameters().contains("colours"),
        "main.bicep needs the colours parameter"
    );
    let app_colours = main.text(main.variable("appColours").expect("var appColours"));
    assert!(
        app_colours.contains("colours[app.name]") && app_colours.contains("live: 'blue'"),
        "each app's state comes from colours, blue live by default: {app_colours}"
    );
    let weights = main.text(main.variable("greenWeights").expect("var greenWeights"));
    assert!(
        weights.contains("c.greenWeight") && weights.contains("c.live == 'green' ? 100 : 0"),
        "green's weight comes from colours, else all or nothing by the live colour: {weights}"
    );

    // One Function App per slot, named by app and colour, each with its own deployment
    // container; the idle colour's triggers off and no always-ready instances.
    let apps = main.body_of("functionApps").expect("module functionApps");
    let params = at(&main, apps, &["params"]);
    let name = value_text(&main, params, "name");
    assert_eq!(name, "'${base}-${apps[slot.app].name}-${slot.colour}'");
    assert_eq!(
        value_text(&main, params, "packageContainer"),
        "packageContainers[s]"
    );
    let containers = main.text(
        main.variable("packageContainers")
            .expect("var packageContainers"),
    );
    assert!(
        containers.contains("[for slot in slots:") && containers.contains("${slot.colour}"),
        "one deployment container per slot: {containers}"
    );
    assert_eq!(
        value_text(&main, params, "disabledFunctions"),
        "liveColours[slot.app] == slot.colour ? [] : apps[slot.app].triggers",
        "the idle colour gets its app's timer and Service Bus functions disabled"
    );
    assert_eq!(
        value_text(&main, params, "alwaysReadyInstances"),
        "liveColours[slot.app] == slot.colour ? alwaysReadyInstances : 0"
    );
    assert_eq!(
        value_text(&main, params, "identityId"),
        "identities[slot.app].id",
        "both colours run as the app's identity (its roles)"
    );
    // Flex allows one app per plan: the module makes a plan per Function App.
    let app = bicep("infra/modules/functionapp.bicep");
    let plan = app.body_of("flexPlan").expect("resource flexPlan");
    assert_eq!(value_text(&app, plan, "name"), "'${name}-plan'");

    // The disabled-trigger settings: the Functions host's AzureWebJobs.<function>.Disabled.
    assert!(app.parameters().contains("disabledFunctions"));
    let triggers = app.text(
        app.variable("triggerSettings")
            .expect("var triggerSettings"),
    );
    assert_eq!(
        triggers,
        "toObject(disabledFunctions, f => 'AzureWebJobs.${f}.Disabled', f => 'true')"
    );
    let settings = app.text(app.variable("appSettings").expect("var appSettings"));
    assert!(
        settings.starts_with("union(") && settings.contains("triggerSettings"),
        "the trigger settings must be part of the app settings: {settings}"
    );
    // Every app lists its non-HTTP functions (the manifest test holds them to function.json).
    let manifest = read_json(&root().join("infra/apps.json"));
    let execution = manifest["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "execution"))
        .expect("the execution app");
    for function in ["ExecuteJob", "RunSchedules", "ReapJobs"] {
        assert!(
            execution["triggers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|f| f == function)),
            "execution's {function} must be disabled on its idle colour: {}",
            execution["triggers"]
        );
    }

    // Outputs name both colours, for flowgrid deploy.
    for output in [
        "functionAppNames",
        "gatewayName",
        "gatewayResourceId",
        "appInsightsName",
    ] {
        assert!(
            main.outputs().contains(output),
            "main.bicep outputs no {output}"
        );
    }
    let names = main.text(
        main.nodes("output_declaration")
            .into_iter()
            .find(|o| {
                o.named_child(0)
                    .is_some_and(|id| main.text(id) == "functionAppNames")
            })
            .expect("output functionAppNames"),
    );
    for part in [
        "blue: functionApps[2 * i].outputs.name",
        "green: functionApps[2 * i + 1].outputs.name",
        "name: functionApps[liveSlots[i]].outputs.name",
    ] {
        assert!(names.contains(part), "{part} missing from {names}");
    }
}

#[test]
fn every_app_has_a_weighted_pool_of_its_colours_with_circuit_breakers_and_a_sticky_choice() {
    let main = bicep("infra/main.bicep");
    let gateway = main.body_of("gateway").expect("module gateway");
    let backends = at(&main, gateway, &["params", "backends"]);
    let entry = backends
        .child_by_field_name("body")
        .expect("backends: [for (app, i) in apps: {…}]");
    assert_eq!(
        value_text(&main, entry, "blueUrl"),
        "'https://${functionApps[2 * i].outputs.hostName}/api'"
    );
    assert_eq!(
        value_text(&main, entry, "greenUrl"),
        "'https://${functionApps[2 * i + 1].outputs.hostName}/api'"
    );
    assert_eq!(value_text(&main, entry, "greenWeight"), "greenWeights[i]");
    assert_eq!(value_text(&main, entry, "live"), "liveColours[i]");

    let apim = bicep("infra/modules/apim.bicep");
    let resources = apim.resources();
    let backend_resources: Vec<_> = resources
        .iter()
        .filter(|r| r.type_name == "Microsoft.ApiManagement/service/backends")
        .collect();
    for r in &backend_resources {
        // Pools and circuit breakers are in the 2023-09-01-preview schema and later.
        assert!(
            r.api_version.as_str() >= "2023-09-01",
            "{}: API version {} has no pools or circuit breakers",
            r.symbol,
            r.api_version
        );
    }
    // `properties: union({…}, …)` or `properties: {…}`: the object's `type`.
    let single = |r: &&&flowgrid_testkit::bicep::Resource| {
        r.body.is_some_and(|b| {
            apim.text(at(&apim, b, &["properties"]))
                .contains("type: 'Single'")
        })
    };
    let pool = |r: &&&flowgrid_testkit::bicep::Resource| {
        r.body.is_some_and(|b| {
            apim.property(at(&apim, b, &["properties"]), "type")
                .map(|t| apim.text(t))
                == Some("'Pool'")
        })
    };

    // The members: one backend per app and colour, each with a circuit breaker.
    let members: Vec<_> = backend_resources.iter().filter(single).collect();
    assert_eq!(
        members.len(),
        1,
        "one looped declaration of the colours' backends"
    );
    let member = members[0];
    assert_eq!(member.looped_over.as_deref(), Some("colourBackends"));
    let colour_backends = apim.text(apim.variable("colourBackends").expect("var colourBackends"));
    for part in [
        "'${b.app}-blue'",
        "url: b.blueUrl",
        "'${b.app}-green'",
        "url: b.greenUrl",
    ] {
        assert!(
            colour_backends.contains(part),
            "{part} missing from {colour_backends}"
        );
    }
    let body = member.body.expect("a body");
    // API Management documents circuit breakers as unsupported in the Consumption tier: every
    // member gets one on the other tiers.
    let properties = apim.text(at(&apim, body, &["properties"]));
    assert!(
        properties.starts_with("union({")
            && properties
                .ends_with("circuitBreakers ? {\n    circuitBreaker: circuitBreaker\n  } : {})"),
        "each member backend's properties must add the circuit breaker: {properties}"
    );
    assert_eq!(
        apim.text(
            apim.variable("circuitBreakers")
                .expect("var circuitBreakers")
        ),
        "sku != 'Consumption'"
    );
    assert_eq!(
        value_text(&main, at(&main, gateway, &["params"]), "sku"),
        "apimSku",
        "main.bicep passes its apimSku parameter"
    );
    let rules = at(
        &apim,
        apim.variable("circuitBreaker").expect("var circuitBreaker"),
        &["rules"],
    );
    let rules = apim.objects_in(rules);
    assert_eq!(rules.len(), 1, "one circuit breaker rule");
    let rule = rules[0];
    let condition = at(&apim, rule, &["failureCondition"]);
    assert_eq!(
        value_text(&apim, condition, "count"),
        "circuitBreakerFailures"
    );
    assert_eq!(
        value_text(&apim, condition, "interval"),
        "circuitBreakerInterval"
    );
    let ranges = apim.objects_in(at(&apim, condition, &["statusCodeRanges"]));
    let ranges: Vec<(String, String)> = ranges
        .iter()
        .map(|r| {
            (
                value_text(&apim, *r, "min").to_owned(),
                value_text(&apim, *r, "max").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        [("500".to_owned(), "599".to_owned())],
        "server errors trip it"
    );
    assert_eq!(
        value_text(&apim, rule, "tripDuration"),
        "circuitBreakerTripDuration"
    );
    assert_eq!(value_text(&apim, rule, "acceptRetryAfter"), "true");
    for parameter in [
        "circuitBreakerFailures",
        "circuitBreakerInterval",
        "circuitBreakerTripDuration",
    ] {
        assert!(
            main.parameters().contains(parameter),
            "main.bicep must declare {parameter}"
        );
    }

    // The pool: the two colours, weighted by the app's green weight.
    let pools: Vec<_> = backend_resources.iter().filter(pool).collect();
    assert_eq!(pools.len(), 1, "one looped declaration of the pools");
    let pool = pools[0];
    assert_eq!(pool.looped_over.as_deref(), Some("backends"));
    let body = pool.body.expect("a body");
    assert_eq!(value_text(&apim, body, "name"), "'${b.app}-pool'");
    let services = apim.objects_in(at(&apim, body, &["properties", "pool", "services"]));
    let services: Vec<(String, String, String)> = services
        .iter()
        .map(|s| {
            (
                value_text(&apim, *s, "id").to_owned(),
                value_text(&apim, *s, "weight").to_owned(),
                value_text(&apim, *s, "priority").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            (
                "'/backends/${b.app}-blue'".to_owned(),
                "100 - b.greenWeight".to_owned(),
                "1".to_owned()
            ),
            (
                "'/backends/${b.app}-green'".to_owned(),
                "b.greenWeight".to_owned(),
                "1".to_owned()
            ),
        ],
        "the pool's members are the app's blue and green backends, weighted by greenWeight"
    );

    // The named values: the weight the policies read, and the live colour flowgrid deploy reads.
    let named: Vec<_> = resources
        .iter()
        .filter(|r| r.type_name == "Microsoft.ApiManagement/service/namedValues")
        .collect();
    let named_value = |name: &str| {
        named
            .iter()
            .find(|r| r.body.is_some_and(|b| value_text(&apim, b, "name") == name))
            .unwrap_or_else(|| panic!("no named value {name} in apim.bicep"))
            .body
            .expect("a body")
    };
    let weight = named_value("'${b.app}-green-weight'");
    let properties = at(&apim, weight, &["properties"]);
    assert_eq!(
        value_text(&apim, properties, "value"),
        "string(b.greenWeight)"
    );
    assert_eq!(
        value_text(&apim, properties, "displayName"),
        "'${b.app}-green-weight'"
    );
    assert_eq!(value_text(&apim, properties, "secret"), "false");
    let live = named_value("'${b.app}-live'");
    assert_eq!(
        value_text(&apim, at(&apim, live, &["properties"]), "value"),
        "b.live"
    );

    // Each operation: a tenant's bucket below the app's green weight (the named value) → green,
    // another tenant → blue, no tenant → the pool.
    let policy = apim
        .body_of("operationPolicies")
        .expect("resource operationPolicies");
    let value = value_text(&apim, at(&apim, policy, &["properties"]), "value");
    let pool_when = value.find(r#"<when condition="@(!context.Variables.ContainsKey("tenantBucket"))"><set-backend-service backend-id="${op.app}-pool" /></when>"#);
    let green_when = value.find(r#"<when condition="@(int.Parse("{{${op.app}-green-weight}}") > (int)context.Variables["tenantBucket"])"><set-backend-service backend-id="${op.app}-green" /></when>"#);
    let blue_otherwise =
        value.find(r#"<otherwise><set-backend-service backend-id="${op.app}-blue" /></otherwise>"#);
    match (pool_when, green_when, blue_otherwise) {
        (Some(p), Some(g), Some(b)) => assert!(p < g && g < b, "{value}"),
        _ => panic!(
            "the operation policy must choose pool, green by the named weight, else blue: {value}"
        ),
    }

    // The bucket: FNV-1a (64-bit) of the validated token's tid, modulo 100, as the local host.
    let api = read(&root().join("infra/modules/api-policy.xml"));
    let start = api
        .find(r#"<set-variable name="tenantBucket" value="@{"#)
        .expect("api-policy.xml sets tenantBucket");
    let expression = &api[start..start + api[start..].find("}\" />").expect("its end")];
    let number = |after: &str| -> u64 {
        let at = expression
            .find(after)
            .unwrap_or_else(|| panic!("{after} missing from {expression}"))
            + after.len();
        let digits: String = expression[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("a number")
    };
    let (offset, prime, buckets) = (
        number("ulong hash = "),
        number("(hash ^ b) * "),
        number("return (int)(hash % "),
    );
    assert!(
        expression.contains(r#"Encoding.UTF8.GetBytes(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("tid", ""))"#),
        "the bucket hashes the UTF-8 bytes of the validated token's tid: {expression}"
    );
    // The policy's arithmetic, run here: the same bucket as FNV-1a 64 (its published test
    // vectors) modulo 100.
    let bucket = |tenant: &str| {
        let mut hash = offset;
        for b in tenant.as_bytes() {
            hash = (hash ^ u64::from(*b)).wrapping_mul(prime);
        }
        hash % buckets
    };
    assert_eq!(buckets, 100);
    assert_eq!(bucket(""), 0xcbf2_9ce4_8422_2325 % 100);
    assert_eq!(bucket("a"), 0xaf63_dc4c_8601_ec8c % 100);
    assert_eq!(bucket("foobar"), 0x8594_4171_f739_67e8 % 100);
    let validated = api
        .find("output-token-variable-name=\"jwt\"")
        .expect("validate-jwt");
    assert!(
        validated < start,
        "the bucket must come from the token validate-jwt checked"
    );
}
