//! The AI spend ledger's conformance suite against the embedded SQLite backend.

flowgrid_testkit::spend_store_conformance!(super::helpers::sqlite());
