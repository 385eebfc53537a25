//! Message filters shared by the console's Messages page and the backend API's lists.

use crate::store::{Direction, Search, State};
use maud::{Markup, html};
use serde::Deserialize;

/// The message filters as a console form or API query string gives them (empty fields are
/// absent), turned into a store [`Search`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub message_id: String,
    #[serde(default)]
    pub conversation_id: String,
    #[serde(default)]
    pub partner: String,
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub leg: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub document_number: String,
    /// `YYYY-MM-DD` (UTC, that day included) or an RFC 3339 time.
    #[serde(default)]
    pub from: String,
    /// `YYYY-MM-DD` (UTC, that day included) or an RFC 3339 time (excluded).
    #[serde(default)]
    pub to: String,
    /// The cursor: the page continues below this row (`cursor` in the API).
    #[serde(default, alias = "cursor")]
    pub before: Option<i64>,
}

/// A day (`YYYY-MM-DD`: its start, and whether it was a day) or an RFC 3339 time, in ms.
fn time_ms(value: &str) -> Option<(i64, bool)> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(value.trim(), &format) {
        return Some(((date.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64, true));
    }
    let at = time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    Some(((at.unix_timestamp_nanos() / 1_000_000) as i64, false))
}

impl Filters {
    pub fn search(&self, limit: usize) -> Result<Search, String> {
        for (key, value) in self.pairs() {
            if value.len() > 1024 {
                return Err(format!("{key}: {} bytes; at most 1024", value.len()));
            }
        }
        if let Some(before) = self.before.filter(|b| *b < 0) {
            return Err(format!("cursor {before} is negative"));
        }
        let text = |v: &String| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        let date = |v: &String, key: &str| -> Result<Option<(i64, bool)>, String> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            time_ms(v).map(Some).ok_or_else(|| format!("{key}: '{v}' is not a date (YYYY-MM-DD) or an RFC 3339 time"))
        };
        Ok(Search {
            direction: match self.direction.as_str() {
                "" => None,
                d => Some(Direction::parse(d).ok_or_else(|| format!("direction: unknown '{d}'"))?),
            },
            state: match self.state.as_str() {
                "" => None,
                s => Some(State::parse(s).ok_or_else(|| format!("state: unknown '{s}'"))?),
            },
            partner: text(&self.partner),
            message_id: text(&self.message_id),
            conversation_id: text(&self.conversation_id),
            leg: text(&self.leg),
            service: text(&self.service),
            action: text(&self.action),
            document_number: text(&self.document_number),
            from_ms: date(&self.from, "from")?.map(|(at, _)| at),
            // A day is included whole; a time is the end.
            to_ms: date(&self.to, "to")?.map(|(at, day)| if day { at + 86_400_000 } else { at }),
            before: self.before,
            limit,
        })
    }

    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("message_id", &self.message_id),
            ("conversation_id", &self.conversation_id),
            ("partner", &self.partner),
            ("direction", &self.direction),
            ("state", &self.state),
            ("leg", &self.leg),
            ("service", &self.service),
            ("action", &self.action),
            ("document_number", &self.document_number),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
        .collect()
    }

    pub fn hidden(&self) -> Markup {
        html! { @for (k, v) in self.pairs() { input type="hidden" name=(k) value=(v); } }
    }
}
