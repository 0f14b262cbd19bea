//! The seed's backend-policy scenario (section 7d.7), read from YAML as `svcnet policy matrix
//! --offline` reads it: the matrix and the explanations a new user sees.

use std::path::Path;

use svcnet_netpol::matrix::Matrix;
use svcnet_netpol::objects::Objects;
use svcnet_netpol::{Endpoint, PodKey, PortProtocol};

fn cluster() -> svcnet_netpol::Cluster {
    let objects = Objects::read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed")).unwrap();
    let (c, errors) = objects.cluster();
    assert!(errors.is_empty(), "{errors:?}");
    c
}

fn pod(name: &str) -> Endpoint {
    Endpoint::Pod(PodKey::new("default", name))
}

#[test]
fn backend_policy_matrix() {
    let c = cluster();
    let ports = [PortProtocol::parse("8000/TCP").unwrap(), PortProtocol::parse("5432/TCP").unwrap()];
    let m = Matrix::compute(&c, &[], &ports);
    let text = m.to_text();
    // Rows from, columns to; pods sorted by name: backend, database, frontend, other.
    let want = "\
8000/TCP  (rows: from, columns: to; . allowed, X denied)
                  default/backend default/database default/frontend    default/other
default/backend                 X                X                X                X
default/database                X                .                .                .
default/frontend                .                .                .                .
default/other                   X                .                .                .

5432/TCP  (rows: from, columns: to; . allowed, X denied)
                  default/backend default/database default/frontend    default/other
default/backend                 X                .                X                X
default/database                X                .                .                .
default/frontend                X                .                .                .
default/other                   X                .                .                .

";
    assert_eq!(text, want, "\n{text}");
    let svg = m.to_svg("NetworkPolicy connectivity: default/backend-policy");
    // To look at it: SVCNET_MATRIX_SVG=/tmp/seed.svg cargo test -p svcnet-netpol --test seed.
    if let Some(path) = std::env::var_os("SVCNET_MATRIX_SVG") {
        std::fs::write(path, &svg).unwrap();
    }
    assert!(svg.starts_with("<svg") && svg.contains("default/frontend -&gt; default/backend 8000/TCP: allowed"), "{svg}");
}

#[test]
fn explanations() {
    let c = cluster();
    let v = c.evaluate(&pod("frontend"), &pod("backend"), PortProtocol::parse("8000/TCP").unwrap());
    assert!(v.allowed());
    assert_eq!(
        c.explain(&v),
        "\
default/frontend -> default/backend on 8000/TCP: ALLOWED
  egress of default/frontend: allowed, no NetworkPolicy selects it for this direction (not isolated)
  ingress of default/backend: allowed; isolated by default/backend-policy
    allowed by default/backend-policy ingress[0]: from pods [app=frontend] in the policy's namespace; ports 8000/TCP
"
    );
    let v = c.evaluate(&pod("other"), &pod("backend"), PortProtocol::parse("8000/TCP").unwrap());
    assert!(!v.allowed());
    assert_eq!(
        c.explain(&v),
        "\
default/other -> default/backend on 8000/TCP: DENIED
  egress of default/other: allowed, no NetworkPolicy selects it for this direction (not isolated)
  ingress of default/backend: DENIED; isolated by default/backend-policy, and no rule allows it
    default/backend-policy ingress[0]: peer does not match (from pods [app=frontend] in the policy's namespace; ports 8000/TCP)
"
    );
    let v = c.evaluate(&pod("backend"), &pod("other"), PortProtocol::parse("53/UDP").unwrap());
    assert!(!v.allowed());
    assert!(c.explain(&v).contains("default/backend-policy egress[0]: neither peer nor port matches"), "{}", c.explain(&v));
    assert!(c.evaluate(&pod("backend"), &pod("database"), PortProtocol::parse("5432/TCP").unwrap()).allowed());
    // An outside address is judged by the backend's egress only.
    let v = c.evaluate(&pod("backend"), &Endpoint::Ip("192.0.2.1".parse().unwrap()), PortProtocol::parse("5432/TCP").unwrap());
    assert!(!v.allowed() && c.explain(&v).contains("192.0.2.1: not a pod"), "{}", c.explain(&v));
}
