//! Jira.
