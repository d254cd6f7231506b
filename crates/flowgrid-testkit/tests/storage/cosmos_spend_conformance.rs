//! The AI spend ledger's conformance suite against the Cosmos DB emulator
//! (`@vercel/cosmosdb-server`, started by the test itself), one database per test.

flowgrid_testkit::spend_store_conformance!(super::helpers::cosmos());
