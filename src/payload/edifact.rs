//! UN/EDIFACT interchanges (placeholder, filled in next).

use super::{Context, Document, Finding, PayloadHandler};

pub struct Edifact;

impl PayloadHandler for Edifact {
    fn name(&self) -> &'static str {
        "edifact"
    }
    fn detect(&self, head: &[u8]) -> bool {
        head.starts_with(b"UNA") || head.starts_with(b"UNB")
    }
    fn inspect(&self, _bytes: &[u8], _context: &Context) -> Result<Document, Vec<Finding>> {
        Err(vec![super::finding("EDI", "document", "not yet")])
    }
}
