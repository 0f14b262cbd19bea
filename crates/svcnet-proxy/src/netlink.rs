//! The ruleset's elements and dynamic chains as nf_tables netlink messages
//! ([`svcnet_netns::nf_tables`]): what a full sync loads after the skeleton, and what an
//! incremental sync changes. Pure: builds [`Batch`]es; [`crate::nft`] commits them.
//!
//! Elements are kept as nft text by [`Ruleset`] (that text is what the snapshot tests read);
//! here each is parsed once into the bytes the kernel stores, laid out as the set was declared:
//! every component of a concatenation in its own 4-byte slot, addresses and ports in network
//! order, marks and the random index in host order. `tests/netlink.rs` loads the same ruleset
//! both ways (this, and `nft -f` of [`Ruleset::full_script`]) and compares what the kernel lists.

use std::net::IpAddr;

use ipnet::IpNet;
use svcnet_netns::nf_tables::{self, Batch, Data, Element, Expr, MetaKey, PayloadBase, Register, Verdict};

use crate::ruleset::{DynamicChain, Family, Ruleset, SetName, TABLE, Transaction};

const INET: nf_tables::Family = nf_tables::Family::Inet;

/// nft's datatype number for `inet_proto` (how listings show an anonymous set's keys).
const TYPE_INET_PROTOCOL: u32 = 12;

/// An element the ruleset rendered that does not fit its set (a bug, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("element {key:?} of {set}: {reason}")]
pub struct EncodeError {
    pub set: String,
    pub key: String,
    pub reason: &'static str,
}

/// Everything after the skeleton, in one transaction: the dynamic chains the ruleset needs
/// that `existing` lacks, every element set and map flushed and refilled (the session-affinity
/// maps flushed: their path ids are this process's), the node's addresses, and the dynamic
/// chains in `existing` no longer needed deleted last.
pub fn full_sync(ruleset: &Ruleset, existing: &[String]) -> Result<Batch, EncodeError> {
    let mut batch = Batch::new();
    let needed: Vec<DynamicChain> = ruleset.dynamic_chains().collect();
    for chain in &needed {
        if !existing.iter().any(|name| *name == chain.name()) {
            add_chain(&mut batch, *chain);
        }
    }
    for f in Family::ALL {
        let set = format!("node-ips-{}", f.suffix());
        batch.flush_set(INET, TABLE, &set);
        let mut elements = batch.add_elements(INET, TABLE, &set);
        for ip in ruleset.config().node_ips.iter().filter(|ip| Family::of(ip) == f) {
            elements.push(&Element { key: &octets(ip), key_end: None, data: Data::None });
        }
        drop(elements);
        batch.flush_set(INET, TABLE, &format!("affinity-{}", f.suffix()));
    }
    let mut by_set: std::collections::BTreeMap<SetName, Vec<(&str, &str)>> = std::collections::BTreeMap::new();
    for (set, key, value) in ruleset.elements() {
        by_set.entry(set).or_default().push((key, value));
    }
    for set in SetName::all() {
        batch.flush_set(INET, TABLE, &set.name());
    }
    let mut encoder = Encoder::default();
    for (set, elements) in &by_set {
        let name = set.name();
        let mut out = batch.add_elements(INET, TABLE, &name);
        for (key, value) in elements {
            encoder.encode(*set, key, value)?;
            out.push(&encoder.element(*set));
        }
    }
    for name in existing {
        if let Some(chain) = DynamicChain::parse(name)
            && !chain.is_preset()
            && !needed.contains(&chain)
        {
            batch.delete_chain(INET, TABLE, name);
        }
    }
    Ok(batch)
}

/// One incremental transaction.
pub fn transaction(tx: &Transaction) -> Result<Batch, EncodeError> {
    let mut batch = Batch::new();
    for chain in &tx.add_chains {
        add_chain(&mut batch, *chain);
    }
    let mut encoder = Encoder::default();
    for (set, keys) in &tx.deletes {
        let name = set.name();
        let mut out = batch.delete_elements(INET, TABLE, &name);
        for key in keys {
            encoder.encode(*set, key, "")?;
            out.push(&encoder.element(*set));
        }
    }
    for (set, elements) in &tx.adds {
        let name = set.name();
        let mut out = batch.add_elements(INET, TABLE, &name);
        for (key, value) in elements {
            encoder.encode(*set, key, value)?;
            out.push(&encoder.element(*set));
        }
    }
    for chain in &tx.delete_chains {
        batch.delete_chain(INET, TABLE, &chain.name());
    }
    Ok(batch)
}

/// A dynamic chain and its rule, as [`DynamicChain::rules`] writes it for nft.
fn add_chain(batch: &mut Batch, chain: DynamicChain) {
    let name = chain.name();
    batch.add_chain(INET, TABLE, &name);
    let r1 = Register::slot(0);
    match chain {
        // meta l4proto { tcp, udp, sctp } dnat ip to meta mark . numgen random mod N map @endpoints-v4
        DynamicChain::Pick(f, n) => {
            let protocols = batch.add_anonymous_set(INET, TABLE, TYPE_INET_PROTOCOL, &[&[6], &[17], &[132]]);
            let endpoints = SetName::Endpoints(f).name();
            // The map's data is the address then the port: slots 0-0 and 1 for IPv4, 0-3 and 4
            // for IPv6.
            let (family, port) = match f {
                Family::V4 => (nf_tables::Family::Ip, Register::slot(1)),
                Family::V6 => (nf_tables::Family::Ip6, Register::slot(4)),
            };
            batch.add_rule(
                INET,
                TABLE,
                &name,
                &[
                    Expr::Meta { key: MetaKey::L4proto, dreg: r1 },
                    Expr::Lookup { set: "__set%d", set_id: Some(protocols), sreg: r1, dreg: None },
                    Expr::Meta { key: MetaKey::Mark, dreg: r1 },
                    Expr::NumgenRandom { dreg: Register::slot(1), modulus: n },
                    Expr::Lookup { set: &endpoints, set_id: None, sreg: r1, dreg: Some(r1) },
                    Expr::Dnat { family, addr: r1, proto: port },
                ],
            );
        }
        // update @affinity-v4 { meta mark . ip saddr timeout Ns : ip daddr . th dport } (IPv4 only,
        // as in `ruleset::affinity_rules`)
        DynamicChain::Affinity(timeout) => {
            batch.add_rule(
                INET,
                TABLE,
                &name,
                &[
                    Expr::Meta { key: MetaKey::Nfproto, dreg: r1 },
                    Expr::CmpEq { sreg: r1, data: &[2] },
                    Expr::Meta { key: MetaKey::Mark, dreg: r1 },
                    Expr::Payload { base: PayloadBase::Network, offset: 12, len: 4, dreg: Register::slot(1) },
                    Expr::Payload { base: PayloadBase::Network, offset: 16, len: 4, dreg: Register::slot(4) },
                    Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2, dreg: Register::slot(5) },
                    Expr::DynsetUpdate { set: "affinity-v4", key: r1, data: Register::slot(4), timeout_ms: u64::from(timeout) * 1000 },
                ],
            );
        }
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// The kinds of component in keys and data.
#[derive(Clone, Copy)]
enum Part {
    Ip,
    Protocol,
    Port,
    /// A path id (`meta mark`) or a random index: 32 bits, host order.
    Number,
    /// The last component of an interval key: a prefix, as its first and last address.
    Range,
}

/// The layout of a set's elements.
fn layout(set: SetName) -> (&'static [Part], Option<&'static [Part]>, bool) {
    use Part::*;
    const FRONTEND: &[Part] = &[Ip, Protocol, Port];
    const NODE_PORT: &[Part] = &[Protocol, Port];
    const ID: &[Part] = &[Number];
    // (key, value data, verdict data)
    match set {
        SetName::ServiceIps(_) => (FRONTEND, Some(ID), false),
        SetName::NodePorts => (NODE_PORT, Some(ID), false),
        SetName::Endpoints(_) => (&[Number, Number], Some(&[Ip, Port]), false),
        SetName::EndpointCounts(_) | SetName::AffinityIds => (ID, None, true),
        SetName::MasqueradeIds | SetName::ClusterIpIds => (ID, None, false),
        SetName::ClusterIps(_) => (&[Ip], None, false),
        SetName::Hairpin(_) => (&[Ip, Ip], None, false),
        SetName::NoEndpointServices(_) => (FRONTEND, None, true),
        SetName::NoEndpointNodePorts => (NODE_PORT, None, true),
        SetName::Firewall(_) => (FRONTEND, None, false),
        SetName::FirewallAllow(_) => (&[Ip, Protocol, Port, Range], None, false),
    }
}

/// Reusable buffers for one element at a time.
#[derive(Default)]
struct Encoder {
    key: Vec<u8>,
    key_end: Vec<u8>,
    data: Vec<u8>,
    verdict: Option<(i8, String)>,
}

impl Encoder {
    fn encode(&mut self, set: SetName, key: &str, value: &str) -> Result<(), EncodeError> {
        let error = |reason| EncodeError { set: set.name(), key: key.to_string(), reason };
        let (key_parts, data_parts, verdict) = layout(set);
        self.key.clear();
        self.key_end.clear();
        self.data.clear();
        self.verdict = None;
        let mut tokens = key.split(" . ");
        for part in key_parts {
            let token = tokens.next().ok_or_else(|| error("too few components"))?;
            write_part(&mut self.key, Some(&mut self.key_end), *part, token).ok_or_else(|| error("a component does not parse"))?;
        }
        if tokens.next().is_some() {
            return Err(error("too many components"));
        }
        if value.is_empty() {
            return Ok(());
        }
        if let Some(parts) = data_parts {
            let mut tokens = value.split(" . ");
            for part in parts {
                let token = tokens.next().ok_or_else(|| error("too few components in the value"))?;
                write_part(&mut self.data, None, *part, token).ok_or_else(|| error("a value component does not parse"))?;
            }
        } else if verdict {
            self.verdict = Some(match value.split_once(' ') {
                Some(("goto", chain)) => (1, chain.to_string()),
                Some(("jump", chain)) => (2, chain.to_string()),
                None if value == "drop" => (0, String::new()),
                None if value == "accept" => (3, String::new()),
                _ => return Err(error("not a verdict")),
            });
        }
        Ok(())
    }

    fn element(&self, set: SetName) -> Element<'_> {
        let interval = matches!(set, SetName::FirewallAllow(_));
        let data = match &self.verdict {
            Some((0, _)) => Data::Verdict(Verdict::Drop),
            Some((1, chain)) => Data::Verdict(Verdict::Goto(chain)),
            Some((2, chain)) => Data::Verdict(Verdict::Jump(chain)),
            Some(_) => Data::Verdict(Verdict::Accept),
            None if self.data.is_empty() => Data::None,
            None => Data::Value(&self.data),
        };
        Element { key: &self.key, key_end: interval.then_some(self.key_end.as_slice()), data }
    }
}

/// Appends one component (padded to 4 bytes) to `out`, and to `end` the same component for the
/// end of an interval (the last address of a range). `None` when it does not parse.
fn write_part(out: &mut Vec<u8>, end: Option<&mut Vec<u8>>, part: Part, token: &str) -> Option<()> {
    let start = out.len();
    let mut end_bytes: Option<Vec<u8>> = None;
    match part {
        Part::Ip => out.extend_from_slice(&octets(&token.parse::<IpAddr>().ok()?)),
        Part::Protocol => out.push(match token {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => return None,
        }),
        Part::Port => out.extend_from_slice(&token.parse::<u16>().ok()?.to_be_bytes()),
        Part::Number => out.extend_from_slice(&token.parse::<u32>().ok()?.to_ne_bytes()),
        Part::Range => {
            let net: IpNet = token.parse().ok()?;
            out.extend_from_slice(&octets(&net.network()));
            end_bytes = Some(octets(&net.broadcast()));
        }
    }
    out.resize(out.len().next_multiple_of(4), 0);
    if let Some(end) = end {
        match end_bytes {
            Some(bytes) => end.extend_from_slice(&bytes),
            None => end.extend_from_slice(&out[start..]),
        }
        end.resize(end.len().next_multiple_of(4), 0);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(set: SetName, key: &str, value: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut encoder = Encoder::default();
        encoder.encode(set, key, value).unwrap();
        (encoder.key, encoder.key_end, encoder.data)
    }

    #[test]
    fn keys_and_data_take_four_byte_slots_in_the_kernel_byte_orders() {
        let (key, _, data) = encoded(SetName::ServiceIps(Family::V4), "10.96.0.1 . udp . 53", "7");
        assert_eq!(key, [10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(data, 7u32.to_ne_bytes());
        let (key, _, data) = encoded(SetName::Endpoints(Family::V6), "7 . 3", "fd00::1 . 8080");
        assert_eq!(key, [7u32.to_ne_bytes(), 3u32.to_ne_bytes()].concat());
        assert_eq!(data.len(), 20);
        assert_eq!(&data[16..], [0x1f, 0x90, 0, 0]);
        let (key, end, _) = encoded(SetName::FirewallAllow(Family::V4), "10.0.0.1 . tcp . 80 . 192.168.0.0/16", "");
        assert_eq!(&key[12..], [192, 168, 0, 0]);
        assert_eq!(&end[..12], &key[..12]);
        assert_eq!(&end[12..], [192, 168, 255, 255]);
    }

    #[test]
    fn malformed_elements_are_errors_not_garbage() {
        let mut encoder = Encoder::default();
        assert!(encoder.encode(SetName::ServiceIps(Family::V4), "10.96.0.1 . tcp", "7").is_err());
        assert!(encoder.encode(SetName::ServiceIps(Family::V4), "10.96.0.1 . icmp . 80", "7").is_err());
        assert!(encoder.encode(SetName::EndpointCounts(Family::V4), "7", "return").is_err());
    }
}
