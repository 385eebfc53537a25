//! The conformance suite of docs/as4.md §7: cases as files in `conformance/cases`, the
//! bytes they inject, and the runner behind `ventanilla conformance run`.

pub mod case;
pub mod inject;
pub mod phase4;
pub mod python;
pub mod remote;
pub mod runner;
pub mod scripted;
pub mod wire;
