//! The node's own nftables table, `inet svcnet-node`: masquerade of pod traffic leaving the
//! cluster. Applied with the `nft` program run inside the node's namespace; no other table is
//! read or changed.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use svcnet_netns::NetNs;

use super::{Error, NFT_TABLE, Result};

/// The table's whole content: masquerade what pods of `pod_cidr` send to addresses outside
/// `cluster_cidr` (and outside `pod_cidr`, should it not be inside the cluster CIDR).
///
/// Replacing the table is one transaction (`table` + `delete table` + the new table in one
/// `nft -f`), so its rules are never half there.
pub fn masquerade_ruleset(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> String {
    format!(
        "table inet {NFT_TABLE}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pod_cidr} ip daddr != {cluster_cidr} ip daddr != {pod_cidr} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Removes the table if it exists.
pub fn delete_ruleset() -> String {
    format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
}

/// Runs `nft -f -` with `script` inside `netns`. The child is forked from a thread that has
/// entered the namespace, so it starts there.
pub fn apply(netns: &NetNs, script: &str) -> Result<()> {
    let output = netns.run_in(|| -> std::io::Result<std::process::Output> {
        let mut child = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        child.stdin.take().expect("piped stdin").write_all(script.as_bytes())?;
        child.wait_with_output()
    })?;
    let output = output.map_err(|e| Error::Nft(format!("running nft: {e}")))?;
    if !output.status.success() {
        return Err(Error::Nft(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset() {
        let script = masquerade_ruleset("10.244.1.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap());
        assert_eq!(
            script,
            "table inet svcnet-node\n\
             delete table inet svcnet-node\n\
             table inet svcnet-node {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 ip daddr != 10.244.1.0/24 masquerade\n\
             \t}\n\
             }\n"
        );
    }
}
