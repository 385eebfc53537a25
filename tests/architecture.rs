//! The house rule made mechanical: the protocol core's dependency tree has no runtime crate
//! (no tokio, hyper, axum, rusqlite, tokio-postgres), and the fuzz targets build on the core
//! alone.

use std::process::Command;

const RUNTIME_CRATES: [&str; 6] = ["tokio", "hyper", "axum", "rusqlite", "tokio-postgres", "deadpool-postgres"];

#[test]
fn the_core_depends_on_no_runtime_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["tree", "--offline", "--locked", "-p", "ventanilla-core", "-e", "normal,build", "--prefix", "none"])
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(tree.lines().count() > 10, "a real tree: {tree}");
    let offenders: Vec<&str> =
        tree.lines().filter(|line| RUNTIME_CRATES.contains(&line.split_whitespace().next().unwrap_or(""))).collect();
    assert!(offenders.is_empty(), "ventanilla-core pulls in runtime crates: {offenders:?}");
    assert!(!tree.lines().any(|l| l.starts_with("ventanilla ")), "the core must not depend on the runtime crate");
}

#[test]
fn the_fuzz_targets_depend_on_the_core_only() {
    let manifest = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
        .expect("fuzz/Cargo.toml");
    assert!(manifest.contains("ventanilla-core = { path = \"../crates/core\" }"));
    assert!(!manifest.lines().any(|l| l.starts_with("ventanilla =")), "fuzz/ must not depend on the runtime");
}
