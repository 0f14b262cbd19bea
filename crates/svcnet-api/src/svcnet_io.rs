//! svcnet's own API group, `svcnet.io/v1alpha1`: configuration that Kubernetes has no type for.
//!
//! [`IPAddressPool`]: the addresses LoadBalancer Services get (what MetalLB's pools are on
//! premises). Cluster-scoped, because a pool serves Services of every namespace it selects.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A pool of addresses for `type: LoadBalancer` Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.svcnet.v1alpha1.IPAddressPool")]
pub struct IPAddressPool {
    /// `svcnet.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `IPAddressPool`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: IPAddressPoolSpec,
}

/// What a pool hands out, and to which Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.svcnet.v1alpha1.IPAddressPoolSpec")]
pub struct IPAddressPoolSpec {
    /// Address ranges: CIDRs (`172.30.255.0/28`) or inclusive ranges
    /// (`172.30.255.200-172.30.255.250`). The network and broadcast addresses of a CIDR are
    /// handed out too, as MetalLB does: these are not on a subnet of their own.
    pub addresses: Vec<String>,
    /// Whether Services that do not ask for an address or a pool get one from here. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Only Services matching one of these selectors get addresses from this pool (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Only Services in these namespaces get addresses from this pool (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

impl k8s_openapi::Resource for IPAddressPool {
    const API_VERSION: &'static str = "svcnet.io/v1alpha1";
    const GROUP: &'static str = "svcnet.io";
    const KIND: &'static str = "IPAddressPool";
    const VERSION: &'static str = "v1alpha1";
    const URL_PATH_SEGMENT: &'static str = "ipaddresspools";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for IPAddressPool {
    const LIST_KIND: &'static str = "IPAddressPoolList";
}

impl k8s_openapi::Metadata for IPAddressPool {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// One entry of `spec.addresses`, parsed: the first and last address, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddressRange {
    /// Parses `a.b.c.d/n` or `first-last` (same family, first <= last).
    pub fn parse(s: &str) -> Result<AddressRange, String> {
        let s = s.trim();
        if let Some((first, last)) = s.split_once('-') {
            let first: IpAddr = first.trim().parse().map_err(|_| format!("invalid range {s:?}: {first:?} is not an IP address"))?;
            let last: IpAddr = last.trim().parse().map_err(|_| format!("invalid range {s:?}: {last:?} is not an IP address"))?;
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("invalid range {s:?}: both ends must be of the same IP family"));
            }
            if to_u128(first) > to_u128(last) {
                return Err(format!("invalid range {s:?}: the first address is after the last"));
            }
            return Ok(AddressRange { first, last });
        }
        let (ip, len) = s.split_once('/').ok_or_else(|| format!("invalid address range {s:?}: expected a CIDR or FIRST-LAST"))?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = len.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("invalid CIDR {s:?}"))?;
        let host_bits = bits - len;
        let mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let base = to_u128(ip) & !mask;
        Ok(AddressRange { first: from_u128(base, ip.is_ipv4()), last: from_u128(base | mask, ip.is_ipv4()) })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4() && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(ip))
    }

    /// How many addresses the range holds (saturating).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The addresses in order.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.first.is_ipv4();
        (to_u128(self.first)..=to_u128(self.last)).map(move |n| from_u128(n, v4))
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_cidrs() {
        let r = AddressRange::parse("172.30.255.200-172.30.255.250").unwrap();
        assert_eq!(r.len(), 51);
        assert!(r.contains("172.30.255.210".parse().unwrap()));
        assert!(!r.contains("172.30.255.251".parse().unwrap()));
        let c = AddressRange::parse("10.0.0.5/30").unwrap();
        assert_eq!(c.iter().map(|i| i.to_string()).collect::<Vec<_>>(), ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"]);
        assert!(AddressRange::parse("10.0.0.9-10.0.0.1").is_err());
        assert!(AddressRange::parse("10.0.0.1-fd00::1").is_err());
        assert!(AddressRange::parse("10.0.0.0/33").is_err());
        assert!(AddressRange::parse("nonsense").is_err());
        assert_eq!(AddressRange::parse("fd00::/126").unwrap().len(), 4);
    }
}
