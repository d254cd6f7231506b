//! The `flowgrid` binary as a user runs it: one test binary, a module per area. The API commands
//! against a running `flowgrid dev` are tested end to end in tests/tests/e2e/cli.rs.

mod canary;
mod commands;
mod deploy;
