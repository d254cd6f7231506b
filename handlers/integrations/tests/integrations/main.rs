//! The Integrations app's tests: connections and their secrets, the connector rules (retries,
//! rate limits, the stored circuit, exactly-once creates) against a ServiceNow fake built from
//! the Table API's documented examples, Jira against a strict mock serving Atlassian's
//! OpenAPI description (with every ADF document checked against Atlassian's schema), and
//! GitHub against a strict mock serving GitHub's description plus recorded responses.

mod common;
mod connections;
mod fakes;
mod github;
mod jira;
mod process;
mod servicenow;
mod snow_fake;
