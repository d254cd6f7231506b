//! The pending API request counts' conformance suite against the embedded SQLite backend.

flowgrid_testkit::api_request_count_store_conformance!(super::helpers::sqlite());
