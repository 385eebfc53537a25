//! The conformance suite of docs/as4.md §7: cases as files in `conformance/cases`, and the
//! runner behind `ventanilla conformance run` (this crate's `ventanilla-conformance` binary,
//! which `ventanilla conformance …` runs). The bytes the cases inject come from the test kit.

pub mod case;
pub mod phase4;
pub mod python;
pub mod remote;
pub mod runner;
pub mod scripted;

// The runtime's and the test kit's modules under the names the runner uses.
pub(crate) use ventanilla::{backend, config, demo, ebms, msh, node, pki, pmode, store, transport, util, wss};
pub(crate) use ventanilla_testkit::{inject, wire};
