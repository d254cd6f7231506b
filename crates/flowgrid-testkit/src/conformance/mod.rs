//! The storage conformance suite: behaviour every backend must show, written once against the
//! storage traits. A backend's test file instantiates it with [`agent_store_conformance!`].

pub mod agents;
pub mod analytics;
pub mod api_requests;
pub mod blobs;
pub mod connections;
pub mod identity;
pub mod jobs;
pub mod spend;

/// Generates one `#[tokio::test]` per agents-store check, each on a fresh store made by
/// `$make` (an async expression yielding an `Arc<dyn AgentStore>` and a guard kept alive for
/// the test, e.g. the temp folder).
#[macro_export]
macro_rules! agent_store_conformance {
    ($make:expr) => {
        $crate::agent_store_conformance!(@tests $make;
            insert_then_get_returns_the_agent_with_an_etag,
            another_tenants_agent_is_not_found_anywhere,
            names_are_unique_per_tenant_case_insensitively,
            replace_with_the_current_etag_records_the_next_version,
            replace_with_a_stale_etag_fails_and_changes_nothing,
            replace_onto_a_taken_name_conflicts,
            concurrent_replaces_from_one_version_let_exactly_one_win,
            list_is_newest_first_and_pages_without_gaps_or_repeats,
            list_filters_by_status_and_name_text,
            list_never_shows_another_tenants_agents,
            a_forged_continuation_token_is_a_bad_request,
            delete_honours_if_match_and_removes_the_history,
            versions_are_listed_newest_first_and_paged,
            scheduled_lists_agents_with_a_schedule_across_tenants,
            due_lists_only_active_agents_whose_fire_time_has_come,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::agents::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per blob-store check, each on a store made by `$make` (an
/// async expression yielding an `Arc<dyn BlobStore>` and a guard kept alive for the test).
#[macro_export]
macro_rules! blob_store_conformance {
    ($make:expr) => {
        $crate::blob_store_conformance!(@tests $make;
            upload_then_download_returns_the_bytes_and_content_type,
            an_empty_blob_round_trips,
            a_body_larger_than_a_block_streams_and_comes_back_whole,
            upload_replaces_an_existing_blob,
            a_missing_blob_is_not_found,
            delete_removes_the_blob,
            another_tenants_blob_is_not_found_anywhere,
            list_is_in_name_order_filters_by_prefix_and_pages,
            names_that_look_like_paths_do_not_collide,
            a_forged_continuation_token_is_a_bad_request,
            a_bad_content_type_is_a_bad_request,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::blobs::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per identity-store check (tenants, users, sessions, signing
/// keys, revocations), each on fresh stores made by `$make` (an async expression yielding a
/// [`identity::IdentityStores`] and a guard kept alive for the test).
#[macro_export]
macro_rules! identity_store_conformance {
    ($make:expr) => {
        $crate::identity_store_conformance!(@tests $make;
            tenants_are_stored_once_and_read_back,
            a_user_is_found_by_id_only_within_its_tenant,
            emails_are_unique_per_tenant_case_insensitively_and_found_across_tenants,
            replacing_a_user_needs_the_current_etag,
            users_list_pages_without_gaps_or_repeats_within_the_tenant,
            a_refresh_token_rotates_once_and_its_successor_works,
            a_spent_token_presented_within_the_grace_window_rotates_again,
            a_spent_token_presented_after_the_grace_window_revokes_the_family,
            expired_tokens_and_revoked_or_ended_sessions_do_not_rotate,
            a_successor_never_outlives_its_session,
            revoking_a_user_revokes_only_their_live_sessions,
            purging_removes_ended_sessions_and_expired_tokens_only,
            concurrent_rotations_of_one_token_both_succeed,
            signing_keys_are_listed_newest_first_retired_and_deleted,
            revoked_sessions_stay_denied_until_purged_after_expiry,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (stores, _guard) = $make.await;
                $crate::conformance::identity::$name(&stores).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per jobs-store check, each on a fresh store made by `$make`
/// (an async expression yielding an `Arc<dyn JobStore>` and a guard kept alive for the test).
#[macro_export]
macro_rules! job_store_conformance {
    ($make:expr) => {
        $crate::job_store_conformance!(@tests $make;
            create_then_get_returns_the_job_with_an_etag,
            another_tenants_job_is_not_found_anywhere,
            replace_with_a_stale_etag_fails_and_changes_nothing,
            concurrent_claims_let_exactly_one_win,
            an_idempotency_key_returns_the_existing_job_within_the_window_per_tenant,
            an_expired_idempotency_key_may_be_reused,
            list_is_newest_first_filters_and_pages,
            counts_oldest_queued_and_stale_jobs,
            agent_stats_count_runs_since_and_running,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::jobs::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per connections-store check, each on a fresh store made by
/// `$make` (an async expression yielding an `Arc<dyn ConnectionStore>`-like handle and a guard).
#[macro_export]
macro_rules! connection_store_conformance {
    ($make:expr) => {
        $crate::connection_store_conformance!(@tests $make;
            insert_then_get_returns_the_connection_and_names_are_unique,
            another_tenants_connection_is_not_found_anywhere,
            replace_with_a_stale_etag_fails_and_changes_nothing,
            list_is_in_name_order_and_pages,
            delete_honours_the_etag_and_removes_the_health,
            concurrent_health_updates_all_land,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::connections::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per AI-spend-ledger check, each on a store made by `$make`
/// (an async expression yielding an `Arc` of a backend and a guard kept alive for the test).
#[macro_export]
macro_rules! spend_store_conformance {
    ($make:expr) => {
        $crate::spend_store_conformance!(@tests $make;
            reservations_stop_once_the_budget_is_reached,
            adjustments_settle_reservations_and_never_go_below_zero,
            tenants_have_their_own_ledgers,
        );
        #[tokio::test]
        async fn concurrent_reservations_overshoot_by_at_most_one_call() {
            let (store, _guard) = $make.await;
            $crate::conformance::spend::concurrent_reservations_overshoot_by_at_most_one_call(store).await;
        }
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::spend::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per analytics-store check, each on a store made by `$make`
/// (an async expression yielding an `Arc` of a backend and a guard kept alive for the test).
#[macro_export]
macro_rules! analytics_store_conformance {
    ($make:expr) => {
        $crate::analytics_store_conformance!(@tests $make;
            an_event_ingested_twice_is_counted_once,
            hours_roll_up_into_days_and_months_exactly,
            a_late_event_reopens_its_hour,
            a_stale_mark_that_moved_on_is_not_cleared,
            another_tenants_events_and_rollups_are_not_seen,
            expired_events_are_purged,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::analytics::$name(store.as_ref()).await;
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per check of the pending API request counts, each on a store
/// made by `$make` (an async expression yielding an `Arc` of a backend and a guard kept alive
/// for the test).
#[macro_export]
macro_rules! api_request_count_store_conformance {
    ($make:expr) => {
        $crate::api_request_count_store_conformance!(@tests $make;
            counts_of_every_instance_are_listed_oldest_first,
            a_repeated_write_of_a_key_changes_nothing,
            marks_and_deletes_go_by_key_and_listings_are_bounded,
            many_rows_are_written_marked_and_deleted_in_one_call,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::api_requests::$name(store.as_ref()).await;
            }
        )+
    };
}
