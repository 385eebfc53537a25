//! Keys and certificates: keystores, truststores, path validation, CRL and OCSP checks.

pub mod keys;
pub mod ocsp;
pub mod parsed;
pub mod trust;
