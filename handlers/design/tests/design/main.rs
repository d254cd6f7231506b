//! The Design app's tests, one binary: drafts from images and descriptions, compile and prompt
//! previews, model analysis, bad input on every route, and real provider wire formats against
//! llmock (installed from its pin and started by the tests).

mod bad_input;
mod compile;
mod draft;
mod helpers;
mod identity;
mod probes;
mod providers;
