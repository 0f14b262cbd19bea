//! `ipBlock`: a CIDR minus its `except` CIDRs, as an address test and as disjoint IPv4 intervals
//! (what the nftables sets hold).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::{Error, Result};

/// `NetworkPolicyPeer.ipBlock`: every address in `cidr` that is in none of `except`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

/// An inclusive range of IPv4 addresses, as host-order integers.
pub type V4Range = (u32, u32);

// === impl IpBlock ===

impl IpBlock {
    /// Parses `cidr` and `except` as the API does (host bits may be set; they are ignored).
    pub fn parse(cidr: &str, except: &[String]) -> Result<IpBlock> {
        let net = |s: &str| s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| Error::InvalidCidr(s.to_owned()));
        Ok(IpBlock { cidr: net(cidr)?, except: except.iter().map(|e| net(e)).collect::<Result<_>>()? })
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }

    /// The `except` entry that excludes `ip`, if `ip` is in `cidr` but excluded.
    pub fn excluded_by(&self, ip: IpAddr) -> Option<&IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        self.except.iter().find(|e| e.contains(&ip))
    }

    /// The IPv4 addresses of the block as sorted, disjoint, non-adjacent inclusive ranges (empty
    /// for an IPv6 block).
    pub fn v4_ranges(&self) -> Vec<V4Range> {
        let IpNet::V4(cidr) = self.cidr else { return Vec::new() };
        let mut holes: Vec<V4Range> = self
            .except
            .iter()
            .filter_map(|e| match e {
                IpNet::V4(e) => Some(v4_range(e)),
                IpNet::V6(_) => None,
            })
            .collect();
        subtract(v4_range(&cidr), &mut holes)
    }
}

impl std::fmt::Display for IpBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ipBlock {}", self.cidr)?;
        if !self.except.is_empty() {
            let except: Vec<String> = self.except.iter().map(ToString::to_string).collect();
            write!(f, " except {}", except.join(","))?;
        }
        Ok(())
    }
}

/// The inclusive range a v4 network covers.
pub fn v4_range(net: &Ipv4Net) -> V4Range {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// The range of one address.
pub fn v4_single(ip: Ipv4Addr) -> V4Range {
    let n = u32::from(ip);
    (n, n)
}

/// `range` minus the union of `holes`, as sorted disjoint ranges.
fn subtract(range: V4Range, holes: &mut [V4Range]) -> Vec<V4Range> {
    holes.sort_unstable();
    let mut out = Vec::new();
    // `next` is the first address not yet decided; u64 so that it can pass u32::MAX.
    let mut next = u64::from(range.0);
    let end = u64::from(range.1);
    for &(hs, he) in holes.iter() {
        let (hs, he) = (u64::from(hs), u64::from(he));
        if he < next || hs > end {
            continue;
        }
        if hs > next {
            out.push((next as u32, (hs - 1) as u32));
        }
        next = next.max(he + 1);
    }
    if next <= end {
        out.push((next as u32, end as u32));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn except_inside_cidr() {
        let b = IpBlock::parse("10.0.0.0/16", &["10.0.1.0/24".into(), "10.0.0.7/32".into()]).unwrap();
        assert!(b.contains("10.0.2.3".parse().unwrap()));
        assert!(!b.contains("10.0.1.3".parse().unwrap()));
        assert!(!b.contains("10.0.0.7".parse().unwrap()));
        assert!(!b.contains("10.1.0.0".parse().unwrap()));
        let r: Vec<(Ipv4Addr, Ipv4Addr)> = b.v4_ranges().into_iter().map(|(a, z)| (a.into(), z.into())).collect();
        let s = |x: &str| x.parse::<Ipv4Addr>().unwrap();
        assert_eq!(r, vec![(s("10.0.0.0"), s("10.0.0.6")), (s("10.0.0.8"), s("10.0.0.255")), (s("10.0.2.0"), s("10.0.255.255"))]);
    }

    #[test]
    fn host_bits_and_whole_space() {
        let b = IpBlock::parse("10.0.0.9/8", &[]).unwrap();
        assert_eq!(b.cidr.to_string(), "10.0.0.0/8");
        let all = IpBlock::parse("0.0.0.0/0", &["255.255.255.255/32".into()]).unwrap();
        assert_eq!(all.v4_ranges(), vec![(0, u32::MAX - 1)]);
        assert!(IpBlock::parse("10.0.0.0/33", &[]).is_err());
        assert!(IpBlock::parse("fd00::/8", &[]).unwrap().v4_ranges().is_empty());
    }

    fn arb_net() -> impl Strategy<Value = Ipv4Net> {
        // A small space so that random addresses often land in blocks and holes.
        (0u32..4096, 20u8..=32).prop_map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | a), len).unwrap().trunc())
    }

    proptest! {
        /// The intervals hold exactly the addresses `contains` accepts, and are sorted, disjoint
        /// and non-adjacent.
        #[test]
        fn ranges_agree_with_contains(cidr in arb_net(), except in proptest::collection::vec(arb_net(), 0..4), probes in proptest::collection::vec(0u32..4096, 1..40)) {
            let b = IpBlock { cidr: IpNet::V4(cidr), except: except.into_iter().map(IpNet::V4).collect() };
            let ranges = b.v4_ranges();
            for w in ranges.windows(2) {
                prop_assert!(u64::from(w[0].1) + 1 < u64::from(w[1].0));
            }
            for p in probes {
                let ip = Ipv4Addr::from(0x0a00_0000 | p);
                let n = u32::from(ip);
                let in_ranges = ranges.iter().any(|&(a, z)| a <= n && n <= z);
                prop_assert_eq!(in_ranges, b.contains(IpAddr::V4(ip)));
                prop_assert_eq!(b.excluded_by(IpAddr::V4(ip)).is_some(), cidr.contains(&ip) && !in_ranges);
            }
        }
    }
}
