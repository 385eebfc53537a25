//! Test support, not shipped: the demo/test PKI generator, hand-made AS4 messages (valid and
//! mutated) for the conformance cases and the integration tests.

pub mod demo_pki;
pub mod inject;
pub mod wire;

// The core's modules under the names the builders use.
pub(crate) use ventanilla_core::{ebms, payload, pki, pmode, util, wss};
