//! WS-Security for AS4 (protocol core): exclusive c14n (streamed for what we sign, by a walk
//! of the parsed subtree for what we check, through libxml2 for the rest), XML Signature with
//! the SwA attachment transforms, XML Encryption of attachments, the eDelivery profiles, and
//! non-repudiation receipts.

pub mod canonical;
mod canonical_tree;
pub mod cipher;
pub mod content;
pub mod decrypt;
pub mod digest;
pub mod ed25519;
pub mod encrypt;
pub mod keyinfo;
pub mod ns;
pub mod profile;
pub mod receipt;
pub mod sign;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod xml;
