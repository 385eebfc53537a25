//! Ventanilla's protocol core, sans-I/O: pure functions and types over bytes and files, no
//! sockets, no database, no clock it does not take as an argument (as rustls and quinn-proto).
//! The runtime crate (`ventanilla`) does the I/O around it.
//!
//! [`ebms`] the ebMS3 model and envelope, [`mime`] SwA framing, [`wss`] WS-Security, [`pki`]
//! keys and trust, [`pmode`] P-Mode files and matching, [`payload`] document handlers,
//! [`compress`] gzip, [`lifecycle`] the states of a message and their transitions.

pub mod compress;
pub mod dsig;
pub mod ebms;
#[doc(hidden)]
pub mod fuzzing;
pub mod iop;
pub mod lifecycle;
pub mod mime;
pub mod payload;
pub mod pki;
pub mod pmode;
pub mod util;
pub mod wss;
