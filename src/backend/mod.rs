//! The national system's interface to its access point (runtime): REST under `/api/v1`.

pub mod api;
pub mod client;
pub mod openapi;
mod queries;

pub use queries::safe_file_name;

pub use api::router;
