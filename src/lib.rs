//! Ventanilla: an AS4 access point for customs and trade single windows. This crate is the
//! runtime around the sans-I/O core (`ventanilla-core`): the store, the message service
//! handler's pipelines, HTTPS, the backend API, configuration and the node that assembles
//! them. The core's modules are re-exported under their own names.

#![recursion_limit = "256"] // the OpenAPI document is one json! literal

pub use ventanilla_core::{compress, dsig, ebms, iop, lifecycle, mime, payload, pki, pmode, util, wss};

pub mod backend;
pub mod backup;
pub mod blocking;
pub mod certs;
pub mod clock;
pub mod config;
#[cfg(feature = "devtools")]
pub mod demo;
pub mod evidence;
pub mod inspect;
#[cfg(feature = "devtools")]
pub mod legacy_peer;
pub mod msh;
pub mod node;
pub mod ops;
pub mod pmode_new;
pub mod push;
pub mod store;
pub mod transport;
