//! The ebMS 3.0 model and its SOAP 1.2 envelope (protocol core: no I/O).

pub mod error;
pub mod model;
pub mod ns;
pub mod read;
pub mod tree;
pub mod write;

pub use error::{EbmsCode, EbmsError};
pub use model::*;
