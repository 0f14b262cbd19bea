//! A DNS server answering a synthetic cluster from a snapshot, with no API server: for profiling
//! the request path quickly (`perf record -p`), next to `dnsperf`. Not the benchmark of record
//! (`bench/dns.sh` is: it serves from list+watch of a real `svcnet up` and runs Knot beside it).
//!
//! `cargo run --release -p svcnet-dns --example serve_synthetic -- [SERVICES] [QUERY_FILE]`
//! serves on a free loopback port (printed), with SERVICES Services (default 10,000) in 10
//! namespaces, every tenth headless with ten ready endpoints, the rest with ten endpoints and a
//! ClusterIP, and a pod per endpoint; it writes a dnsperf query file (default
//! `/tmp/svcnet-dns-queries.txt`) of the benchmark's mix, and serves until killed.

use std::fmt::Write as _;

use serde_json::json;
use svcnet_dns::{DnsConfig, DnsServer, Index, snapshot::parse_zone};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let queries = args.next().unwrap_or_else(|| "/tmp/svcnet-dns-queries.txt".to_string());
    let mut index = Index::new(parse_zone("cluster.local")?, 5);
    let ip = |n: usize| format!("10.{}.{}.{}", 128 + (n >> 16) % 64, (n >> 8) % 256, n % 256);
    for s in 0..services {
        let ns = format!("ns-{}", s % 10);
        let headless = s % 10 == 0;
        let cluster_ip = if headless { "None".to_string() } else { format!("10.96.{}.{}", s / 250, 1 + s % 250) };
        let svc = json!({"metadata": {"name": format!("svc-{s}"), "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
        index.apply_service(&serde_json::from_value(svc)?);
        let endpoints: Vec<_> = (0..10).map(|p| json!({"addresses": [ip(s * 10 + p)], "conditions": {"ready": true}})).collect();
        let slice = json!({"metadata": {"name": format!("svc-{s}-abc"), "namespace": ns, "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
            "addressType": "IPv4", "endpoints": endpoints});
        index.apply_endpoint_slice(&serde_json::from_value(slice)?);
        for p in 0..10 {
            let pod = json!({"metadata": {"name": format!("svc-{s}-{p}"), "namespace": ns}, "status": {"podIP": ip(s * 10 + p)}});
            index.apply_pod(&serde_json::from_value(pod)?);
        }
    }
    let mut text = String::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..100_000 {
        let roll = next(100);
        let s = next(services);
        let ns = s % 10;
        match roll {
            0..60 => writeln!(text, "svc-{}.ns-{}.svc.cluster.local A", s - s % 10 + 1 + s % 9, (s - s % 10 + 1 + s % 9) % 10)?,
            60..65 => writeln!(text, "svc-{}.ns-0.svc.cluster.local A", s - s % 10)?,
            65..70 => writeln!(text, "{}.ns-{ns}.pod.cluster.local A", ip(s * 10 + next(10)).replace('.', "-"))?,
            70..80 => writeln!(text, "_http._tcp.svc-{}.ns-{}.svc.cluster.local SRV", s - s % 10 + 1, (s - s % 10 + 1) % 10)?,
            _ => writeln!(text, "example.com.ns-{ns}.svc.cluster.local A")?,
        }
    }
    std::fs::write(&queries, text)?;
    let config = DnsConfig { listen: vec!["127.0.0.1:0".parse()?], upstreams: vec![], ..DnsConfig::default() };
    let server = DnsServer::bind(config).await?;
    server.snapshots().publish(index.snapshot(1));
    println!("serving {services} Services on {}; queries in {queries}", server.local_addr());
    server.serve_snapshots().await?;
    Ok(())
}
