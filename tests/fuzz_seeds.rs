//! Every committed fuzz seed and every input a campaign once found (fuzz/seeds, fuzz/regressions)
//! replayed through the fuzz targets' code: what crashed, hung or ran out of memory once must
//! stay fixed, in `make test`, without a nightly toolchain.

use std::path::Path;

fn inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in [root.join("seeds").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// A target's name and what it does with an input.
type Target = (&'static str, fn(&[u8]));

#[test]
fn the_core_targets_survive_their_seeds_and_regressions() {
    let targets: [Target; 6] = [
        ("envelope", ventanilla_core::fuzzing::envelope),
        ("multipart", ventanilla_core::fuzzing::multipart),
        ("signed_envelope", ventanilla_core::fuzzing::signed_envelope),
        ("documents", ventanilla_core::fuzzing::documents),
        ("pmode", ventanilla_core::fuzzing::pmode),
        ("iop", ventanilla_core::fuzzing::iop),
    ];
    for (target, run) in targets {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "fuzz/seeds/{target} has seeds");
        for (path, bytes) in inputs {
            eprintln!("{target}: {}", path.display());
            run(&bytes);
        }
    }
}

#[test]
fn the_runtime_targets_survive_their_seeds_and_regressions() {
    for (path, bytes) in inputs("config") {
        let text = String::from_utf8_lossy(&bytes);
        let parsed = ventanilla::config::Config::parse(Path::new("fuzz.toml"), &text);
        let is_seed = path.components().any(|c| c.as_os_str() == "seeds");
        assert!(parsed.is_ok() || !is_seed, "a committed seed config parses: {}: {parsed:?}", path.display());
    }
    for (_, bytes) in inputs("submission_metadata") {
        let _ = ventanilla::backend::api::parse_metadata(&bytes);
    }
}
