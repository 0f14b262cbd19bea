//! The API server driven by the official Python `kubernetes` client: CRUD, selectors, paging,
//! errors as `ApiException`s with `Status` bodies, and watch (tests/python/test_client.py).

mod common;

use std::{path::Path, process::Command};

use common::Svcnet;

#[test]
fn python_kubernetes_client() {
    let server = Svcnet::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.kubeconfig)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}", script.display(), out.status);
    assert!(stdout.contains("all checks passed"), "the script exited 0 without finishing:\n{stdout}\n{stderr}");
    // Shown with --nocapture, so the checks that ran (and any known server bug) are visible.
    println!("{stdout}");
}
