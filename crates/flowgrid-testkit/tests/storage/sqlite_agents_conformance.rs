//! The agents-store conformance suite against the embedded SQLite backend.

flowgrid_testkit::agent_store_conformance!(super::helpers::sqlite());
