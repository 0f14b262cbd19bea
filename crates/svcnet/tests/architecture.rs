//! ARCHITECTURE.md cannot go stale silently: every crate in `crates/` has a section in its code map.

mod common;

#[test]
fn every_crate_is_in_the_code_map() {
    let root = common::repo_root();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !doc.contains(&format!("### `crates/{name}`")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "crates missing from ARCHITECTURE.md's code map: {missing:?}");
}
