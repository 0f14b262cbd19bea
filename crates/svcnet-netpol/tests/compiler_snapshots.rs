//! Snapshot tests of the nftables compiler: YAML in (tests/fixtures/seed), nft script out
//! (tests/fixtures/snapshots). `UPDATE_SNAPSHOTS=1` rewrites the expected files.

use std::path::{Path, PathBuf};

use svcnet_netpol::model::PodInfo;
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::objects::Objects;
use svcnet_netpol::{Cluster, PodKey};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn check(name: &str, actual: &str) {
    let path = fixtures().join("snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SNAPSHOTS=1)", path.display()));
    assert_eq!(actual, expected, "snapshot {name} differs; actual:\n{actual}");
}

fn seed() -> Cluster {
    let (c, errors) = Objects::read_dir(&fixtures().join("seed")).unwrap().cluster();
    assert!(errors.is_empty());
    c
}

#[test]
fn seed_full_table_per_node() {
    let c = seed();
    for node in ["node-1", "node-2"] {
        let options = CompileOptions { node_name: Some(node.into()), log_drops: true };
        let state = nft::compile(&c, &options);
        check(&format!("seed-{node}.nft"), &nft::full_script(&state, &options));
    }
}

/// A label change is a handful of element operations, not a rebuild.
#[test]
fn label_change_is_incremental() {
    let mut c = seed();
    let options = CompileOptions { node_name: Some("node-1".into()), log_drops: false };
    let before = nft::compile(&c, &options);
    // `other` becomes a frontend: it may now reach the backend on 8000.
    let mut other: PodInfo = c.pod(&PodKey::new("default", "other")).unwrap().clone();
    other.labels.insert("app".into(), "frontend".into());
    c.upsert_pod(other);
    let after = nft::compile(&c, &options);
    let diff = nft::diff_script(&before, &after, &options);
    check("seed-label-change.nft", &diff);
    assert!(diff.lines().all(|l| l.starts_with("add element") || l.starts_with("delete element")), "{diff}");
    assert!(nft::diff_script(&after, &after, &options).is_empty());
}

/// Deleting the policy removes the pod chains and every element; the skeleton stays.
#[test]
fn policy_deletion_removes_chains() {
    let mut c = seed();
    let options = CompileOptions { node_name: Some("node-1".into()), log_drops: false };
    let before = nft::compile(&c, &options);
    c.remove_policy(&PodKey::new("default", "backend-policy"));
    let after = nft::compile(&c, &options);
    assert_eq!(after, nft::NodeState::default());
    check("seed-policy-deleted.nft", &nft::diff_script(&before, &after, &options));
}
