//! nf_tables over netlink, for what `nft` is slow at: loading and changing set and map elements
//! by the hundred thousand, and the few chains whose rules are simple enough to write here.
//!
//! `nft` parses every element of a script through its grammar and evaluator (about 10 µs an
//! element on this machine); the kernel needs ~1 µs to insert one. A [`Batch`] writes the
//! `NFT_MSG_NEWSETELEM`/`NFT_MSG_DELSETELEM` messages straight into one buffer, the whole batch
//! is one nf_tables transaction (all or nothing, as with `nft -f`), and [`NfTables::commit`]
//! sends it with one `sendmsg` and reads one acknowledgement per message.
//!
//! Keys and data are the bytes the kernel compares: the caller lays them out as the set was
//! declared (each component of a concatenation in its own 4-byte-aligned register slot, network
//! order for addresses and ports, host order for marks). Tables, sets and the rules that use them
//! are made with `nft`; this module only fills them. `rustables` 0.8 was looked at and writes set
//! elements with a key only (no map data, verdicts or interval ends), so this is hand-written.

use std::io;
use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};

use crate::{Error, NetNs, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;

/// An nf_tables address family (`nfgenmsg.nfgen_family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Ip6 => 10,
        }
    }
}

/// The verdict a map element maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Accept,
    Drop,
    Jump(&'a str),
    Goto(&'a str),
}

/// What an element maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data<'a> {
    /// A set element (no data).
    None,
    /// The bytes of a value map's data.
    Value(&'a [u8]),
    Verdict(Verdict<'a>),
}

/// One element of a set or map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element<'a> {
    pub key: &'a [u8],
    /// The last key of the range, for sets with `flags interval` and a concatenated key.
    pub key_end: Option<&'a [u8]>,
    pub data: Data<'a>,
}

/// A 32-bit-slot register: `Register::slot(n)` is `NFT_REG32_n` (bytes `4n..4n+4` of the
/// register file), the numbering `nft --debug=netlink` prints as `reg 8 + n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register(u32);

impl Register {
    pub const fn slot(n: u32) -> Register {
        Register(8 + n)
    }
}

/// `meta` keys used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    Mark,
    Nfproto,
    L4proto,
}

/// Where a payload is loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadBase {
    Network,
    Transport,
}

/// The expressions of the rules written here (a small subset of nf_tables').
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr<'a> {
    /// `meta load KEY => dreg`.
    Meta { key: MetaKey, dreg: Register },
    /// `cmp eq sreg DATA`.
    CmpEq { sreg: Register, data: &'a [u8] },
    /// `payload load LEN @ BASE + OFFSET => dreg`.
    Payload { base: PayloadBase, offset: u32, len: u32, dreg: Register },
    /// `lookup sreg set SET [dreg DREG]`: a named set, or with `set_id` one made in this batch by
    /// [`Batch::add_anonymous_set`].
    Lookup { set: &'a str, set_id: Option<u32>, sreg: Register, dreg: Option<Register> },
    /// `numgen dreg = random mod MODULUS`.
    NumgenRandom { dreg: Register, modulus: u32 },
    /// `nat dnat FAMILY addr_min ADDR proto_min PROTO`.
    Dnat { family: Family, addr: Register, proto: Register },
    /// `dynset update reg_key KEY set SET sreg_data DATA timeout MS`.
    DynsetUpdate { set: &'a str, key: Register, data: Register, timeout_ms: u64 },
}

/// A description of each acknowledged message, for errors.
type Described = Vec<String>;

/// A batch of nf_tables messages: one transaction when committed.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    described: Described,
    next_set_id: u32,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let mut batch = Batch { buf: Vec::with_capacity(4096), described: Vec::new(), next_set_id: 1 };
        let start = batch.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, 0);
        batch.finish(start);
        batch
    }

    /// Whether the batch holds no message besides its begin marker.
    pub fn is_empty(&self) -> bool {
        self.described.is_empty()
    }

    /// The number of messages the kernel will acknowledge.
    pub fn len(&self) -> usize {
        self.described.len()
    }

    /// Bytes in the batch so far.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Adds a chain without hook (a no-op if it exists).
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.named(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, "add chain", (NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, chain));
    }

    /// Deletes a chain (which must be empty of references by then).
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.named(NFT_MSG_DELCHAIN, 0, family, "delete chain", (NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, chain));
    }

    /// A constant anonymous set made in this batch (what `nft` makes of `{ tcp, udp }`); returns
    /// its id for [`Expr::Lookup`]. `key_type` is nft's datatype number, used when listing.
    pub fn add_anonymous_set(&mut self, family: Family, table: &str, key_type: u32, keys: &[&[u8]]) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let key_len = keys.first().map_or(0, |k| k.len());
        let start = self.message(NFT_MSG_NEWSET, NLM_F_CREATE, family, format!("add anonymous set in {table}"));
        self.put_str(NFTA_SET_TABLE, table);
        self.put_str(NFTA_SET_NAME, "__set%d");
        self.put_u32(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
        self.put_u32(NFTA_SET_KEY_TYPE, key_type);
        self.put_u32(NFTA_SET_KEY_LEN, key_len as u32);
        let desc = self.nest(NFTA_SET_DESC);
        self.put_u32(NFTA_SET_DESC_SIZE, keys.len() as u32);
        self.end_nest(desc);
        self.put_u32(NFTA_SET_ID, id);
        self.finish(start);
        let start = self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, format!("add elements to an anonymous set in {table}"));
        self.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        self.put_str(NFTA_SET_ELEM_LIST_SET, "__set%d");
        self.put_u32(NFTA_SET_ELEM_LIST_SET_ID, id);
        let list = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for key in keys {
            self.element(&Element { key, key_end: None, data: Data::None });
        }
        self.end_nest(list);
        self.finish(start);
        id
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, exprs: &[Expr<'_>]) {
        let start = self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, format!("add rule {table} {chain}"));
        self.put_str(NFTA_RULE_TABLE, table);
        self.put_str(NFTA_RULE_CHAIN, chain);
        let list = self.nest(NFTA_RULE_EXPRESSIONS);
        for expr in exprs {
            let elem = self.nest(NFTA_LIST_ELEM);
            self.expr(expr);
            self.end_nest(elem);
        }
        self.end_nest(list);
        self.finish(start);
    }

    /// Removes every element of a set or map (`flush set`).
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) {
        self.named(NFT_MSG_DELSETELEM, 0, family, "flush set", (NFTA_SET_ELEM_LIST_TABLE, table), (NFTA_SET_ELEM_LIST_SET, set));
    }

    /// A message of just a table's and an object's names.
    fn named(&mut self, op: u16, flags: u16, family: Family, verb: &str, (table_attr, table): (u16, &str), (name_attr, name): (u16, &str)) {
        let start = self.message(op, flags, family, format!("{verb} {table} {name}"));
        self.put_str(table_attr, table);
        self.put_str(name_attr, name);
        self.finish(start);
    }

    /// Adds elements to a set or map; they are written as they are pushed.
    pub fn add_elements<'b>(&'b mut self, family: Family, table: &'b str, set: &'b str) -> Elements<'b> {
        Elements { batch: self, family, table, set, delete: false, open: None }
    }

    /// Deletes elements (by key; data is ignored) from a set or map.
    pub fn delete_elements<'b>(&'b mut self, family: Family, table: &'b str, set: &'b str) -> Elements<'b> {
        Elements { batch: self, family, table, set, delete: true, open: None }
    }

    // --- encoding ---

    /// Starts a message; `seq` is relative to the batch (its begin marker is 0, message i is i,
    /// the end marker n+1): [`NfTables::commit`] adds its own base.
    fn header(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, seq: u32) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn message(&mut self, op: u16, flags: u16, family: Family, description: String) -> usize {
        let seq = self.described.len() as u32 + 1;
        let start = self.header((NFNL_SUBSYS_NFTABLES << 8) | op, NLM_F_REQUEST | NLM_F_ACK | flags, family.code(), 0, seq);
        self.described.push(description);
        start
    }

    fn finish(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn put(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        assert!(len <= u16::MAX as usize, "a netlink attribute of {len} bytes");
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn put_str(&mut self, ty: u16, value: &str) {
        let len = 4 + value.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn put_u32(&mut self, ty: u16, value: u32) {
        self.put(ty, &value.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nest(&mut self, start: usize) {
        let len = self.buf.len() - start;
        assert!(len <= u16::MAX as usize, "a nested netlink attribute of {len} bytes");
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }

    fn value(&mut self, ty: u16, bytes: &[u8]) {
        let nest = self.nest(ty);
        self.put(NFTA_DATA_VALUE, bytes);
        self.end_nest(nest);
    }

    fn element(&mut self, element: &Element<'_>) {
        let elem = self.nest(NFTA_LIST_ELEM);
        self.value(NFTA_SET_ELEM_KEY, element.key);
        if let Some(end) = element.key_end {
            self.value(NFTA_SET_ELEM_KEY_END, end);
        }
        match element.data {
            Data::None => {}
            Data::Value(bytes) => self.value(NFTA_SET_ELEM_DATA, bytes),
            Data::Verdict(verdict) => {
                let data = self.nest(NFTA_SET_ELEM_DATA);
                let nest = self.nest(NFTA_DATA_VERDICT);
                let (code, chain): (i32, Option<&str>) = match verdict {
                    Verdict::Drop => (0, None),
                    Verdict::Accept => (1, None),
                    Verdict::Jump(chain) => (-3, Some(chain)),
                    Verdict::Goto(chain) => (-4, Some(chain)),
                };
                self.put(NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(chain) = chain {
                    self.put_str(NFTA_VERDICT_CHAIN, chain);
                }
                self.end_nest(nest);
                self.end_nest(data);
            }
        }
        self.end_nest(elem);
    }

    fn expr(&mut self, expr: &Expr<'_>) {
        let name = match expr {
            Expr::Meta { .. } => "meta",
            Expr::CmpEq { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Lookup { .. } => "lookup",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Dnat { .. } => "nat",
            Expr::DynsetUpdate { .. } => "dynset",
        };
        self.put_str(NFTA_EXPR_NAME, name);
        let data = self.nest(NFTA_EXPR_DATA);
        match *expr {
            Expr::Meta { key, dreg } => {
                // NFTA_META_DREG, NFTA_META_KEY
                self.put_u32(1, dreg.0);
                self.put_u32(
                    2,
                    match key {
                        MetaKey::Mark => 3,
                        MetaKey::Nfproto => 15,
                        MetaKey::L4proto => 16,
                    },
                );
            }
            Expr::CmpEq { sreg, data } => {
                // NFTA_CMP_SREG, NFTA_CMP_OP (NFT_CMP_EQ), NFTA_CMP_DATA
                self.put_u32(1, sreg.0);
                self.put_u32(2, 0);
                self.value(3, data);
            }
            Expr::Payload { base, offset, len, dreg } => {
                // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
                self.put_u32(1, dreg.0);
                self.put_u32(
                    2,
                    match base {
                        PayloadBase::Network => 1,
                        PayloadBase::Transport => 2,
                    },
                );
                self.put_u32(3, offset);
                self.put_u32(4, len);
            }
            Expr::Lookup { set, set_id, sreg, dreg } => {
                // NFTA_LOOKUP_SET, _SREG, _DREG, _SET_ID
                self.put_str(1, set);
                self.put_u32(2, sreg.0);
                if let Some(dreg) = dreg {
                    self.put_u32(3, dreg.0);
                }
                if let Some(id) = set_id {
                    self.put_u32(4, id);
                }
            }
            Expr::NumgenRandom { dreg, modulus } => {
                // NFTA_NG_DREG, _MODULUS, _TYPE (NFT_NG_RANDOM), _OFFSET
                self.put_u32(1, dreg.0);
                self.put_u32(2, modulus);
                self.put_u32(3, 1);
                self.put_u32(4, 0);
            }
            Expr::Dnat { family, addr, proto } => {
                // NFTA_NAT_TYPE (NFT_NAT_DNAT), _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN
                self.put_u32(1, 1);
                self.put_u32(2, family.code() as u32);
                self.put_u32(3, addr.0);
                self.put_u32(5, proto.0);
            }
            Expr::DynsetUpdate { set, key, data, timeout_ms } => {
                // NFTA_DYNSET_SET_NAME, _OP (NFT_DYNSET_OP_UPDATE), _SREG_KEY, _SREG_DATA, _TIMEOUT
                self.put_str(1, set);
                self.put_u32(3, 1);
                self.put_u32(4, key.0);
                self.put_u32(5, data.0);
                self.put(6, &timeout_ms.to_be_bytes());
            }
        }
        self.end_nest(data);
    }

    fn into_bytes(mut self) -> (Vec<u8>, Described) {
        let seq = self.described.len() as u32 + 1;
        let start = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, seq);
        self.finish(start);
        (self.buf, self.described)
    }
}

/// Elements being written into a [`Batch`], split into messages of at most ~60 KB (a netlink
/// attribute's length is 16 bits).
pub struct Elements<'b> {
    batch: &'b mut Batch,
    family: Family,
    table: &'b str,
    set: &'b str,
    delete: bool,
    /// The open message and its element list.
    open: Option<(usize, usize)>,
}

/// Keep the element list well under the 64 KiB limit of a nested attribute.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

impl Elements<'_> {
    pub fn push(&mut self, element: &Element<'_>) {
        if let Some((_, list)) = self.open
            && self.batch.buf.len() - list > ELEMENTS_PER_MESSAGE_BYTES
        {
            self.close();
        }
        if self.open.is_none() {
            let (op, flags, verb) = if self.delete { (NFT_MSG_DELSETELEM, 0, "delete") } else { (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add") };
            let start = self.batch.message(op, flags, self.family, format!("{verb} elements of {} {}", self.table, self.set));
            self.batch.put_str(NFTA_SET_ELEM_LIST_TABLE, self.table);
            self.batch.put_str(NFTA_SET_ELEM_LIST_SET, self.set);
            let list = self.batch.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            self.open = Some((start, list));
        }
        if self.delete {
            self.batch.element(&Element { data: Data::None, ..*element });
        } else {
            self.batch.element(element);
        }
    }

    fn close(&mut self) {
        if let Some((start, list)) = self.open.take() {
            self.batch.end_nest(list);
            self.batch.finish(start);
        }
    }
}

impl Drop for Elements<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// A netlink socket to nf_tables in one network namespace.
#[derive(Debug)]
pub struct NfTables {
    socket: Socket,
    /// The sequence number of the next request: every message gets its own, so a reply left
    /// over from an earlier exchange is never taken for one of this one.
    seq: u32,
}

/// How long to wait for the kernel's answer before giving up on the socket.
const REPLY_TIMEOUT_SECS: i64 = 60;

/// An error the kernel returned for a batch message or a request.
fn kernel_error(what: &str, errno: i32, message: Option<String>) -> Error {
    let op = match message {
        Some(message) => format!("nf_tables: {what}: {message}"),
        None => format!("nf_tables: {what}"),
    };
    Error::Sys { op, source: nix::Error::from_raw(errno) }
}

fn io_error(op: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |error| Error::Sys { op: format!("nf_tables: {op}"), source: nix::Error::from_raw(error.raw_os_error().unwrap_or(nix::Error::EIO as i32)) }
}

impl NfTables {
    /// Opens the socket in `netns` (or in the calling thread's namespace for `None`); it stays
    /// there wherever it is used from.
    pub fn open(netns: Option<&NetNs>) -> Result<NfTables> {
        let open = || -> Result<Socket> {
            let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io_error("opening a netlink socket"))?;
            socket.bind_auto().map_err(io_error("binding the netlink socket"))?;
            socket.connect(&SocketAddr::new(0, 0)).map_err(io_error("connecting the netlink socket"))?;
            // Errors carry the kernel's message; acknowledgements do not echo the request.
            socket.set_ext_ack(true).map_err(io_error("NETLINK_EXT_ACK"))?;
            socket.set_cap_ack(true).map_err(io_error("NETLINK_CAP_ACK"))?;
            setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &(4 << 20)).map_err(Error::sys("SO_RCVBUFFORCE"))?;
            let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT_SECS, 0);
            setsockopt(&socket.as_fd(), sockopt::ReceiveTimeout, &timeout).map_err(Error::sys("SO_RCVTIMEO"))?;
            Ok(socket)
        };
        let socket = match netns {
            Some(netns) => netns.run_in(open)??,
            None => open()?,
        };
        Ok(NfTables { socket, seq: 1 })
    }

    /// Sends the batch as one transaction and waits for the kernel's verdict on every message;
    /// on an error nothing of the batch is applied. After an error (or no answer within a
    /// minute) the socket should be dropped: replies may still be queued on it.
    pub fn commit(&mut self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (mut bytes, described) = batch.into_bytes();
        let base = self.seq;
        self.seq = self.seq.wrapping_add(described.len() as u32 + 2);
        renumber(&mut bytes, base);
        setsockopt(&self.socket.as_fd(), sockopt::SndBufForce, &(bytes.len() + 65_536)).map_err(Error::sys("SO_SNDBUFFORCE"))?;
        self.socket.send(&bytes, 0).map_err(io_error("sending a batch"))?;
        let last = base.wrapping_add(described.len() as u32);
        let mut first_error = None;
        let mut buf = vec![0u8; 256 * 1024];
        // Every message asks for an acknowledgement and the kernel answers them in order, the
        // last one last; an error of the batch as a whole comes on the begin marker's number.
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0).map_err(io_error("reading acknowledgements"))?;
            for message in messages(&buf[..n]) {
                let index = message.seq.wrapping_sub(base);
                if message.ty != NLMSG_ERROR || index > described.len() as u32 {
                    continue;
                }
                let (errno, text) = parse_error(&message);
                if errno != 0 && first_error.is_none() {
                    let what = if index == 0 { "the batch" } else { described[index as usize - 1].as_str() };
                    first_error = Some(kernel_error(what, errno, text));
                }
                if message.seq == last {
                    return first_error.map_or(Ok(()), Err);
                }
            }
        }
    }

    /// The userdata (comment) of a table, or `None` when there is no such table.
    pub fn table_userdata(&mut self, family: Family, table: &str) -> Result<Option<Vec<u8>>> {
        let mut userdata = None;
        let mut found = false;
        self.request(NFT_MSG_GETTABLE, NLM_F_ACK, family, (NFTA_TABLE_NAME, table), |message| {
            found = true;
            userdata = attributes(message.payload.get(4..).unwrap_or_default()).find(|(ty, _)| *ty == NFTA_TABLE_USERDATA).map(|(_, v)| v.to_vec());
        })
        .or_else(|error| if error.errno() == Some(nix::Error::ENOENT) { Ok(()) } else { Err(error) })?;
        Ok(found.then(|| userdata.unwrap_or_default()))
    }

    /// The names of the chains of a table.
    pub fn chain_names(&mut self, family: Family, table: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.request(NFT_MSG_GETCHAIN, NLM_F_DUMP, family, (NFTA_CHAIN_TABLE, table), |message| {
            let mut in_table = false;
            let mut name = None;
            for (ty, value) in attributes(message.payload.get(4..).unwrap_or_default()) {
                match ty {
                    NFTA_CHAIN_TABLE => in_table = c_str(value) == table,
                    NFTA_CHAIN_NAME => name = Some(c_str(value).to_string()),
                    _ => {}
                }
            }
            if in_table && let Some(name) = name {
                names.push(name);
            }
        })?;
        Ok(names)
    }

    /// Sends one request (of one string attribute) and feeds its replies to `each` until the
    /// acknowledgement or the end of the dump.
    fn request(&mut self, op: u16, flags: u16, family: Family, (attr, value): (u16, &str), mut each: impl FnMut(&Message<'_>)) -> Result<()> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut request = Batch { buf: Vec::new(), described: Vec::new(), next_set_id: 1 };
        let start = request.header((NFNL_SUBSYS_NFTABLES << 8) | op, NLM_F_REQUEST | flags, family.code(), 0, seq);
        request.put_str(attr, value);
        request.finish(start);
        self.socket.send(&request.buf, 0).map_err(io_error("sending a request"))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0).map_err(io_error("reading a reply"))?;
            for message in messages(&buf[..n]).filter(|m| m.seq == seq) {
                match message.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let (errno, text) = parse_error(&message);
                        return if errno == 0 { Ok(()) } else { Err(kernel_error("request", errno, text)) };
                    }
                    // A dump's parts (NLM_F_MULTI) end with NLMSG_DONE; a single reply is
                    // followed by its acknowledgement.
                    _ => each(&message),
                }
            }
        }
    }
}

/// Adds `base` to the sequence number of every message in `buf`.
fn renumber(buf: &mut [u8], base: u32) {
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        buf[at + 8..at + 12].copy_from_slice(&seq.wrapping_add(base).to_ne_bytes());
        if len < 16 {
            break;
        }
        at += len.next_multiple_of(4);
    }
}

struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let message = Message {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[16..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(message)
    })
}

fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ty, value))
    })
}

fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or_default()
}

/// The errno (0 for an acknowledgement) and the kernel's extended-ack message of an
/// `NLMSG_ERROR`.
fn parse_error(message: &Message<'_>) -> (i32, Option<String>) {
    let Some(code) = message.payload.get(0..4) else { return (nix::Error::EIO as i32, None) };
    let errno = -i32::from_ne_bytes(code.try_into().expect("4 bytes"));
    let mut text = None;
    if message.flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK the echoed request is its header only (16 bytes).
        let tlvs = message.payload.get(4 + 16..).unwrap_or_default();
        text = attributes(tlvs).find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG).map(|(_, v)| c_str(v).to_string());
    }
    (errno, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_split_into_messages_under_the_attribute_limit() {
        let mut batch = Batch::new();
        {
            let mut elements = batch.add_elements(Family::Inet, "t", "s");
            for i in 0u32..10_000 {
                elements.push(&Element { key: &i.to_be_bytes(), key_end: None, data: Data::Value(&[1, 2, 3, 4, 5, 6, 7, 8]) });
            }
        }
        assert!(batch.len() > 3, "{} messages", batch.len());
        let (mut bytes, described) = batch.into_bytes();
        renumber(&mut bytes, 100);
        let parsed: Vec<_> = messages(&bytes).collect();
        assert_eq!(parsed.len(), described.len() + 2, "begin, the messages, end");
        let seqs: Vec<u32> = parsed.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (100..100 + parsed.len() as u32).collect::<Vec<_>>(), "one number each, the begin marker first");
        for message in &parsed[1..parsed.len() - 1] {
            assert_eq!(message.ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
            assert!(message.payload.len() < 65_536);
        }
        let count: usize = parsed[1..parsed.len() - 1]
            .iter()
            .map(|m| {
                let list = attributes(&m.payload[4..]).find(|(ty, _)| *ty == NFTA_SET_ELEM_LIST_ELEMENTS).expect("an element list").1;
                attributes(list).count()
            })
            .sum();
        assert_eq!(count, 10_000);
    }
}
