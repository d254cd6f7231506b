//! Start-up validation of host.json and the function definitions.

use serde_json::json;

use crate::common::{AppRoot, http_fn};

#[tokio::test]
async fn two_apps_claiming_the_same_route_fail_the_start_naming_both() {
    let root = AppRoot::new(
        &[
            ("a", vec![("One", http_fn("same/{id}", &["get"]))]),
            (
                "b",
                vec![("Two", http_fn("same/{other}", &["get", "post"]))],
            ),
        ],
        json!({}),
    );
    let err = flowgrid_host::Host::start(root.options(), &mut |_| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("functions/b/Two/function.json") && err.contains("functions/a/One"),
        "{err}"
    );
}

#[tokio::test]
async fn an_undefined_connection_setting_fails_the_start_naming_file_and_field() {
    let f = json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg", "queueName": "q", "connection": "Missing"}]});
    let root = AppRoot::new(&[("a", vec![("W", f)])], json!({}));
    let err = format!(
        "{:#}",
        flowgrid_host::Host::start(root.options(), &mut |_| {})
            .await
            .err()
            .unwrap()
    );
    assert!(
        err.contains("functions/a/W/function.json: bindings[0].connection"),
        "{err}"
    );
}

#[test]
fn the_repositorys_own_host_json_and_function_definitions_load_and_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config =
        flowgrid_host::config::Config::load(&root, &mut |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&"agents"), "{names:?}");
    assert_eq!(config.host.route_prefix, "api");
    assert!(config.host.forwarding);
}
