//! Ventanilla: an AS4 access point for customs and trade single windows.
//!
//! Protocol core (sans-I/O): [`ebms`], [`mime`], [`pmode`]. Runtime: [`store`], [`msh`],
//! [`transport`], [`backend`]. Core modules never import runtime modules.

pub mod backend;
pub mod compress;
pub mod config;
pub mod conformance;
pub mod demo;
pub mod ebms;
pub mod inspect;
pub mod mime;
pub mod msh;
pub mod node;
pub mod payload;
pub mod pki;
pub mod pmode;
pub mod store;
pub mod transport;
pub mod util;
pub mod wss;
