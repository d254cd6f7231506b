//! The jobs-store conformance suite against the embedded SQLite backend.

flowgrid_testkit::job_store_conformance!(super::helpers::sqlite());
