//! The engine against upstream's e2e expectations, case by case, and the nftables compiler
//! against the engine for every cell of every step.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use support::*;
use svcnet_netpol::matrix::Matrix;
use svcnet_netpol::nft::{self, CompileOptions};

#[test]
fn upstream_e2e_cases() {
    let env = Env { base: Ipv4Addr::new(10, 244, 0, 0) };
    let mut failures = Vec::new();
    let cases = cases(&env);
    assert!(cases.len() >= 40, "{}", cases.len());
    for case in cases {
        let mut state = State::default();
        for (i, step) in case.steps.iter().enumerate() {
            for c in &step.changes {
                state.apply(c);
            }
            let cluster = env.cluster(&state);
            let predicted = Matrix::compute(&cluster, &[], &ports());
            let want = expected(&env, &step.expect);
            let diff = diff_off_diagonal(&predicted, &want);
            if !diff.is_empty() {
                failures.push(format!("{} step {i}: engine differs from upstream's expectation:\n  {}", case.name, diff.join("\n  ")));
            }
            // The compiled table decides every cell as the engine does.
            let state_nft = nft::compile(&cluster, &CompileOptions::default());
            for port in ports() {
                for f in env.all_pods() {
                    for t in env.all_pods() {
                        let (sip, dip) = (env.ip(&f.to_string()), env.ip(&t.to_string()));
                        let (eg, ing) = nft::lookup(&state_nft, sip, dip, port.protocol.number(), port.port);
                        let v = cluster.evaluate(&svcnet_netpol::Endpoint::Ip(IpAddr::V4(sip)), &svcnet_netpol::Endpoint::Ip(IpAddr::V4(dip)), port);
                        if (eg, ing) != (v.egress.allowed(), v.ingress.allowed()) {
                            failures.push(format!("{} step {i}: nft {f} -> {t} {port}: egress {eg} ingress {ing}, engine {v:?}", case.name));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
