//! The end-to-end tests, one binary: chaos while the Execution handler is SIGKILLed (`chaos`), the CLI's everyday loop and the dev host's guards and log
//! (`cli`), the bad-input suite over every route (`bad_input`), `flowgrid dev` with the real
//! Agents app (`dev_host_agents`), an `llm` step against llmock compiled by Design and run by
//! Execution (`dev_host_ai`),
//! with Auth and Agents (`dev_host_auth`), on the Cosmos emulator (`dev_host_cosmos`), a connection used by a run's integration step
//! (`dev_host_integrations`), runs
//! through Execution and the local Service Bus (`execution`), the offline checks of the Azure
//! deployment (`infra`), the API description and schemathesis (`openapi`), and one run as one OpenTelemetry trace (`traces`). `upstream` is their shared local HTTP
//! server that plays the outside world.

mod analytics;
mod bad_input;
mod chaos;
mod cli;
mod dev_host_agents;
mod dev_host_ai;
mod dev_host_auth;
mod dev_host_cosmos;
mod dev_host_integrations;
mod execution;
mod infra;
mod openapi;
mod traces;
mod upstream;
