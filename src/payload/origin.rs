//! Certificates of origin: the ALADI COD (placeholder, filled in next).

use super::{Context, Document, Finding, PayloadHandler};

pub struct AladiCod;

impl PayloadHandler for AladiCod {
    fn name(&self) -> &'static str {
        "origin"
    }
    fn detect(&self, head: &[u8]) -> bool {
        String::from_utf8_lossy(head).contains("CertOrigin")
    }
    fn inspect(&self, _bytes: &[u8], _context: &Context) -> Result<Document, Vec<Finding>> {
        Err(vec![super::finding("COD", "document", "not yet")])
    }
}
