//! P-Modes: one symmetric TOML file per bilateral link (protocol core: parsing and matching;
//! the file watcher lives in the runtime).

pub mod file;
pub mod load;
pub mod model;
pub mod set;

pub use load::{PmodeError, parse_link, read_files};
pub use model::{IopLink, IopParty, Leg, Link, Party, Profile, SecretSource, Transport};
pub use set::{Matched, PmodeSet};

use std::path::Path;

/// Loads and checks a file or folder of P-Mode files, collecting every error.
pub fn load_path(path: &Path) -> Result<PmodeSet, Vec<PmodeError>> {
    let files = read_files(path).map_err(|e| {
        vec![PmodeError { file: path.to_owned(), line: 0, key: "(file)".into(), message: e.to_string() }]
    })?;
    let mut links = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in files {
        match parse_link(&file, &text) {
            Ok(link) => links.push(link),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    PmodeSet::build(links)
}
