//! The Execution app's integration tests, one binary: the HTTP routes in process (`api`), one
//! correlation id from the host's request to the job's message (`correlation`), the
//! worker driven with envelope payloads as the host calls it (`engine`), the reaper, schedules
//! and `agent-compiled` subscription (`timers`), and the platform events the functions send
//! (`events`), over the shared `helpers`.

mod api;
mod correlation;
mod engine;
mod events;
mod helpers;
mod limits;
mod models;
mod recovery;
mod timers;
