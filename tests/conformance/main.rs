//! The engine conformance suite: what every engine behind the [`Broker`] seam must do, written
//! once against the trait and run against each engine. An engine joins by implementing
//! [`engine::Engine`] and listing itself in `conform!` below; the cases are in [`suite`], the
//! model-based property test in [`model`].
//!
//! [`Broker`]: grpc_chat::broker::Broker

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod engine;
mod model;
mod replicas;
mod suite;

/// One test per case of the suite (and the property test) for the engine `$engine`.
macro_rules! conform {
    ($module:ident, $engine:ty) => {
        mod $module {
            conform!(@cases $engine;
                concurrent_publishers_get_one_order,
                offsets_are_contiguous_and_every_start_replays_from_its_place,
                a_feed_gets_everything_published_once_it_is_open,
                a_replay_older_than_history_opens_with_a_gap,
                a_position_in_another_epoch_opens_with_a_reset,
                a_room_that_lost_its_log_resets_saved_positions,
                a_replay_beyond_the_end_is_out_of_range,
                lamport_times_grow_with_offsets_and_merge_the_senders,
                presence_is_announced_on_the_first_and_last_session,
                an_exclusive_entry_refuses_a_second_session,
                a_name_that_looks_like_a_member_s_is_refused_while_they_are_present,
                who_is_here_lists_members_sessions_and_positions,
                a_reader_behind_history_is_told_what_it_missed,
                rooms_subscribers_and_history_bytes_are_bounded,
                figures_follow_appends_and_rooms,
                an_engine_failure_ends_feeds_as_unavailable_with_a_resume_position,
                a_session_whose_join_is_not_stored_is_not_present,
                a_message_is_found_by_its_offset_and_a_reply_keeps_its_quote,
                the_rooms_that_exist_are_listed_by_name_in_pages,
                read_markers_move_forward_count_messages_and_reach_the_user_s_sessions,
                typing_reaches_everyone_else_who_listens_and_is_never_stored,
                edits_deletes_and_reactions_fold_into_the_messages_they_change,
                changes_count_in_history_and_in_its_bytes,
            );

            #[test]
            fn random_interleavings_keep_the_guarantees() {
                crate::model::check::<$engine>();
            }
        }
    };
    (@cases $engine:ty; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            crate::suite::$case::<$engine>().await;
        }
    )*};
}

conform!(memory, crate::engine::Memory);
conform!(nats, crate::engine::Nats);
