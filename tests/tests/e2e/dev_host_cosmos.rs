//! The Agents app end to end through `flowgrid dev` on Cosmos DB (the emulator): the same run
//! command a user types, with `FLOWGRID_STORE=cosmos` in its environment, and a token from
//! `flowgrid token` with the same settings.

use flowgrid_e2e::Dev;
use flowgrid_storage::cosmos::EMULATOR_KEY;
use flowgrid_testkit::emulators;
use serde_json::{Value, json};

#[tokio::test]
async fn the_agents_app_serves_its_api_from_cosmos_through_flowgrid_dev() {
    let cosmos = emulators::cosmos();
    let endpoint = cosmos.endpoint();
    let database = format!("dev{}", uuid_suffix());
    let dev = Dev::start(
        &["agents"],
        &[
            ("FLOWGRID_STORE", "cosmos"),
            ("COSMOS_ENDPOINT", &endpoint),
            ("COSMOS_KEY", EMULATOR_KEY),
            ("COSMOS_DATABASE", &database),
        ],
    )
    .await;
    let token = dev.token("acme", "admin");
    let client = reqwest::Client::new();

    let created = client
        .post(format!("{}/api/agents", dev.url))
        .bearer_auth(&token)
        .json(&json!({"name": "on-cosmos", "definition": {"instructions": "help"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let agent: Value = created.json().await.unwrap();
    let id = agent["id"].as_str().unwrap();

    let read: Value = client
        .get(format!("{}/api/agents/{id}", dev.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "on-cosmos");

    let other = dev.token("globex", "owner");
    let hidden = client
        .get(format!("{}/api/agents/{id}", dev.url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404, "another tenant does not see it");

    let health = dev.health().await.unwrap();
    assert_eq!(health["apps"]["agents"]["state"], "ready");
    assert!(
        !dev.data.path().join("flowgrid.db").exists(),
        "nothing was written to the embedded database"
    );
}

fn uuid_suffix() -> String {
    format!("{:x}", std::process::id()) + &format!("{:x}", flowgrid_testkit::free_port())
}
