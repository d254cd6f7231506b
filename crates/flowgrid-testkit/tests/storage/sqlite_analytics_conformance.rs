//! The analytics-store conformance suite against the embedded SQLite backend.

flowgrid_testkit::analytics_store_conformance!(super::helpers::sqlite());
