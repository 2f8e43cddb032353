//! `engine`: a small network of sans-IO engines driven by an arbitrary sequence of operations.
//!
//! The input is a 12-byte [`Header`] (the network-wide `Config`, how many engines, how many
//! peers without an engine), then [`Op`]s: broadcasts, delivering / dropping / duplicating
//! messages in flight between engines, messages injected from any peer or a stranger (with ids
//! drawn from the broadcasts so far, so ACKs, IGYW replies and range changes meet real
//! state), replays of earlier messages, time advancing (every engine then handles its
//! timeouts, as a driver does), peer-list changes and unreachable reports from the transport.
//!
//! Invariants, checked after every step:
//! - no panic, and a peer-list change that keeps the node is accepted;
//! - a payload is delivered only for an id the engine did not remember just before, and the
//!   first acceptable copy of an unknown id is delivered exactly once, with its own payload,
//!   hops and origin time; broadcasts, timeouts, peer-list changes and unreachable reports
//!   deliver nothing;
//! - an id is remembered for `seen_ttl` after it was first seen unless the seen-set evicted
//!   something for capacity in the meantime (so no copy within that time is delivered again);
//! - `seen_len()` never exceeds `seen_capacity` (at least 1);
//! - after timeouts are handled at `now`, `poll_timeout()` is `None` or later than `now`;
//! - sends go to someone else, carry only Gossip, Ack, Igyw or IgywReply, gossip of the
//!   configured strategy within `max_payload`, and survive a wire round trip unchanged;
//! - `stats()` counts exactly the deliveries and broadcasts observed;
//! - after every input, `Engine::check_invariants()` holds (the engine's own bookkeeping).
//!
//! With `RAINTREE_FUZZ_STRICT=1`, an engine must also never deliver an id twice (nor deliver
//! its own broadcast) within `seen_ttl` of first seeing it, eviction or not: the issue 9 goal
//! that tombstones now meet (see docs/TESTING.md, "Fuzzing").
//!
//! Engine construction and the message kinds live in [`new_engine`] and [`crate::msg`], the
//! two places to adapt when the engine's constructor or the wire change; [`after_input`] is
//! where whole-engine checks run once per input.
//!
//! Speed (issue 15): an input is at most [`MAX_OPS`] operations and [`MAX_STEPS`] engine
//! inputs, and `fuzz/run` caps its length at 768 bytes, so a grown corpus runs about as fast as
//! the seeds. Addresses, full peer lists and the harness's buffers are built once per thread
//! and reused; the harness's own maps hash ids with a cheap hasher (SipHash under coverage
//! instrumentation was a fifth of the time).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use raintree_proto::broadcast::{
    Config, Engine, EngineError, Output, Redundancy, Stats, HELD_ENTRY_BYTES,
};
use raintree_proto::wire::{BroadcastMessage, Message, MessageId, Strategy};
use raintree_proto::{Address, PeerList};

use crate::input::{byte, take, u16le, Writer};
use crate::msg::{carried_id, check_sent, delivery, message, shape, Ctx, MsgSpec};

/// Most operations read from one input (the longest seed has 16).
pub const MAX_OPS: usize = 48;
/// Most engine inputs (messages handled, broadcasts, unreachable reports) per input. A
/// seen-set smaller than the traffic lets ring and IGYW copies circulate for ever (an evicted
/// id is new again), so inputs are capped; a few hundred reach every layer the seeds do, and
/// each step costs the same, so the cap sets the slowest input's time.
pub const MAX_STEPS: usize = 128;
/// Most messages one `DeliverAll` delivers.
pub const DELIVER_ALL: usize = 32;
/// Most messages in flight; the oldest is lost beyond it.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Sends of an input that all take the wire round trip; later ones only when of a new
/// [`shape`].
pub const ROUND_TRIPS: usize = 8;

/// Builds one engine; the single place that knows the constructor's signature.
pub fn new_engine(config: &Arc<Config>, me: Address, peers: Arc<PeerList>, seed: u64) -> Engine {
    let rng = rand::SeedableRng::seed_from_u64(seed);
    Engine::with_shared_config(config.clone(), me, peers, rng).expect("me is in the peer list")
}

/// Whole-engine checks, once per engine after every input (the per-step ones are in
/// [`Net::after`]).
pub fn after_input(engine: &Engine) {
    if let Err(e) = engine.check_invariants() {
        panic!("{e}");
    }
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
    /// The transport tells engine `node` that `peer` (as for [`Op::Inject`]'s `from`) is
    /// unreachable.
    Unreachable {
        /// Engine index.
        node: u8,
        /// Peer index.
        peer: u8,
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
            Op::Unreachable { node, peer } => {
                w.byte(9).byte(*node).byte(*peer);
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

/// The harness's own maps: ids hashed by a multiply-rotate hasher (FxHash's), not SipHash.
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What the harness tracks of one engine; its maps are kept (emptied) between inputs.
#[derive(Default)]
struct Track {
    /// Ids first seen (delivered or originated) at a time, with the eviction count then.
    remembered: FastMap<MessageId, (Duration, u64)>,
    /// Strict mode: when each id was first delivered or originated.
    first_seen: FastMap<MessageId, Duration>,
    deliveries: u64,
    broadcasts: u64,
}

struct Node {
    engine: Engine,
    addr: Address,
    t: Track,
}

/// Engines with an address; the stranger's is [`STRANGER`].
const MAX_ADDRS: usize = 9;
const STRANGER: u64 = 999;

/// Built once per thread: addresses, the full peer list of each network size, and the
/// buffers of the last input, emptied.
struct Scratch {
    /// `Address::from_index(0..MAX_ADDRS)`, then the stranger.
    addrs: Vec<Address>,
    /// `full[n]`: the peer list of the first `n` addresses.
    full: Vec<Arc<PeerList>>,
    bufs: Option<Bufs>,
}

#[derive(Default)]
struct Bufs {
    addrs: Vec<Address>,
    tracks: Vec<Track>,
    in_flight: VecDeque<(Address, Address, Message)>,
    recent: VecDeque<Message>,
    ids: Vec<MessageId>,
    delivered: Vec<(MessageId, Bytes, u64, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl Scratch {
    fn new() -> Self {
        let mut addrs: Vec<Address> = (0..MAX_ADDRS as u64).map(Address::from_index).collect();
        addrs.push(Address::from_index(STRANGER));
        let full = (0..=MAX_ADDRS)
            .map(|n| Arc::new(PeerList::new(addrs[..n].iter().copied())))
            .collect();
        Scratch {
            addrs,
            full,
            bufs: Some(Bufs::default()),
        }
    }
}

/// The network under test.
struct Net {
    cfg: Arc<Config>,
    /// Every address: engines first, then peers without an engine, then the stranger.
    addrs: Vec<Address>,
    nodes: Vec<Node>,
    in_flight: VecDeque<(Address, Address, Message)>,
    recent: VecDeque<Message>,
    ids: Vec<MessageId>,
    ids_added: usize,
    /// What one step delivered (kept for its allocation).
    delivered: Vec<(MessageId, Bytes, u64, u32)>,
    now: Duration,
    steps: usize,
    /// Sends so far and the [`shape`]s among them that took the wire round trip.
    sends: usize,
    shapes: u32,
    /// Engines given an input since [`Net::check_remembered`] last ran, one bit each.
    touched: u32,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    simulate_with(data, |_| ());
}

/// Runs one input and returns each engine's counters at the end, so tests can tell what a
/// seed reaches.
pub fn simulate(data: &[u8]) -> Vec<Stats> {
    simulate_with(data, |nodes| {
        nodes.iter().map(|n| n.engine.stats().clone()).collect()
    })
}

fn simulate_with<T>(data: &[u8], end: impl FnOnce(&[Node]) -> T) -> T {
    let mut u = Unstructured::new(data);
    let h = Header::read(&mut u);
    let cfg = Arc::new(h.config());
    let k = 1 + usize::from(h.engines % 4);
    let n = k + usize::from(h.extra % 6);
    let (mut b, all) = SCRATCH.with_borrow_mut(|s| {
        let mut b = s.bufs.take().unwrap_or_default();
        b.addrs.clear();
        b.addrs.extend_from_slice(&s.addrs[..n]);
        b.addrs.push(s.addrs[MAX_ADDRS]);
        (b, s.full[n].clone())
    });
    b.tracks.resize_with(b.tracks.len().max(k), Track::default);
    let nodes = b
        .tracks
        .drain(..k)
        .enumerate()
        .map(|(i, t)| Node {
            engine: new_engine(&cfg, b.addrs[i], all.clone(), i as u64 + 1),
            addr: b.addrs[i],
            t,
        })
        .collect();
    let mut net = Net {
        cfg,
        addrs: b.addrs,
        nodes,
        in_flight: b.in_flight,
        recent: b.recent,
        ids: b.ids,
        ids_added: 0,
        delivered: b.delivered,
        now: Duration::from_secs(1),
        steps: 0,
        sends: 0,
        shapes: 0,
        touched: 0,
    };
    let mut ops = 0;
    while !u.is_empty() && ops < MAX_OPS && net.steps < MAX_STEPS {
        ops += 1;
        net.op(&mut u);
        net.check_remembered();
    }
    for n in &net.nodes {
        after_input(&n.engine);
    }
    let out = end(&net.nodes);
    // Hand the buffers back, emptied, for the next input.
    let mut tracks = b.tracks;
    for n in net.nodes {
        let mut t = n.t;
        t.remembered.clear();
        t.first_seen.clear();
        t.deliveries = 0;
        t.broadcasts = 0;
        tracks.push(t);
    }
    net.in_flight.clear();
    net.recent.clear();
    net.ids.clear();
    net.delivered.clear();
    let bufs = Bufs {
        addrs: net.addrs,
        tracks,
        in_flight: net.in_flight,
        recent: net.recent,
        ids: net.ids,
        delivered: net.delivered,
    };
    SCRATCH.with_borrow_mut(|s| s.bufs = Some(bufs));
    out
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
        match byte(u) % 10 {
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
            9 => {
                let i = self.node(byte(u));
                let peer = self.sender(i, byte(u));
                self.steps += 1;
                self.nodes[i].engine.peer_unreachable(self.now, peer);
                self.after(i, None);
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
                n.t.broadcasts += 1;
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
        // The transport's own kinds (request, response, goodbye) have no way into an engine:
        // the driver hands on only what converts.
        let Ok(b) = BroadcastMessage::try_from(m.clone()) else {
            return;
        };
        let id = carried_id(&m);
        let was_seen = id.map(|id| self.nodes[i].engine.has_seen(&id));
        let r = self.nodes[i].engine.handle_message(self.now, from, b);
        let mut expect = None;
        if let (Ok(()), Some(false)) = (&r, was_seen) {
            // The first acceptable copy of an unknown id: delivered now, exactly once.
            expect = Some(delivery(m).expect("only gossip and direct carry an id here"));
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
        n.t.remembered.insert(id, (now, evicted));
        if strict() {
            if let Some(t) = n.t.first_seen.get(&id) {
                assert!(
                    now >= *t + ttl,
                    "{} {id:?} again {:?} after first seeing it (seen_ttl {ttl:?})",
                    if delivered { "delivered" } else { "originated" },
                    now - *t
                );
            }
            n.t.first_seen.insert(id, now);
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
        self.touched |= 1 << i;
        let mut delivered = std::mem::take(&mut self.delivered);
        delivered.clear();
        while let Some(out) = self.nodes[i].engine.poll_output() {
            match out {
                Output::Deliver {
                    id,
                    payload,
                    origin_time_us,
                    hops,
                } => delivered.push((id, payload, origin_time_us, hops)),
                Output::Send { to, message } => self.sent(i, to, message.into()),
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
            self.nodes[i].t.deliveries += 1;
            assert!(
                self.nodes[i].engine.has_seen(id),
                "forgot what it just delivered"
            );
            self.first_seen(i, *id, true);
        }
        self.delivered = delivered;
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
            stats.deliveries, n.t.deliveries,
            "stats.deliveries miscounted"
        );
        assert_eq!(
            stats.broadcasts, n.t.broadcasts,
            "stats.broadcasts miscounted"
        );
    }

    /// Ids first seen less than `seen_ttl` ago are still remembered unless the seen-set
    /// evicted something since. Checked once per operation for the engines it gave an input
    /// to: it walks every such id.
    fn check_remembered(&mut self) {
        let (now, ttl) = (self.now, self.cfg.seen_ttl);
        let touched = std::mem::take(&mut self.touched);
        // An engine given no input since the last walk has forgotten nothing.
        for n in self
            .nodes
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| touched & (1 << i) != 0)
            .map(|(_, n)| n)
        {
            let e = &n.engine;
            let evicted = e.stats().evicted;
            n.t.remembered.retain(|id, (t, ev)| {
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
        // The wire round trip is half the cost of a send: the first few sends of an input
        // and the first of each shape take it (the wire has its own target).
        let bit = 1u32 << shape(&m);
        let round_trip = self.sends < ROUND_TRIPS || self.shapes & bit == 0;
        self.sends += 1;
        self.shapes |= bit;
        check_sent(&m, self.cfg.strategy, self.cfg.max_payload, round_trip);
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
