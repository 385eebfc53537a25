//! The clock and randomness of the runtime: what the sans-I/O core takes as arguments.

/// The current time as an xs:dateTime in UTC with milliseconds, as AS4 senders emit it.
pub fn timestamp_now() -> String {
    ventanilla_core::util::format_timestamp(time::OffsetDateTime::now_utc())
}

/// A new globally unique RFC 2822 msg-id (no angle brackets).
pub fn new_message_id(host: &str) -> String {
    format!("{}@{}", uuid::Uuid::new_v4(), host)
}
