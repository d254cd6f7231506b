//! The analytics-store conformance suite against the Cosmos DB emulator
//! (`@vercel/cosmosdb-server`, started by the test itself), one database per test.

flowgrid_testkit::analytics_store_conformance!(super::helpers::cosmos());
