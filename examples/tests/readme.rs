//! The README tells the truth about what the crate ships: every binary has a command to run it,
//! nothing is promised for later, and no link leaves the package.

use std::path::Path;

#[test]
fn the_readme_runs_every_binary_and_promises_nothing_for_later() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut binaries: Vec<String> = std::fs::read_dir(root.join("src/bin"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    binaries.sort();
    assert!(binaries.len() >= 4, "{binaries:?}");
    for binary in &binaries {
        assert!(
            readme.contains(&format!("--bin {binary}")),
            "the README never runs `{binary}`"
        );
    }
    let lower = readme.to_lowercase();
    for stale in ["later issue", "comes in a later", "to come"] {
        assert!(!lower.contains(stale), "the README still says `{stale}`");
    }
    assert!(!readme.contains("](../"), "a link leaves the package");
    assert!(
        !lower.contains("seed 0"),
        "the README points at documents outside the repository"
    );
}
