//! The Agents app's integration tests, one binary: the routes in-process (`api`), problem bodies
//! pinned by snapshots (`problems`), and the real executable spawned as the host spawns it
//! (`process`); the model providers a deployment offers (`providers`); the platform events the
//! writes send in envelope mode (`events`).

mod api;
mod common;
mod definitions;
mod events;
mod problems;
mod process;
mod providers;
