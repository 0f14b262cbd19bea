//! `svcnet policy matrix|explain --offline`: the real binary on the seed's backend-policy
//! scenario, as a new user would run it.

use std::path::PathBuf;
use std::process::Command;

fn svcnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svcnet"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../svcnet-netpol/tests/fixtures/seed")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("running svcnet");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn matrix_text_shows_the_seed_policy() {
    let (ok, out, err) = run(svcnet().args(["policy", "matrix", "--offline"]).arg(fixtures()).args(["--ports", "8000/TCP,5432/TCP"]));
    assert!(ok, "{err}");
    let row = |block: &str, from: &str| -> Vec<String> {
        let start = out.find(block).unwrap_or_else(|| panic!("{block} missing in\n{out}"));
        let line = out[start..].lines().find(|l| l.starts_with(from)).unwrap();
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    // Columns: backend, database, frontend, other.
    assert_eq!(row("8000/TCP", "default/frontend"), [".", ".", ".", "."], "{out}");
    assert_eq!(row("8000/TCP", "default/other"), ["X", ".", ".", "."], "{out}");
    assert_eq!(row("5432/TCP", "default/backend"), ["X", ".", "X", "X"], "{out}");
    assert_eq!(row("8000/TCP", "default/backend"), ["X", "X", "X", "X"], "{out}");
}

#[test]
fn matrix_svg_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.svg");
    let (ok, _, err) = run(svcnet().args(["policy", "matrix", "--offline"]).arg(fixtures()).args(["--ports", "8000/TCP", "--format", "svg", "-o"]).arg(&file));
    assert!(ok, "{err}");
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("default/backend-policy") && svg.contains("default/frontend -&gt; default/backend 8000/TCP: allowed"),
        "{svg}"
    );
}

#[test]
fn explain_allowed_and_denied() {
    let (ok, out, err) = run(svcnet().args(["policy", "explain", "--offline"]).arg(fixtures()).args([
        "--from",
        "default/frontend",
        "--to",
        "default/backend",
        "--port",
        "8000/TCP",
    ]));
    assert!(ok, "{err}");
    assert!(out.starts_with("default/frontend -> default/backend on 8000/TCP: ALLOWED"), "{out}");
    assert!(out.contains("allowed by default/backend-policy ingress[0]"), "{out}");
    let (ok, out, _) =
        run(svcnet().args(["policy", "explain", "--offline"]).arg(fixtures()).args(["--from", "default/backend", "--to", "default/other", "--port", "80/TCP"]));
    assert!(ok);
    assert!(out.starts_with("default/backend -> default/other on 80/TCP: DENIED"), "{out}");
    assert!(out.contains("egress of default/backend: DENIED; isolated by default/backend-policy"), "{out}");
    let (ok, _, err) =
        run(svcnet().args(["policy", "explain", "--offline"]).arg(fixtures()).args(["--from", "default/nobody", "--to", "default/other", "--port", "80/TCP"]));
    assert!(!ok && err.contains("pod default/nobody not found"), "{err}");
}
