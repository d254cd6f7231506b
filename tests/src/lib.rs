//! End-to-end tests across apps live in `tests/tests/`; this crate has no library code.
