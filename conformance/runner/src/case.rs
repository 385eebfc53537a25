//! One conformance case as data (`conformance/cases/<id>.toml`): the numbers and words of
//! docs/as4.md §7, what the runner does, and the outcome it expects.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub section: String,
    pub title: String,
    pub preconditions: String,
    /// The expected result as docs/as4.md §7 words it.
    pub expected: String,
    pub clause: String,
    pub status: Status,
    /// Why a case is not run (not applicable, not yet, or covered elsewhere).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub run: Option<Run>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The runner executes it.
    Implemented,
    /// Checked by a unit or integration test of the crate, not (yet) by the runner.
    UnitTest,
    NotYet,
    NotApplicable,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Implemented => "implemented",
            Status::UnitTest => "unit-test",
            Status::NotYet => "not-yet",
            Status::NotApplicable => "not-applicable",
        })
    }
}

/// What the runner does for an implemented case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub action: Action,
    /// `peer→sut` (the peer sends, Ventanilla receives) or `sut→peer`.
    pub direction: String,
    /// For `inject`: the named ways the bytes are made (see `conformance::inject`); each must
    /// meet the expectation.
    #[serde(default)]
    pub mutations: Vec<String>,
    /// `none` (unsigned test profile), `edelivery-1.15` or `edelivery-2.0`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// The peers that run this case (`self` always; `phase4` and `python-as4` for the cases
    /// their harnesses can play, on eDelivery 1.15).
    #[serde(default = "default_peers")]
    pub peers: Vec<String>,
    #[serde(default)]
    pub phase4_document: Option<String>,
    /// How phase4 sends it: each of `ski`, `issuer-serial`, `uncompressed`, `unencrypted`
    /// (none: BST reference, compressed, signed and encrypted).
    #[serde(default)]
    pub phase4_variants: Vec<String>,
    /// With another peer: `peer→sut` (the peer sends; default) or `sut→peer` (Ventanilla
    /// sends, the peer must verify, decrypt and deliver, and answer with a receipt Ventanilla
    /// verifies).
    #[serde(default)]
    pub peer_direction: Option<String>,
    /// Text replacements in the P-Modes of the APs this case runs against (a variant of the
    /// shipped links, e.g. a required property); each distinct list gets its own APs.
    #[serde(default)]
    pub pmode_patches: Vec<(String, String)>,
    /// The access points' `as4.max_message` for this case (default 8MiB); each distinct value
    /// gets its own APs.
    #[serde(default)]
    pub max_message: Option<String>,
    /// For `exchange`: the payloads in submission order: `ephyto`, `cod`, `xml`, `text`,
    /// `binary`, or `<kind>*<count>`.
    #[serde(default)]
    pub payloads: Vec<String>,
    /// For `inspect`: strings the SUT's wire envelope must contain.
    #[serde(default)]
    pub contains: Vec<String>,
    /// For `inspect`: strings it must not contain.
    #[serde(default)]
    pub absent: Vec<String>,
    /// For `inspect`: named structural checks (`ebms-header`, `every-part-signed`,
    /// `every-part-encrypted`, `fresh-ephemeral-keys`).
    #[serde(default)]
    pub checks: Vec<String>,
    pub expect: Expect,
}

fn default_peers() -> Vec<String> {
    vec!["self".into()]
}

fn default_profile() -> String {
    "none".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Bytes made by a named mutation of a valid message, posted to the receiving AP.
    Inject,
    /// A submission through the sender's backend API, followed to its receipt.
    Exchange,
    /// An exchange whose wire envelope, as the receiving AP got it, is inspected.
    Inspect,
    /// The SUT sends to a scripted endpoint (`conformance::scripted`) named by `mutations`.
    Scripted,
    /// The same message posted twice.
    Duplicate,
    /// The P-Mode loader given two files for the same header tuple.
    PmodeOverlap,
    /// A TLS handshake with one protocol version.
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `receipt` (and delivered), `receipt-not-delivered`, `error`, `fault`, `acknowledged`,
    /// `refused`, `accepted`.
    pub outcome: String,
    /// Acceptable ebMS error codes, for `error`.
    #[serde(default)]
    pub codes: Vec<String>,
    /// For `fault`: the SOAP fault code that must appear.
    #[serde(default)]
    pub fault: Option<String>,
    /// The error signal must carry a signature.
    #[serde(default)]
    pub signed: bool,
    /// For `scripted`: bounds on the number of attempts the endpoint saw.
    #[serde(default)]
    pub min_attempts: Option<usize>,
    #[serde(default)]
    pub max_attempts: Option<usize>,
    /// For `scripted`: every resend must be the same bytes (same MessageId, same signature).
    #[serde(default)]
    pub identical_resends: bool,
    /// Which side reports the outcome.
    #[serde(default = "default_reporter")]
    pub reported_by: String,
}

fn default_reporter() -> String {
    "receiver".into()
}

/// A case file that could not be read, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CaseError {
    pub path: PathBuf,
    pub message: String,
}

/// Every `*.toml` in `dir`, in the order of docs/as4.md §7 (1, 2, …, 55, 55a, …, 89).
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let at = |path: &Path, message: String| CaseError { path: path.to_owned(), message };
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| at(dir, e.to_string()))? {
        let path = entry.map_err(|e| at(dir, e.to_string()))?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| at(&path, e.to_string()))?;
        let mut case: Case = toml::from_str(&text).map_err(|e| at(&path, e.to_string()))?;
        if case.status == Status::Implemented && case.run.is_none() {
            return Err(at(&path, "status = \"implemented\" needs a [run] table".into()));
        }
        if case.status != Status::Implemented && case.reason.is_empty() {
            return Err(at(&path, "a case that is not run needs a reason".into()));
        }
        case.file = path;
        cases.push(case);
    }
    cases.sort_by_key(|c| sort_key(&c.id));
    Ok(cases)
}

fn sort_key(id: &str) -> (u32, String) {
    let digits: String = id.chars().take_while(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(u32::MAX), id[digits.len()..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cases_load_and_cover_all_of_section_7() {
        let cases = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")).unwrap();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        let mut expected: Vec<String> = (1..=89).map(|n| n.to_string()).collect();
        expected.extend(["55a", "55b", "55c", "55d", "55e"].map(String::from));
        expected.sort_by_key(|id| sort_key(id));
        assert_eq!(ids, expected);
    }

    #[test]
    fn case_ids_sort_as_the_digest_numbers_them() {
        let mut ids = vec!["55a", "9", "56", "55", "10"];
        ids.sort_by_key(|id| sort_key(id));
        assert_eq!(ids, ["9", "10", "55", "55a", "56"]);
    }
}
