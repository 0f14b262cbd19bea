//! nf_tables batches against the real kernel, checked by what `nft list` prints (run as root).

use std::process::Command;

use svcnet_netns::NetNs;
use svcnet_netns::nf_tables::{Batch, Data, Element, Expr, Family, MetaKey, NfTables, PayloadBase, Register, Verdict};

fn netns(tag: &str) -> NetNs {
    NetNs::create(&format!("svcnet-t{}-nft-{tag}", std::process::id())).expect("a namespace")
}

fn nft(ns: &NetNs, args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns.name(), "nft"]).args(args);
    let output = if let Some(input) = stdin {
        use std::io::Write;
        let mut child = command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    } else {
        command.output().unwrap()
    };
    assert!(output.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

const TABLE: &str = "table inet t {
    comment \"made by the test v1\"
    set hairpin { typeof ip saddr . ip daddr; }
    set allow { typeof ip daddr . meta l4proto . th dport . ip saddr; flags interval; }
    map ids { typeof ip daddr . meta l4proto . th dport : meta mark; }
    map endpoints { typeof meta mark . numgen random mod 65536 : ip daddr . th dport; }
    map counts { typeof meta mark : verdict; }
    map affinity { typeof meta mark . ip saddr : ip daddr . th dport; size 65536; flags dynamic, timeout; }
    chain reject-it { reject; }
    chain pick-2 { meta l4proto { tcp, udp, sctp } dnat ip to meta mark . numgen random mod 2 map @endpoints; }
}
";

fn slots(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for part in parts {
        key.extend_from_slice(part);
        key.resize(key.len().next_multiple_of(4), 0);
    }
    key
}

#[test]
fn elements_rules_and_chains_written_over_netlink_list_as_nft_would_write_them() {
    let ns = netns("ok");
    nft(&ns, &["-f", "-"], Some(TABLE));
    let mut nf = NfTables::open(Some(&ns)).expect("a socket");
    let userdata = nf.table_userdata(Family::Inet, "t").unwrap().expect("the table exists");
    assert!(String::from_utf8_lossy(&userdata).contains("made by the test v1"));
    assert_eq!(nf.table_userdata(Family::Inet, "no-such-table").unwrap(), None);

    let mut batch = Batch::new();
    batch.add_chain(Family::Inet, "t", "pick-40");
    let l4 = batch.add_anonymous_set(Family::Inet, "t", 12, &[&[6], &[17], &[132]]);
    let (r1, r9) = (Register::slot(0), Register::slot(1));
    batch.add_rule(
        Family::Inet,
        "t",
        "pick-40",
        &[
            Expr::Meta { key: MetaKey::L4proto, dreg: r1 },
            Expr::Lookup { set: "__set%d", set_id: Some(l4), sreg: r1, dreg: None },
            Expr::Meta { key: MetaKey::Mark, dreg: r1 },
            Expr::NumgenRandom { dreg: r9, modulus: 40 },
            Expr::Lookup { set: "endpoints", set_id: None, sreg: r1, dreg: Some(r1) },
            Expr::Dnat { family: Family::Ip, addr: r1, proto: r9 },
        ],
    );
    batch.add_chain(Family::Inet, "t", "affinity-60");
    batch.add_rule(
        Family::Inet,
        "t",
        "affinity-60",
        &[
            Expr::Meta { key: MetaKey::Nfproto, dreg: r1 },
            Expr::CmpEq { sreg: r1, data: &[2] },
            Expr::Meta { key: MetaKey::Mark, dreg: r1 },
            Expr::Payload { base: PayloadBase::Network, offset: 12, len: 4, dreg: r9 },
            Expr::Payload { base: PayloadBase::Network, offset: 16, len: 4, dreg: Register::slot(4) },
            Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2, dreg: Register::slot(5) },
            Expr::DynsetUpdate { set: "affinity", key: r1, data: Register::slot(4), timeout_ms: 60_000 },
        ],
    );
    {
        let mut ids = batch.add_elements(Family::Inet, "t", "ids");
        ids.push(&Element { key: &slots(&[&[10, 96, 0, 1], &[6], &80u16.to_be_bytes()]), key_end: None, data: Data::Value(&7u32.to_ne_bytes()) });
    }
    {
        let mut endpoints = batch.add_elements(Family::Inet, "t", "endpoints");
        for i in 0..40u32 {
            endpoints.push(&Element {
                key: &slots(&[&7u32.to_ne_bytes(), &i.to_ne_bytes()]),
                key_end: None,
                data: Data::Value(&slots(&[&[10, 244, 0, i as u8 + 1], &8080u16.to_be_bytes()])),
            });
        }
    }
    {
        let mut counts = batch.add_elements(Family::Inet, "t", "counts");
        counts.push(&Element { key: &7u32.to_ne_bytes(), key_end: None, data: Data::Verdict(Verdict::Goto("pick-40")) });
        counts.push(&Element { key: &8u32.to_ne_bytes(), key_end: None, data: Data::Verdict(Verdict::Jump("affinity-60")) });
        counts.push(&Element { key: &9u32.to_ne_bytes(), key_end: None, data: Data::Verdict(Verdict::Drop) });
        counts.push(&Element { key: &10u32.to_ne_bytes(), key_end: None, data: Data::Verdict(Verdict::Goto("reject-it")) });
    }
    {
        let mut hairpin = batch.add_elements(Family::Inet, "t", "hairpin");
        hairpin.push(&Element { key: &[10, 244, 0, 1, 10, 244, 0, 1], key_end: None, data: Data::None });
    }
    {
        let mut allow = batch.add_elements(Family::Inet, "t", "allow");
        let start = slots(&[&[10, 96, 0, 1], &[6], &80u16.to_be_bytes(), &[192, 168, 0, 0]]);
        let end = slots(&[&[10, 96, 0, 1], &[6], &80u16.to_be_bytes(), &[192, 168, 255, 255]]);
        allow.push(&Element { key: &start, key_end: Some(&end), data: Data::None });
    }
    nf.commit(batch).expect("the batch is accepted");

    let listing = nft(&ns, &["list", "table", "inet", "t"], None);
    for expected in [
        "10.96.0.1 . tcp . 80 : 0x00000007",
        "0x00000007 . 39 : 10.244.0.40 . 8080",
        "0x00000007 : goto pick-40",
        "0x00000008 : jump affinity-60",
        "0x00000009 : drop",
        "0x0000000a : goto reject-it",
        "elements = { 10.244.0.1 . 10.244.0.1 }",
        "10.96.0.1 . tcp . 80 . 192.168.0.0/16",
        "meta l4proto { tcp, udp, sctp } dnat ip to meta mark . numgen random mod 40 map @endpoints",
        "update @affinity { meta mark . ip saddr timeout 1m : ip daddr . th dport }",
    ] {
        assert!(listing.contains(expected), "{expected:?} not in\n{listing}");
    }
    let mut chains = nf.chain_names(Family::Inet, "t").unwrap();
    chains.sort();
    assert_eq!(chains, ["affinity-60", "pick-2", "pick-40", "reject-it"]);

    // Flush and delete in one batch: the references go first, then the chains.
    let mut batch = Batch::new();
    batch.flush_set(Family::Inet, "t", "counts");
    {
        let mut endpoints = batch.delete_elements(Family::Inet, "t", "endpoints");
        endpoints.push(&Element { key: &slots(&[&7u32.to_ne_bytes(), &0u32.to_ne_bytes()]), key_end: None, data: Data::None });
    }
    batch.delete_chain(Family::Inet, "t", "pick-40");
    nf.commit(batch).expect("flush and delete");
    let listing = nft(&ns, &["list", "table", "inet", "t"], None);
    assert!(!listing.contains("pick-40") && !listing.contains("0x00000007 . 0 :") && listing.contains("0x00000007 . 1 :"), "{listing}");
}

#[test]
fn a_failing_message_applies_nothing_of_its_batch_and_says_why() {
    let ns = netns("err");
    nft(&ns, &["-f", "-"], Some(TABLE));
    let mut nf = NfTables::open(Some(&ns)).expect("a socket");
    let mut batch = Batch::new();
    {
        let mut hairpin = batch.add_elements(Family::Inet, "t", "hairpin");
        hairpin.push(&Element { key: &[1, 2, 3, 4, 5, 6, 7, 8], key_end: None, data: Data::None });
    }
    {
        let mut missing = batch.add_elements(Family::Inet, "t", "no-such-set");
        missing.push(&Element { key: &[1, 2, 3, 4], key_end: None, data: Data::None });
    }
    {
        // A key of the wrong length.
        let mut hairpin = batch.add_elements(Family::Inet, "t", "hairpin");
        hairpin.push(&Element { key: &[1, 2, 3], key_end: None, data: Data::None });
    }
    let error = nf.commit(batch).expect_err("a missing set fails the batch").to_string();
    assert!(error.contains("no-such-set"), "{error}");
    let listing = nft(&ns, &["list", "set", "inet", "t", "hairpin"], None);
    assert!(!listing.contains("1.2.3.4"), "nothing of a failed batch is applied:\n{listing}");
    // The socket is usable afterwards.
    let mut batch = Batch::new();
    batch.add_elements(Family::Inet, "t", "hairpin").push(&Element { key: &[1, 2, 3, 4, 5, 6, 7, 8], key_end: None, data: Data::None });
    nf.commit(batch).unwrap();
    assert!(nft(&ns, &["list", "set", "inet", "t", "hairpin"], None).contains("1.2.3.4 . 5.6.7.8"));
}
