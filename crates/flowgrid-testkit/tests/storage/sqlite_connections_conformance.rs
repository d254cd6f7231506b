//! The connections-store conformance suite against the embedded SQLite backend.

flowgrid_testkit::connection_store_conformance!(super::helpers::sqlite());
