//! The pending API request counts' conformance suite against the Cosmos DB emulator
//! (`@vercel/cosmosdb-server`, started by the test itself), one database per test.

flowgrid_testkit::api_request_count_store_conformance!(super::helpers::cosmos());
