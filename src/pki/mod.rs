//! Keys and certificates. For now: the demo/test PKI generator (`ventanilla certs demo`).

pub mod demo;
pub mod keys;
pub mod ocsp;
pub mod trust;
