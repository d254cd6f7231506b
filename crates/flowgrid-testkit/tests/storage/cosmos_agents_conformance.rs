//! The agents-store conformance suite against the Cosmos DB emulator (`@vercel/cosmosdb-server`,
//! started by the test itself), through the production Cosmos backend, one database per test.

flowgrid_testkit::agent_store_conformance!(super::helpers::cosmos());
