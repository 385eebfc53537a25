//! The clock and randomness of the runtime: what the sans-I/O core takes as arguments.

/// The current time as an xs:dateTime in UTC with milliseconds, as AS4 senders emit it.
pub fn timestamp_now() -> String {
    ventanilla_core::util::format_timestamp(time::OffsetDateTime::now_utc())
}

/// A new globally unique RFC 2822 msg-id (no angle brackets).
///
/// Time-ordered (UUID version 7, RFC 9562): the store indexes message ids, and a random id
/// put each new message on a random index page — in the throughput bench the two indexes on
/// message ids and the one on conversation ids were 18% of the pages each commit wrote, one
/// page per message each. Ids that grow with time land on the same last page. The time they
/// carry is in the message's own Timestamp already.
pub fn new_message_id(host: &str) -> String {
    format!("{}@{}", uuid::Uuid::now_v7(), host)
}

/// A new ConversationId, time-ordered for the same reason as [`new_message_id`].
pub fn new_conversation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
