//! The ruleset's elements and dynamic chains as nf_tables netlink messages
//! ([`svcnet_netns::nf_tables`]): what a full sync loads after the skeleton, and what an
//! incremental sync changes. Pure: builds [`Batch`]es; [`crate::nft`] commits them.
//!
//! Each typed [`Key`] and [`Value`] is written as the bytes the kernel stores, laid out as the
//! set was declared: every component of a concatenation in its own 4-byte slot, addresses and
//! ports in network order, marks and the random index in host order. `tests/netlink.rs` loads
//! the same ruleset both ways (this, and `nft -f` of [`Ruleset::full_script`], the same
//! elements as text) and compares what the kernel lists.

use std::collections::HashMap;
use std::net::IpAddr;

use svcnet_netns::nf_tables::{self, Batch, Data, Element, Expr, MetaKey, PayloadBase, Register, Verdict};

use crate::ruleset::{DynamicChain, Family, Key, Ruleset, SetName, TABLE, Transaction, Value};

const INET: nf_tables::Family = nf_tables::Family::Inet;

/// nft's datatype number for `inet_proto` (how listings show an anonymous set's keys).
const TYPE_INET_PROTOCOL: u32 = 12;

/// Everything after the skeleton, in one transaction: the dynamic chains the ruleset needs
/// that `existing` lacks, every element set and map flushed and refilled (the session-affinity
/// maps flushed: their path ids are this process's), the node's addresses, and the dynamic
/// chains in `existing` no longer needed deleted last.
pub fn full_sync(ruleset: &Ruleset, existing: &[String]) -> Batch {
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
    let mut by_set: std::collections::BTreeMap<SetName, Vec<(Key, Value)>> = std::collections::BTreeMap::new();
    for element in ruleset.elements() {
        by_set.entry(element.set).or_default().push((element.key, element.value));
    }
    for set in SetName::all() {
        batch.flush_set(INET, TABLE, &set.name());
    }
    let mut encoder = Encoder::default();
    for (set, elements) in &by_set {
        push_elements(&mut batch, &mut encoder, *set, false, elements.iter().map(|(k, v)| (k, v)));
    }
    for name in existing {
        if let Some(chain) = DynamicChain::parse(name)
            && !chain.is_preset()
            && !needed.contains(&chain)
        {
            batch.delete_chain(INET, TABLE, name);
        }
    }
    batch
}

/// One incremental transaction.
pub fn transaction(tx: &Transaction) -> Batch {
    let mut batch = Batch::new();
    for chain in &tx.add_chains {
        add_chain(&mut batch, *chain);
    }
    let mut encoder = Encoder::default();
    for (set, keys) in &tx.deletes {
        push_elements(&mut batch, &mut encoder, *set, true, keys.iter().map(|k| (k, &Value::None)));
    }
    for (set, elements) in &tx.adds {
        push_elements(&mut batch, &mut encoder, *set, false, elements.iter().map(|(k, v)| (k, v)));
    }
    for chain in &tx.delete_chains {
        batch.delete_chain(INET, TABLE, &chain.name());
    }
    batch
}

/// Adds (or deletes, by key) elements of one set.
fn push_elements<'a>(batch: &mut Batch, encoder: &mut Encoder, set: SetName, delete: bool, elements: impl Iterator<Item = (&'a Key, &'a Value)>) {
    let name = set.name();
    let mut out = if delete { batch.delete_elements(INET, TABLE, &name) } else { batch.add_elements(INET, TABLE, &name) };
    for (key, value) in elements {
        out.push(&encoder.encode(key, value));
    }
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

/// Reusable buffers for one element at a time, and the names of verdict chains.
#[derive(Default)]
struct Encoder {
    key: Vec<u8>,
    key_end: Vec<u8>,
    data: Vec<u8>,
    chains: HashMap<DynamicChain, String>,
}

impl Encoder {
    fn encode(&mut self, key: &Key, value: &Value) -> Element<'_> {
        self.key.clear();
        self.key_end.clear();
        self.data.clear();
        let mut interval = false;
        match *key {
            Key::Frontend { ip, protocol, port } => {
                slot(&mut self.key, &octets(&ip));
                slot(&mut self.key, &[protocol.number()]);
                slot(&mut self.key, &port.to_be_bytes());
            }
            Key::NodePort { protocol, port } => {
                slot(&mut self.key, &[protocol.number()]);
                slot(&mut self.key, &port.to_be_bytes());
            }
            Key::Id(id) => slot(&mut self.key, &id.to_ne_bytes()),
            Key::Pick { id, index } => {
                slot(&mut self.key, &id.to_ne_bytes());
                slot(&mut self.key, &index.to_ne_bytes());
            }
            Key::Hairpin(ip) => {
                slot(&mut self.key, &octets(&ip));
                slot(&mut self.key, &octets(&ip));
            }
            Key::Address(ip) => slot(&mut self.key, &octets(&ip)),
            Key::SourceRange { ip, protocol, port, range } => {
                slot(&mut self.key, &octets(&ip));
                slot(&mut self.key, &[protocol.number()]);
                slot(&mut self.key, &port.to_be_bytes());
                self.key_end.extend_from_slice(&self.key);
                slot(&mut self.key, &octets(&range.network()));
                slot(&mut self.key_end, &octets(&range.broadcast()));
                interval = true;
            }
        }
        let data = match *value {
            Value::None => Data::None,
            Value::Id(id) => {
                slot(&mut self.data, &id.to_ne_bytes());
                Data::Value(&self.data)
            }
            Value::Endpoint(endpoint) => {
                slot(&mut self.data, &octets(&endpoint.ip));
                slot(&mut self.data, &endpoint.port.to_be_bytes());
                Data::Value(&self.data)
            }
            Value::Goto(chain) => Data::Verdict(Verdict::Goto(self.chains.entry(chain).or_insert_with(|| chain.name()))),
            Value::Jump(chain) => Data::Verdict(Verdict::Jump(self.chains.entry(chain).or_insert_with(|| chain.name()))),
            Value::Reject => Data::Verdict(Verdict::Goto("reject-service")),
            Value::Drop => Data::Verdict(Verdict::Drop),
        };
        Element { key: &self.key, key_end: interval.then_some(self.key_end.as_slice()), data }
    }
}

/// Appends one component, padded to its 4-byte slot.
fn slot(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol};

    fn encoded(key: Key, value: Value) -> (Vec<u8>, Option<Vec<u8>>, Data<'static>) {
        let mut encoder = Encoder::default();
        let element = encoder.encode(&key, &value);
        let data = match element.data {
            Data::Value(bytes) => Data::Value(bytes.to_vec().leak()),
            Data::None => Data::None,
            Data::Verdict(_) => Data::None,
        };
        (element.key.to_vec(), element.key_end.map(<[u8]>::to_vec), data)
    }

    #[test]
    fn keys_and_data_take_four_byte_slots_in_the_kernel_byte_orders() {
        let (key, _, data) = encoded(Key::Frontend { ip: "10.96.0.1".parse().unwrap(), protocol: Protocol::Udp, port: 53 }, Value::Id(7));
        assert_eq!(key, [10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(data, Data::Value(&7u32.to_ne_bytes()));
        let (key, _, data) = encoded(Key::Pick { id: 7, index: 3 }, Value::Endpoint(Endpoint { ip: "fd00::1".parse().unwrap(), port: 8080 }));
        assert_eq!(key, [7u32.to_ne_bytes(), 3u32.to_ne_bytes()].concat());
        let Data::Value(data) = data else { panic!("a value") };
        assert_eq!(data.len(), 20);
        assert_eq!(&data[16..], [0x1f, 0x90, 0, 0]);
        let range = "192.168.0.0/16".parse().unwrap();
        let (key, end, _) = encoded(Key::SourceRange { ip: "10.0.0.1".parse().unwrap(), protocol: Protocol::Tcp, port: 80, range }, Value::None);
        let end = end.expect("an interval end");
        assert_eq!(&key[12..], [192, 168, 0, 0]);
        assert_eq!(&end[..12], &key[..12]);
        assert_eq!(&end[12..], [192, 168, 255, 255]);
    }
}
