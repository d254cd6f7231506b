//! The provider layer against fakes we did not write (installed from pinned versions and
//! started by the tests, see `flowgrid_testkit::ai_fakes`): behaviour against llmock, request
//! shapes against OpenAI's own description served strictly by steady, and Anthropic request
//! bodies against the `anthropic` SDK's request types.

mod behaviour;
mod contract;
mod helpers;
mod otel;
mod prices;
