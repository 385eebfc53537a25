//! The life of a message, in one place: its states, the events that move it, and what each
//! transition writes. Pure: the store applies a [`Transition`] as one compare-and-set
//! (`UPDATE … WHERE state = expected`), so two nodes or two requests racing on one message
//! cannot both move it; the events feed, the history and the console are derived from the
//! transitions, one event each.
//!
//! ```text
//! outbound  submitted ──claimed──▶ sending ──receipt──▶ acknowledged
//!               ▲                   │  │ └──refused by the partner / retries exhausted──▶ failed
//!               │                   │  └──no receipt (retry) / interrupted──▶ waiting_retry
//!               │                   │                                            │
//!               └───────────────────┴──────────────claimed◀──────────────────────┘
//!           pullable ──pulled──▶ pulled ──receipt──▶ acknowledged
//!               ▲                   ├──refused by the partner / receipt overdue, last──▶ failed
//!               └─receipt overdue───┘
//! inbound   delivered ──backend acknowledged──▶ acknowledged      rejected (refused for content)
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    pub fn parse(value: &str) -> Option<Direction> {
        [Direction::Outbound, Direction::Inbound].into_iter().find(|d| d.as_str() == value)
    }
}

/// Where a message is. Outbound: submitted, sending, waiting_retry, pullable, pulled,
/// acknowledged, failed. Inbound: delivered (in the backend inbox), acknowledged (the backend
/// took it), rejected (refused for its content, kept for inspection, never in the inbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Submitted,
    Sending,
    WaitingRetry,
    /// Outbound on a pull leg: held until the partner pulls it.
    Pullable,
    /// Outbound on a pull leg: pulled, waiting for the partner's receipt.
    Pulled,
    Acknowledged,
    Failed,
    Delivered,
    Rejected,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Submitted,
        State::Sending,
        State::WaitingRetry,
        State::Pullable,
        State::Pulled,
        State::Acknowledged,
        State::Failed,
        State::Delivered,
        State::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Sending => "sending",
            State::WaitingRetry => "waiting_retry",
            State::Pullable => "pullable",
            State::Pulled => "pulled",
            State::Acknowledged => "acknowledged",
            State::Failed => "failed",
            State::Delivered => "delivered",
            State::Rejected => "rejected",
        }
    }

    pub fn parse(value: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// No protocol event leaves it (only an operator's resend takes a failed message back).
    pub fn is_final(self) -> bool {
        matches!(self, State::Acknowledged | State::Failed | State::Rejected)
    }
}

/// An error signal from the partner, as far as it could be read: kept on the message so an
/// operator sees why the partner refuses, whether or not its signature could be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerError {
    /// `EBMS:0004`.
    pub code: String,
    /// `failure` or `warning`.
    pub severity: String,
    pub description: String,
    /// Whether the signal's signature verified with the partner's bound certificate. An
    /// unsigned (or badly signed) error is recorded, never trusted as a refusal.
    pub verified: bool,
}

/// How a message comes into existence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// The backend submitted it; a pull leg holds it for the partner.
    Submitted { pull: bool },
    /// Received from the partner, persisted, receipted, in the inbox.
    Received,
    /// Received and refused for its content (payload validation); kept for inspection.
    RefusedForContent { reason: String },
}

/// What happens to a message. Times are milliseconds since the epoch, given by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The sender leased it for an attempt.
    Claimed,
    /// The partner's (verified) receipt.
    ReceiptReceived,
    /// The partner's (verified) ebMS failure: not retried.
    RefusedByPartner { reason: String, error: Option<PartnerError> },
    /// No usable answer; `retry_at` None when the schedule is exhausted (EBMS:0301).
    NoReceipt { reason: String, retry_at: Option<i64>, error: Option<PartnerError> },
    /// The attempt was cut off (restart, expired lease): resent at `retry_at`.
    Interrupted { retry_at: i64 },
    /// Served to the partner's PullRequest; its receipt is due by `receipt_due`.
    PulledByPartner { receipt_due: i64 },
    /// A pulled message's receipt did not come in time; offered again or, past the schedule,
    /// failed.
    PullReceiptOverdue { offer_again: bool },
    /// The backend took the received message out of its inbox.
    BackendAcknowledged,
    /// An operator resends a failed message, the identical envelope, with a fresh retry
    /// schedule: sent at `at` (push) or offered to the partner's next PullRequest (pull).
    ResentByOperator { by: String, pull: bool, at: i64 },
}

/// Every event name the feed can carry (creations first), for API documents.
pub const EVENT_NAMES: [&str; 14] = [
    "submitted",
    "received",
    "refused_for_content",
    "claimed",
    "receipt_received",
    "refused_by_partner",
    "no_receipt",
    "retries_exhausted",
    "interrupted",
    "pulled_by_partner",
    "pull_receipt_overdue",
    "pull_retries_exhausted",
    "backend_acknowledged",
    "resent_by_operator",
];

impl Event {
    /// The name the events feed and the history carry.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Claimed => "claimed",
            Event::ReceiptReceived => "receipt_received",
            Event::RefusedByPartner { .. } => "refused_by_partner",
            Event::NoReceipt { retry_at: Some(_), .. } => "no_receipt",
            Event::NoReceipt { retry_at: None, .. } => "retries_exhausted",
            Event::Interrupted { .. } => "interrupted",
            Event::PulledByPartner { .. } => "pulled_by_partner",
            Event::PullReceiptOverdue { offer_again: true } => "pull_receipt_overdue",
            Event::PullReceiptOverdue { offer_again: false } => "pull_retries_exhausted",
            Event::BackendAcknowledged => "backend_acknowledged",
            Event::ResentByOperator { .. } => "resent_by_operator",
        }
    }
}

/// What the next attempt time becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    Keep,
    Clear,
    At(i64),
}

/// What a transition writes: the new state and its side effects on the row, and the history
/// entry (which is also the one event the feed shows for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<State>,
    pub to: State,
    pub event: &'static str,
    pub detail: String,
    pub next_attempt: NextAttempt,
    /// One more attempt (a send, or a serve to a PullRequest).
    pub counts_attempt: bool,
    /// The attempt count starts again from zero (an operator's resend: a fresh schedule).
    pub resets_attempts: bool,
    /// Replaces the message's error text when Some.
    pub error: Option<String>,
    /// Replaces the recorded partner error when Some.
    pub partner_error: Option<PartnerError>,
}

/// An event that does not apply to the state the message is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{direction} message in state {from}: event {event} does not apply", direction = .direction.as_str(), from = .from.as_str())]
pub struct IllegalTransition {
    pub direction: Direction,
    pub from: State,
    pub event: &'static str,
}

/// The first state of a new message.
pub fn create(creation: &Creation, now_ms: i64) -> (Direction, Transition) {
    let base = |to, event, detail: &str| Transition {
        from: None,
        to,
        event,
        detail: detail.to_owned(),
        next_attempt: NextAttempt::Clear,
        counts_attempt: false,
        resets_attempts: false,
        error: None,
        partner_error: None,
    };
    match creation {
        Creation::Submitted { pull: false } => (
            Direction::Outbound,
            Transition {
                next_attempt: NextAttempt::At(now_ms),
                ..base(State::Submitted, "submitted", "accepted from the backend")
            },
        ),
        Creation::Submitted { pull: true } => (
            Direction::Outbound,
            base(State::Pullable, "submitted", "accepted from the backend; held for the partner to pull"),
        ),
        Creation::Received => (
            Direction::Inbound,
            base(State::Delivered, "received", "received from the partner and persisted; receipt sent"),
        ),
        Creation::RefusedForContent { reason } => (
            Direction::Inbound,
            Transition {
                error: Some(reason.clone()),
                ..base(
                    State::Rejected,
                    "refused_for_content",
                    &format!("refused for its content and kept for inspection: {reason}"),
                )
            },
        ),
    }
}

/// The transition `event` makes from `from`; `attempts` is the count so far.
pub fn next(direction: Direction, from: State, event: &Event, attempts: u32) -> Result<Transition, IllegalTransition> {
    use State::*;
    let illegal = || IllegalTransition { direction, from, event: event.name() };
    let to = |to: State, detail: String| Transition {
        from: Some(from),
        to,
        event: event.name(),
        detail,
        next_attempt: NextAttempt::Keep,
        counts_attempt: false,
        resets_attempts: false,
        error: None,
        partner_error: None,
    };
    let t = match (direction, from, event) {
        (Direction::Outbound, Submitted | WaitingRetry, Event::Claimed) => Transition {
            counts_attempt: true,
            next_attempt: NextAttempt::Clear,
            ..to(Sending, format!("attempt {}", attempts + 1))
        },
        (Direction::Outbound, Sending, Event::ReceiptReceived) => {
            Transition { next_attempt: NextAttempt::Clear, ..to(Acknowledged, "receipt received".into()) }
        }
        (Direction::Outbound, Pulled, Event::ReceiptReceived) => Transition {
            next_attempt: NextAttempt::Clear,
            ..to(Acknowledged, "receipt received for the pulled message".into())
        },
        (Direction::Outbound, Sending | Pulled, Event::RefusedByPartner { reason, error }) => Transition {
            next_attempt: NextAttempt::Clear,
            error: Some(reason.clone()),
            partner_error: error.clone(),
            ..to(Failed, format!("refused by the partner: {reason}"))
        },
        (Direction::Outbound, Sending, Event::NoReceipt { reason, retry_at: Some(at), error }) => Transition {
            next_attempt: NextAttempt::At(*at),
            error: Some(reason.clone()),
            partner_error: error.clone(),
            ..to(WaitingRetry, format!("no receipt: {reason}"))
        },
        (Direction::Outbound, Sending, Event::NoReceipt { reason, retry_at: None, error }) => {
            let text = format!("EBMS:0301 MissingReceipt: no receipt after {attempts} attempts; last: {reason}");
            Transition {
                next_attempt: NextAttempt::Clear,
                error: Some(text.clone()),
                partner_error: error.clone(),
                ..to(Failed, text)
            }
        }
        (Direction::Outbound, Sending, Event::Interrupted { retry_at }) => Transition {
            next_attempt: NextAttempt::At(*retry_at),
            ..to(WaitingRetry, "interrupted while sending (restart or expired lease); will resend".into())
        },
        (Direction::Outbound, Pullable, Event::PulledByPartner { receipt_due }) => Transition {
            counts_attempt: true,
            next_attempt: NextAttempt::At(*receipt_due),
            ..to(Pulled, "pulled by the partner; waiting for its receipt".into())
        },
        (Direction::Outbound, Pulled, Event::PullReceiptOverdue { offer_again: true }) => Transition {
            next_attempt: NextAttempt::Clear,
            ..to(Pullable, "no receipt for the pulled message; offered again".into())
        },
        (Direction::Outbound, Pulled, Event::PullReceiptOverdue { offer_again: false }) => {
            let text = format!("EBMS:0301 MissingReceipt: pulled {attempts} times without a receipt");
            Transition { next_attempt: NextAttempt::Clear, error: Some(text.clone()), ..to(Failed, text) }
        }
        (Direction::Inbound, Delivered, Event::BackendAcknowledged) => {
            to(Acknowledged, "acknowledged by the backend".into())
        }
        (Direction::Outbound, Failed, Event::ResentByOperator { by, pull: false, at }) => Transition {
            resets_attempts: true,
            next_attempt: NextAttempt::At(*at),
            ..to(Submitted, format!("resent by {by}: the identical message, with a fresh retry schedule"))
        },
        (Direction::Outbound, Failed, Event::ResentByOperator { by, pull: true, .. }) => Transition {
            resets_attempts: true,
            next_attempt: NextAttempt::Clear,
            ..to(Pullable, format!("resent by {by}: offered again to the partner's next pull"))
        },
        _ => return Err(illegal()),
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_event() -> Vec<Event> {
        let error = PartnerError {
            code: "EBMS:0004".into(),
            severity: "failure".into(),
            description: "no".into(),
            verified: false,
        };
        vec![
            Event::Claimed,
            Event::ReceiptReceived,
            Event::RefusedByPartner { reason: "r".into(), error: None },
            Event::NoReceipt { reason: "r".into(), retry_at: Some(5), error: Some(error) },
            Event::NoReceipt { reason: "r".into(), retry_at: None, error: None },
            Event::Interrupted { retry_at: 5 },
            Event::PulledByPartner { receipt_due: 9 },
            Event::PullReceiptOverdue { offer_again: true },
            Event::PullReceiptOverdue { offer_again: false },
            Event::BackendAcknowledged,
            Event::ResentByOperator { by: "ana".into(), pull: false, at: 7 },
            Event::ResentByOperator { by: "ana".into(), pull: true, at: 7 },
        ]
    }

    #[test]
    fn only_a_failed_outbound_message_can_be_resent_and_its_schedule_starts_again() {
        let push = Event::ResentByOperator { by: "ana".into(), pull: false, at: 42 };
        let t = next(Direction::Outbound, State::Failed, &push, 6).unwrap();
        assert_eq!((t.to, t.next_attempt, t.resets_attempts), (State::Submitted, NextAttempt::At(42), true));
        assert!(t.detail.contains("ana"));
        let pull = Event::ResentByOperator { by: "ana".into(), pull: true, at: 42 };
        assert_eq!(next(Direction::Outbound, State::Failed, &pull, 6).unwrap().to, State::Pullable);
        for from in State::ALL.into_iter().filter(|s| *s != State::Failed) {
            assert!(next(Direction::Outbound, from, &push, 1).is_err(), "{from:?} is not resent");
        }
        assert!(next(Direction::Inbound, State::Failed, &push, 1).is_err());
    }

    #[test]
    fn final_states_have_no_way_out_and_directions_do_not_mix() {
        for direction in [Direction::Outbound, Direction::Inbound] {
            for from in State::ALL {
                for event in every_event() {
                    if let Ok(t) = next(direction, from, &event, 1) {
                        let operator = matches!(event, Event::ResentByOperator { .. });
                        assert!(!from.is_final() || operator, "{from:?} --{}--> {:?}", event.name(), t.to);
                        let inbound_state = matches!(t.to, State::Delivered | State::Rejected);
                        assert_eq!(direction == Direction::Inbound, inbound_state || from == State::Delivered);
                        assert_eq!(t.from, Some(from));
                        assert_eq!(t.event, event.name());
                    }
                }
            }
        }
    }

    #[test]
    fn an_outbound_message_is_retried_then_fails_with_0301() {
        let (direction, created) = create(&Creation::Submitted { pull: false }, 100);
        assert_eq!(
            (direction, created.to, created.next_attempt),
            (Direction::Outbound, State::Submitted, NextAttempt::At(100))
        );
        let claimed = next(direction, created.to, &Event::Claimed, 0).unwrap();
        assert!(claimed.counts_attempt);
        assert_eq!(claimed.detail, "attempt 1");
        let error = PartnerError {
            code: "EBMS:0004".into(),
            severity: "failure".into(),
            description: "x".into(),
            verified: false,
        };
        let retry = next(
            direction,
            State::Sending,
            &Event::NoReceipt { reason: "503".into(), retry_at: Some(200), error: Some(error.clone()) },
            1,
        )
        .unwrap();
        assert_eq!((retry.to, retry.next_attempt), (State::WaitingRetry, NextAttempt::At(200)));
        assert_eq!(retry.partner_error, Some(error), "an unverified error is recorded, not trusted");
        let last =
            next(direction, State::Sending, &Event::NoReceipt { reason: "503".into(), retry_at: None, error: None }, 6)
                .unwrap();
        assert_eq!(last.to, State::Failed);
        assert!(last.error.unwrap().starts_with("EBMS:0301"));
        assert!(
            next(direction, State::Acknowledged, &Event::ReceiptReceived, 1).is_err(),
            "a second receipt moves nothing"
        );
    }

    #[test]
    fn pull_and_inbox() {
        let (_, held) = create(&Creation::Submitted { pull: true }, 1);
        assert_eq!(held.to, State::Pullable);
        let pulled =
            next(Direction::Outbound, State::Pullable, &Event::PulledByPartner { receipt_due: 50 }, 0).unwrap();
        assert_eq!((pulled.to, pulled.next_attempt, pulled.counts_attempt), (State::Pulled, NextAttempt::At(50), true));
        assert_eq!(
            next(Direction::Outbound, State::Pulled, &Event::PullReceiptOverdue { offer_again: true }, 1).unwrap().to,
            State::Pullable
        );
        assert_eq!(
            next(Direction::Outbound, State::Pulled, &Event::ReceiptReceived, 1).unwrap().to,
            State::Acknowledged
        );
        let (direction, received) = create(&Creation::Received, 1);
        assert_eq!((direction, received.to), (Direction::Inbound, State::Delivered));
        assert_eq!(next(direction, State::Delivered, &Event::BackendAcknowledged, 0).unwrap().to, State::Acknowledged);
        let again = next(direction, State::Acknowledged, &Event::BackendAcknowledged, 0).unwrap_err();
        assert_eq!(
            again.to_string(),
            "inbound message in state acknowledged: event backend_acknowledged does not apply"
        );
        let (_, rejected) = create(&Creation::RefusedForContent { reason: "EBMS:0004 bad".into() }, 1);
        assert_eq!((rejected.to, rejected.error.as_deref()), (State::Rejected, Some("EBMS:0004 bad")));
    }

    #[test]
    fn every_event_name_is_listed() {
        for event in every_event() {
            assert!(EVENT_NAMES.contains(&event.name()), "{}", event.name());
        }
        let creations = [
            Creation::Submitted { pull: false },
            Creation::Submitted { pull: true },
            Creation::Received,
            Creation::RefusedForContent { reason: String::new() },
        ];
        for c in creations {
            assert!(EVENT_NAMES.contains(&create(&c, 0).1.event));
        }
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("sent"), None);
    }
}
