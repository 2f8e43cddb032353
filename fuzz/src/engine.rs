//! `engine`: a small network of sans-IO engines driven by an arbitrary sequence of operations.
//!
//! The input is a 12-byte [`Header`] (the network-wide `Config`, how many engines, how many
//! peers without an engine), then [`Op`]s: broadcasts, delivering / dropping / duplicating
//! messages in flight between engines, messages injected from any peer or a stranger (with ids
//! drawn from the broadcasts so far, so ACKs, IGYW replies and range changes meet real
//! state), replays of earlier messages, time advancing (every engine then handles its
//! timeouts, as a driver does) and peer-list changes.
//!
//! Invariants, checked after every step:
//! - no panic, and a peer-list change that keeps the node is accepted;
//! - a payload is delivered only for an id the engine did not remember just before, and the
//!   first acceptable copy of an unknown id is delivered exactly once, with its own payload,
//!   hops and origin time; broadcasts, timeouts and peer-list changes deliver nothing;
//! - an id is remembered for `seen_ttl` after it was first seen unless the seen-set evicted
//!   something for capacity in the meantime (so no copy within that time is delivered again);
//! - `seen_len()` never exceeds `seen_capacity` (at least 1);
//! - after timeouts are handled at `now`, `poll_timeout()` is `None` or later than `now`;
//! - sends go to someone else, carry only Gossip, Ack, Igyw or IgywReply, gossip of the
//!   configured strategy within `max_payload`, and survive a wire round trip unchanged;
//! - `stats()` counts exactly the deliveries and broadcasts observed.
//!
//! With `RAINTREE_FUZZ_STRICT=1`, an engine must also never deliver an id twice (nor deliver
//! its own broadcast) within `seen_ttl` of first seeing it, eviction or not: the issue 9 goal
//! that the current seen-set does not meet (see docs/TESTING.md, "Fuzzing").
//!
//! Engine construction and the message kinds live in [`new_engine`] and [`crate::msg`], the
//! two places to adapt when the engine's constructor or the wire change.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use raintree_proto::broadcast::{
    Config, Engine, EngineError, Output, Redundancy, Stats, HELD_ENTRY_BYTES,
};
use raintree_proto::wire::{self, Message, MessageId, Strategy};
use raintree_proto::{Address, PeerList};

use crate::input::{byte, take, u16le, Writer};
use crate::msg::{message, summary, Ctx, MsgSpec};

/// Most operations read from one input.
pub const MAX_OPS: usize = 256;
/// Most engine inputs (messages handled) per input. A seen-set smaller than the traffic lets
/// ring and IGYW copies circulate for ever (an evicted id is new again), so inputs are capped.
pub const MAX_STEPS: usize = 1000;
/// Most messages one `DeliverAll` delivers.
pub const DELIVER_ALL: usize = 128;
/// Most messages in flight; the oldest is lost beyond it.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Builds one engine; the single place that knows the constructor's signature.
pub fn new_engine(config: &Config, me: Address, peers: Arc<PeerList>, seed: u64) -> Engine {
    let rng = rand::SeedableRng::seed_from_u64(seed);
    Engine::new(config.clone(), me, peers, rng).expect("me is in the peer list")
}

/// The network-wide settings at the start of an input.
#[derive(Clone, Debug)]
pub struct Header {
    /// Bit 0 exact strategy, bit 1 ACKs, bits 2-3 redundancy, bit 4 clean-up, bits 5 and 6
    /// both set: forward duplicates.
    pub flags: u8,
    /// Engines: 1 + this % 4.
    pub engines: u8,
    /// Peers without an engine: this % 6.
    pub extra: u8,
    /// ACK timeout, 1 + this, in ms.
    pub ack_ms: u8,
    /// Exact re-delegations: this % 4.
    pub retries: u8,
    /// IGYW reply timeout, 1 + this, in ms.
    pub igyw_ms: u8,
    /// IGYW skip limit: this % 9.
    pub skip: u8,
    /// Clean-up delay, 1 + this, in ms.
    pub cleanup_ms: u8,
    /// Seen-set capacity: this % 33.
    pub capacity: u8,
    /// Seen-set age limit, 1 + this, in ms.
    pub ttl_ms: u16,
    /// Payload limit in bytes.
    pub max_payload: u8,
}

impl Header {
    fn read(u: &mut Unstructured<'_>) -> Self {
        let b: [u8; 12] = take(u);
        Header {
            flags: b[0],
            engines: b[1],
            extra: b[2],
            ack_ms: b[3],
            retries: b[4],
            igyw_ms: b[5],
            skip: b[6],
            cleanup_ms: b[7],
            capacity: b[8],
            ttl_ms: u16::from_le_bytes([b[9], b[10]]),
            max_payload: b[11],
        }
    }

    /// Appends the header's 12 bytes.
    pub fn write(&self, w: &mut Writer) {
        w.byte(self.flags)
            .byte(self.engines)
            .byte(self.extra)
            .byte(self.ack_ms);
        w.byte(self.retries)
            .byte(self.igyw_ms)
            .byte(self.skip)
            .byte(self.cleanup_ms);
        w.byte(self.capacity)
            .u16le(self.ttl_ms)
            .byte(self.max_payload);
    }

    fn config(&self) -> Config {
        let f = self.flags;
        let ms = |v: u8| Duration::from_millis(1 + u64::from(v));
        Config {
            strategy: if f & 1 == 0 {
                Strategy::Reference
            } else {
                Strategy::Exact
            },
            acks: f & 2 != 0,
            redundancy: [
                Redundancy::Off,
                Redundancy::Left,
                Redundancy::Right,
                Redundancy::Both,
            ][usize::from((f >> 2) & 3)],
            cleanup: f & 0x10 != 0,
            forward_duplicates: f & 0x60 == 0x60,
            ack_timeout: ms(self.ack_ms),
            min_ack_timeout: ms(self.retries),
            suspicion_ttl: ms(self.ack_ms.wrapping_mul(4)),
            max_ack_timeout: ms(u8::MAX),
            igyw_timeout: ms(self.igyw_ms),
            igyw_skip_limit: u32::from(self.skip % 9),
            cleanup_delay: ms(self.cleanup_ms),
            seen_capacity: usize::from(self.capacity % 33),
            // Half the inputs give each origin 1-4 ids once the set is half full, so floods
            // are refused too; the others leave shares out of the way of eviction.
            origin_share: match self.capacity / 33 {
                0..=3 => usize::MAX,
                k => usize::from(k) - 3,
            },
            // With the age limit's top bit, room for 1-8 held messages of the largest payload,
            // so some are shed; without it, no limit.
            held_bytes: if self.ttl_ms & 0x8000 != 0 {
                (1 + usize::from((self.ttl_ms >> 12) & 7))
                    * (usize::from(self.max_payload) + HELD_ENTRY_BYTES)
            } else {
                usize::MAX
            },
            seen_ttl: Duration::from_millis(1 + u64::from(self.ttl_ms)),
            max_payload: usize::from(self.max_payload),
            // Injected gossip is unsigned so that it reaches every state; forgeries have their
            // own unit tests in raintree-proto.
            verify_signatures: false,
            ..Config::default()
        }
    }
}

/// One operation (mirrors the reader in [`Net::op`]).
#[derive(Clone, Debug)]
pub enum Op {
    /// Engine `node` broadcasts `len` copies of `fill`.
    Broadcast {
        /// Engine index (modulo the engine count).
        node: u8,
        /// Payload length.
        len: u8,
        /// Payload byte.
        fill: u8,
    },
    /// Delivers the in-flight message at this index (modulo the count).
    Deliver(u8),
    /// Delivers the oldest messages in flight in order, at most [`DELIVER_ALL`].
    DeliverAll,
    /// Loses the in-flight message at this index.
    Drop(u8),
    /// Delivers a copy of the in-flight message at this index and keeps it in flight.
    Duplicate(u8),
    /// Peer `from` (an index into every address, the last one a stranger) sends `msg`.
    Inject {
        /// Engine index.
        node: u8,
        /// Sender index.
        from: u8,
        /// The message.
        msg: MsgSpec,
    },
    /// Peer `from` sends again one of the last messages any engine sent.
    Replay {
        /// Engine index.
        node: u8,
        /// Sender index.
        from: u8,
        /// Index into the recent sends.
        pick: u8,
    },
    /// Time passes by this many ms; every engine handles its timeouts.
    Advance(u16),
    /// Engine `node` gets the peers whose bit is set (bit 15: the stranger), always itself.
    SetPeers {
        /// Engine index.
        node: u8,
        /// Which addresses.
        mask: u16,
    },
}

impl Op {
    /// Appends the input bytes of this operation.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Op::Broadcast { node, len, fill } => {
                w.byte(0).byte(*node).byte(*len).byte(*fill);
            }
            Op::Deliver(i) => {
                w.byte(1).byte(*i);
            }
            Op::DeliverAll => {
                w.byte(2);
            }
            Op::Drop(i) => {
                w.byte(3).byte(*i);
            }
            Op::Duplicate(i) => {
                w.byte(4).byte(*i);
            }
            Op::Inject { node, from, msg } => {
                w.byte(5).byte(*node).byte(*from);
                msg.write(w);
            }
            Op::Replay { node, from, pick } => {
                w.byte(6).byte(*node).byte(*from).byte(*pick);
            }
            Op::Advance(ms) => {
                w.byte(7).u16le(*ms);
            }
            Op::SetPeers { node, mask } => {
                w.byte(8).byte(*node).u16le(*mask);
            }
        }
    }
}

/// A whole input: header and operations.
pub fn encode(h: &Header, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    h.write(&mut w);
    for op in ops {
        op.write(&mut w);
    }
    w.finish()
}

fn strict() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| std::env::var_os("RAINTREE_FUZZ_STRICT").is_some_and(|v| v != "0"))
}

struct Node {
    engine: Engine,
    addr: Address,
    /// Ids first seen (delivered or originated) at a time, with the eviction count then.
    remembered: HashMap<MessageId, (Duration, u64)>,
    /// Strict mode: when each id was first delivered or originated.
    first_seen: HashMap<MessageId, Duration>,
    deliveries: u64,
    broadcasts: u64,
}

/// The network under test.
struct Net {
    cfg: Config,
    /// Every address: engines first, then peers without an engine, then the stranger.
    addrs: Vec<Address>,
    nodes: Vec<Node>,
    in_flight: VecDeque<(Address, Address, Message)>,
    recent: VecDeque<Message>,
    ids: Vec<MessageId>,
    ids_added: usize,
    now: Duration,
    steps: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    simulate(data);
}

/// Runs one input and returns each engine's counters at the end, so tests can tell what a
/// seed reaches.
pub fn simulate(data: &[u8]) -> Vec<Stats> {
    let mut u = Unstructured::new(data);
    let h = Header::read(&mut u);
    let cfg = h.config();
    let k = 1 + usize::from(h.engines % 4);
    let n = k + usize::from(h.extra % 6);
    let mut addrs: Vec<Address> = (0..n as u64).map(Address::from_index).collect();
    addrs.push(Address::from_index(999));
    let all = Arc::new(PeerList::new(addrs[..n].iter().copied()));
    let nodes = (0..k)
        .map(|i| Node {
            engine: new_engine(&cfg, addrs[i], all.clone(), i as u64 + 1),
            addr: addrs[i],
            remembered: HashMap::new(),
            first_seen: HashMap::new(),
            deliveries: 0,
            broadcasts: 0,
        })
        .collect();
    let mut net = Net {
        cfg,
        addrs,
        nodes,
        in_flight: VecDeque::new(),
        recent: VecDeque::new(),
        ids: Vec::new(),
        ids_added: 0,
        now: Duration::from_secs(1),
        steps: 0,
    };
    let mut ops = 0;
    while !u.is_empty() && ops < MAX_OPS && net.steps < MAX_STEPS {
        ops += 1;
        net.op(&mut u);
        net.check_remembered();
    }
    net.nodes.iter().map(|n| n.engine.stats().clone()).collect()
}

impl Net {
    fn node(&self, sel: u8) -> usize {
        usize::from(sel) % self.nodes.len()
    }

    /// A sender for engine `i`: any address but its own (its own becomes the stranger).
    fn sender(&self, i: usize, sel: u8) -> Address {
        let a = self.addrs[usize::from(sel) % self.addrs.len()];
        if a == self.nodes[i].addr {
            *self.addrs.last().expect("the stranger")
        } else {
            a
        }
    }

    fn op(&mut self, u: &mut Unstructured<'_>) {
        match byte(u) % 9 {
            0 => {
                let i = self.node(byte(u));
                let len = usize::from(byte(u));
                let payload = Bytes::from(vec![byte(u); len]);
                self.broadcast(i, payload);
            }
            op @ (1 | 3 | 4) => {
                let pick = usize::from(byte(u));
                if self.in_flight.is_empty() {
                    return;
                }
                let at = pick % self.in_flight.len();
                let m = if op == 4 {
                    self.in_flight[at].clone()
                } else {
                    self.in_flight.remove(at).expect("index in range")
                };
                if op != 3 {
                    self.deliver(m);
                }
            }
            2 => {
                for _ in 0..DELIVER_ALL {
                    let Some(m) = self.in_flight.pop_front() else {
                        break;
                    };
                    self.deliver(m);
                }
            }
            5 => {
                let i = self.node(byte(u));
                let from = self.sender(i, byte(u));
                let ctx = Ctx {
                    origins: &self.addrs,
                    ids: &self.ids,
                    unit: 1,
                    max_len: self.cfg.max_payload + 8,
                };
                let m = message(u, &ctx);
                self.handle(i, from, m);
            }
            6 => {
                let i = self.node(byte(u));
                let from = self.sender(i, byte(u));
                let pick = usize::from(byte(u));
                if let Some(m) = self.recent.get(pick % self.recent.len().max(1)).cloned() {
                    self.handle(i, from, m);
                }
            }
            7 => {
                self.now += Duration::from_millis(u64::from(u16le(u)));
                for i in 0..self.nodes.len() {
                    self.nodes[i].engine.handle_timeout(self.now);
                    self.after(i, None);
                }
            }
            _ => {
                let i = self.node(byte(u));
                let mask = u16le(u);
                let me = self.nodes[i].addr;
                let n = self.addrs.len() - 1;
                let mut list: Vec<Address> = (0..n)
                    .filter(|b| mask & (1 << b) != 0)
                    .map(|b| self.addrs[b])
                    .collect();
                if mask & 0x8000 != 0 {
                    list.push(self.addrs[n]);
                }
                list.push(me);
                let r = self.nodes[i]
                    .engine
                    .set_peers(Arc::new(PeerList::new(list)));
                assert!(r.is_ok(), "a peer list holding the node was refused: {r:?}");
                self.after(i, None);
            }
        }
    }

    fn deliver(&mut self, (from, to, m): (Address, Address, Message)) {
        // Messages to peers without an engine are lost, as if those peers were down.
        if let Some(i) = self.nodes.iter().position(|n| n.addr == to) {
            self.handle(i, from, m);
        }
    }

    fn broadcast(&mut self, i: usize, payload: Bytes) {
        self.steps += 1;
        let len = payload.len();
        let now = self.now;
        let r = self.nodes[i]
            .engine
            .broadcast(now, payload, now.as_micros() as u64);
        match r {
            Ok(id) => {
                assert!(
                    len <= self.cfg.max_payload,
                    "broadcast an oversized payload"
                );
                let n = &mut self.nodes[i];
                assert_eq!(id.origin, n.addr, "a broadcast in another origin's name");
                assert!(n.engine.has_seen(&id), "forgot its own broadcast");
                n.broadcasts += 1;
                self.first_seen(i, id, false);
                self.add_id(id);
            }
            Err(EngineError::PayloadTooLarge { len: l, max }) => {
                assert_eq!((l, max), (len, self.cfg.max_payload));
                assert!(len > max);
            }
            // Every id within its age limit is remembered, so a full seen-set refuses new ones.
            Err(EngineError::SeenSetFull) => {
                assert_eq!(
                    self.nodes[i].engine.seen_len(),
                    self.cfg.seen_capacity.max(1)
                );
            }
            Err(e) => panic!("broadcast failed: {e}"),
        }
        self.after(i, None);
    }

    fn handle(&mut self, i: usize, from: Address, m: Message) {
        self.steps += 1;
        let id = match &m {
            Message::Gossip(g) => Some(g.id),
            Message::Direct { id, .. } => Some(*id),
            _ => None,
        };
        let was_seen = id.map(|id| self.nodes[i].engine.has_seen(&id));
        let r = self.nodes[i]
            .engine
            .handle_message(self.now, from, m.clone());
        let mut expect = None;
        if let (Ok(()), Some(false)) = (&r, was_seen) {
            // The first acceptable copy of an unknown id: delivered now, exactly once.
            expect = Some(match m {
                Message::Gossip(g) => (g.id, g.payload, g.origin_time_us, g.hops),
                Message::Direct { id, payload } => (id, payload, 0, 1),
                _ => unreachable!("only gossip and direct carry an id here"),
            });
        }
        if r.is_err() {
            if let (Some(id), Some(seen)) = (id, was_seen) {
                assert_eq!(
                    self.nodes[i].engine.has_seen(&id),
                    seen,
                    "a refused message changed the seen-set"
                );
            }
        }
        self.after(i, Some(expect));
    }

    fn first_seen(&mut self, i: usize, id: MessageId, delivered: bool) {
        let now = self.now;
        let ttl = self.cfg.seen_ttl;
        let n = &mut self.nodes[i];
        let evicted = n.engine.stats().evicted;
        n.remembered.insert(id, (now, evicted));
        if strict() {
            if let Some(t) = n.first_seen.get(&id) {
                assert!(
                    now >= *t + ttl,
                    "{} {id:?} again {:?} after first seeing it (seen_ttl {ttl:?})",
                    if delivered { "delivered" } else { "originated" },
                    now - *t
                );
            }
            n.first_seen.insert(id, now);
        }
    }

    fn add_id(&mut self, id: MessageId) {
        if self.ids.len() < 128 {
            self.ids.push(id);
        } else {
            self.ids[self.ids_added % 128] = id;
        }
        self.ids_added += 1;
    }

    /// Drains engine `i`'s outputs and checks every invariant. `expect` is `None` for inputs
    /// that must deliver nothing, `Some(None)` for a message that must deliver nothing new,
    /// `Some(Some(..))` for one that must deliver exactly that.
    #[allow(clippy::type_complexity)]
    fn after(&mut self, i: usize, expect: Option<Option<(MessageId, Bytes, u64, u32)>>) {
        let now = self.now;
        let mut delivered = Vec::new();
        while let Some(out) = self.nodes[i].engine.poll_output() {
            match out {
                Output::Deliver {
                    id,
                    payload,
                    origin_time_us,
                    hops,
                } => delivered.push((id, payload, origin_time_us, hops)),
                Output::Send { to, message } => self.sent(i, to, message),
                Output::Misbehaved { .. } => {}
            }
        }
        match expect {
            Some(Some(want)) => {
                assert_eq!(delivered.len(), 1, "the first copy of an id: one delivery");
                assert_eq!(delivered[0], want, "delivered something else than received");
            }
            _ => assert!(
                delivered.is_empty(),
                "delivered {:?} unexpectedly",
                delivered.iter().map(|d| d.0).collect::<Vec<_>>()
            ),
        }
        for (id, ..) in &delivered {
            self.nodes[i].deliveries += 1;
            assert!(
                self.nodes[i].engine.has_seen(id),
                "forgot what it just delivered"
            );
            self.first_seen(i, *id, true);
        }
        let cap = self.cfg.seen_capacity.max(1);
        let n = &mut self.nodes[i];
        let e = &n.engine;
        assert!(
            e.seen_len() <= cap,
            "seen_len {} over capacity {cap}",
            e.seen_len()
        );
        if let Some(t) = e.poll_timeout() {
            assert!(
                t > now,
                "poll_timeout {t:?} not after now {now:?} once handled"
            );
        }
        let stats = e.stats();
        assert_eq!(
            stats.deliveries, n.deliveries,
            "stats.deliveries miscounted"
        );
        assert_eq!(
            stats.broadcasts, n.broadcasts,
            "stats.broadcasts miscounted"
        );
    }

    /// Ids first seen less than `seen_ttl` ago are still remembered unless the seen-set
    /// evicted something since. Checked once per operation: it walks every such id.
    fn check_remembered(&mut self) {
        let (now, ttl) = (self.now, self.cfg.seen_ttl);
        for n in &mut self.nodes {
            let e = &n.engine;
            let evicted = e.stats().evicted;
            n.remembered.retain(|id, (t, ev)| {
                let must = *ev == evicted && now < *t + ttl;
                if must {
                    assert!(
                        e.has_seen(id),
                        "{id:?} forgotten before seen_ttl, nothing evicted"
                    );
                }
                must
            });
        }
    }

    fn sent(&mut self, i: usize, to: Address, m: Message) {
        let me = self.nodes[i].addr;
        assert_ne!(to, me, "sent {} to itself", m.kind());
        match &m {
            Message::Gossip(g) => {
                assert_eq!(g.strategy, self.cfg.strategy, "gossip of another strategy");
                assert!(
                    g.payload.len() <= self.cfg.max_payload,
                    "oversized gossip sent"
                );
                assert!(g.hops >= 1, "gossip sent with 0 hops");
            }
            Message::Ack { .. } | Message::Igyw { .. } | Message::IgywReply { .. } => {}
            other => panic!("the engine sent a {}", other.kind()),
        }
        let back = wire::decode(wire::encode(&m), self.cfg.max_payload)
            .unwrap_or_else(|e| panic!("the engine sent an undecodable {}: {e}", summary(&m)));
        assert!(back == m, "a sent {} changed on the wire", summary(&m));
        if self.recent.len() == 64 {
            self.recent.pop_front();
        }
        self.recent.push_back(m.clone());
        if self.in_flight.len() == MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((me, to, m));
    }
}
