//! NetworkPolicy enforced in the kernel: upstream's e2e cases run against real namespaces, the
//! runner and an in-process API server; for every step what the probes observe must equal the
//! engine's matrix (which `engine_cases` holds to upstream's expectations).

mod support;

use std::time::Duration;

use anyhow::{Result, bail};
use support::topo::Topology;
use support::*;
use svcnet_netpol::matrix::Matrix;

/// Runs cases `range` of the suite in one topology.
async fn run_cases(tag: &str, subnet: u8, pick: impl Fn(usize) -> bool) -> Result<()> {
    let mut topo = Topology::new(tag, subnet, false).await?;
    let env = topo.env.clone();
    let mut failures = Vec::new();
    let mut ran = 0;
    let (mut denied_seen, mut allowed_seen) = (0usize, 0usize);
    for (i, case) in cases(&env).into_iter().enumerate().filter(|(i, _)| pick(*i)) {
        for (s, step) in case.steps.iter().enumerate() {
            topo.change(&step.changes).await?;
            topo.wait_applied().await?;
            let predicted = Matrix::compute(&env.cluster(&topo.state), &[], &ports());
            let mut observed = topo.probe_all(&ports());
            // A probe can be lost (a dropped datagram looks like a denial); re-probe differing
            // cells a few times before calling it a failure.
            for _ in 0..3 {
                if diff_off_diagonal(&observed, &predicted).is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                observed = topo.probe_all(&ports());
            }
            for p in &observed.allowed {
                for (f, row) in p.iter().enumerate() {
                    for (t, ok) in row.iter().enumerate() {
                        if f != t {
                            if *ok { allowed_seen += 1 } else { denied_seen += 1 }
                        }
                    }
                }
            }
            let diff = diff_off_diagonal(&observed, &predicted);
            if !diff.is_empty() {
                failures.push(format!("case {i} {:?} step {s}: observed vs predicted:\n  {}\n{}", case.name, diff.join("\n  "), observed.to_text()));
            }
            ran += 1;
        }
        topo.reset().await?;
    }
    if !failures.is_empty() {
        bail!("{} of {ran} steps differ:\n{}", failures.len(), failures.join("\n"));
    }
    // The probes saw both outcomes, so they can tell enforcement from its absence.
    assert!(denied_seen > 0 && allowed_seen > 0, "denied {denied_seen}, allowed {allowed_seen}");
    eprintln!("{ran} steps: observed = predicted ({allowed_seen} cells allowed, {denied_seen} denied)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_1() -> Result<()> {
    run_cases("e1", 101, |i| i % 4 == 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_2() -> Result<()> {
    run_cases("e2", 102, |i| i % 4 == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_3() -> Result<()> {
    run_cases("e3", 103, |i| i % 4 == 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_4() -> Result<()> {
    run_cases("e4", 104, |i| i % 4 == 3).await
}
