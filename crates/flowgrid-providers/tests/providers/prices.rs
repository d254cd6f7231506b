//! The checked-in price table is what the pinned price list generates, and its costs are the
//! package's own (`calcPrice` of `@pydantic/genai-prices`).

use std::process::Command;

use flowgrid_domain::events::TokenUsage;
use flowgrid_providers::llm::prices;
use flowgrid_testkit::ai_fakes;
use serde_json::Value;

#[test]
fn the_price_table_is_what_the_pinned_price_list_generates() {
    let dir = ai_fakes::ensure_installed();
    let out = Command::new("node")
        .arg(dir.join("gen-prices.mjs"))
        .arg("--stdout")
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/llm/prices.json"))
            .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == checked_in,
        "src/llm/prices.json is stale: run `node tools/ai-fakes/gen-prices.mjs`"
    );
    let pkg: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("node_modules/@pydantic/genai-prices/package.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        prices::version(),
        format!(
            "@pydantic/genai-prices@{}",
            pkg["version"].as_str().unwrap()
        )
    );
}

#[test]
fn costs_equal_the_price_lists_own_calculation() {
    let dir = ai_fakes::ensure_installed();
    // (price-list provider, Flowgrid provider, model, input incl. cached, cached, output)
    let cases = [
        ("openai", "openai", "gpt-4o-mini", 1000u64, 100u64, 500u64),
        ("openai", "openai", "gpt-4o-2024-08-06", 52_000, 0, 1_200),
        ("openai", "openai", "o3", 3_000, 1_000, 9_000),
        ("openai", "openai", "gpt-6-sol", 300_000, 10_000, 2_000),
        (
            "anthropic",
            "anthropic",
            "claude-sonnet-4-5",
            12_000,
            3_000,
            800,
        ),
        (
            "anthropic",
            "anthropic",
            "claude-3-5-haiku-latest",
            5_000,
            0,
            100,
        ),
        ("azure", "azure-openai", "gpt-4o", 2_000, 500, 300),
    ];
    let script = format!(
        "import {{ calcPrice }} from '@pydantic/genai-prices';\nconst cases = {};\nconsole.log(JSON.stringify(cases.map(([p, m, i, c, o]) => {{ const r = calcPrice({{input_tokens: i, cache_read_tokens: c, output_tokens: o}}, m, {{providerId: p}}); return r ? r.total_price : null; }})));",
        serde_json::to_string(
            &cases
                .iter()
                .map(|(p, _, m, i, c, o)| serde_json::json!([p, m, i, c, o]))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
    let path = dir.join(".calc-check.mjs");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("node").arg(&path).output().expect("node");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Option<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    for ((_, provider, model, input, cached, output), theirs) in cases.iter().zip(theirs) {
        let usage = TokenUsage {
            input: input - cached,
            cached_input: *cached,
            output: *output,
            reasoning: 0,
        };
        let ours = prices::cost(provider, model, &usage).usd;
        let theirs = theirs.unwrap_or_else(|| panic!("the price list does not know {model}"));
        let ours = ours.unwrap_or_else(|| panic!("our table does not know {model}"));
        assert!(
            (ours - theirs).abs() < 1e-9,
            "{model}: ours {ours} theirs {theirs}"
        );
    }
}
