//! Drop counters: each isolated pod's chain counts what it drops, in a named counter with the
//! chain's name (`in_<ns>_<pod>`, `eg_<ns>_<pod>`); read with `nft -j` and rendered for
//! `/metrics`.

use std::fmt::Write as _;

use crate::model::Direction;
use crate::nft::TABLE;
use crate::runner::nft_command;
use crate::{Error, Result};

/// One pod's drops in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounter {
    pub direction: Direction,
    pub namespace: String,
    pub pod: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the counters of the table in `netns` (or the current namespace).
pub async fn read_drop_counters(netns: Option<&str>) -> Result<Vec<DropCounter>> {
    let out = nft_command(netns, &["-j", "list", "counters", "table", "inet", TABLE], None).await?;
    parse_counters(&out)
}

/// The drop counters of the table in `netns` in Prometheus' text format, for a `/metrics`
/// endpoint (empty when the table does not exist yet).
pub async fn metrics_text(netns: Option<&str>) -> Result<String> {
    match read_drop_counters(netns).await {
        Ok(c) => Ok(render(&c)),
        Err(Error::Nft(e)) if e.contains("No such file or directory") => Ok(render(&[])),
        Err(e) => Err(e),
    }
}

/// Parses `nft -j list counters` output.
pub fn parse_counters(json: &str) -> Result<Vec<DropCounter>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::Decode(format!("nft -j output: {e}")))?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(c) = item.get("counter") else { continue };
        let name = c["name"].as_str().unwrap_or_default();
        let (direction, rest) = match name.split_once('_') {
            Some(("in", rest)) => (Direction::Ingress, rest),
            Some(("eg", rest)) => (Direction::Egress, rest),
            _ => continue,
        };
        let Some((namespace, pod)) = rest.split_once('_') else { continue };
        out.push(DropCounter {
            direction,
            namespace: namespace.into(),
            pod: pod.into(),
            packets: c["packets"].as_u64().unwrap_or(0),
            bytes: c["bytes"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

/// The counters in Prometheus' text format.
pub fn render(counters: &[DropCounter]) -> String {
    let mut s = String::new();
    for (metric, help, value) in [
        (
            "svcnet_netpol_dropped_packets_total",
            "Packets dropped by NetworkPolicy, by isolated pod and direction.",
            (|c: &DropCounter| c.packets) as fn(&DropCounter) -> u64,
        ),
        ("svcnet_netpol_dropped_bytes_total", "Bytes dropped by NetworkPolicy, by isolated pod and direction.", |c: &DropCounter| c.bytes),
    ] {
        let _ = writeln!(s, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for c in counters {
            let dir = if c.direction == Direction::Ingress { "ingress" } else { "egress" };
            let _ = writeln!(s, "{metric}{{direction=\"{dir}\",namespace=\"{}\",pod=\"{}\"}} {}", c.namespace, c.pod, value(c));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "in_x_a.b-c", "table": "svcnet-netpol", "handle": 3, "packets": 4, "bytes": 240}}, {"counter": {"name": "eg_y_b", "packets": 1, "bytes": 60}}]}"#;
        let c = parse_counters(json).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].direction, c[0].namespace.as_str(), c[0].pod.as_str(), c[0].packets), (Direction::Ingress, "x", "a.b-c", 4));
        let text = render(&c);
        assert!(text.contains("svcnet_netpol_dropped_packets_total{direction=\"ingress\",namespace=\"x\",pod=\"a.b-c\"} 4\n"), "{text}");
        assert!(text.contains("svcnet_netpol_dropped_bytes_total{direction=\"egress\",namespace=\"y\",pod=\"b\"} 60\n"), "{text}");
    }
}
