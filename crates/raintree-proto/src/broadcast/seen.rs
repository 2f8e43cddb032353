//! The bounded, expiring seen-set: per-message state keyed by `(origin, nonce)` (SPEC 2).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::peers::{Address, PeerList};
use crate::wire::{MessageId, OriginSignature};

/// A tree send waiting for its ACK.
#[derive(Clone, Debug)]
pub(crate) struct PendingAck {
    pub to: Address,
    /// The receiver's offset in this message's view: the first node of the part it owns.
    pub offset: usize,
    pub level_or_range: u32,
    pub token: u32,
    /// When it was sent: the ACK's round trip feeds the deadline estimate.
    pub sent_at: Duration,
    /// Deadline checks made while no round trip had been measured yet.
    pub checks: u32,
}

/// What an IGYW offer is for, which decides what its answer or silence leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfferKind {
    /// Liveness probe of a suspected tree target; a WANT gets a leaf copy marked `lor`.
    Probe { lor: u32 },
    /// This node's own clean-up chain towards its right (SPEC 6), at view `offset`.
    Chain,
    /// Part of a clean-up window this node answers for, at view `offset`.
    Window,
}

/// An IGYW offer waiting for its reply.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    pub to: Address,
    pub kind: OfferKind,
    pub offset: usize,
    pub span: u32,
    pub token: u32,
    pub sent_at: Duration,
}

/// Where this node's IGYW chain for one message stands.
#[derive(Clone, Debug)]
pub(crate) struct IgywState {
    pub started: bool,
    pub finished: bool,
    /// Unresponsive neighbours skipped in a row.
    pub skipped: u32,
    /// HAVE answers in a row.
    pub haves: u32,
    /// The view offset the chain offers to next.
    pub offset: usize,
    /// The window the next chain offer hands over: doubles after every WANT, so a long run of
    /// nodes that missed the message is filled in logarithmic, not linear, time.
    pub span: u32,
    /// The largest clean-up window this node has covered (its own view, from itself).
    pub window: u32,
}

impl Default for IgywState {
    fn default() -> Self {
        IgywState {
            started: false,
            finished: false,
            skipped: 0,
            haves: 0,
            offset: 1,
            span: 1,
            window: 1,
        }
    }
}

/// Everything a node remembers about one message.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Insertion number; tells a re-inserted id from an evicted one.
    pub seq: u64,
    /// When the id was first seen: an evicted id is still remembered until `born + seen_ttl`.
    pub born: Duration,
    pub peers: Arc<PeerList>,
    pub my_pos: usize,
    /// Kept only while some duty may still send it.
    pub payload: Bytes,
    /// False once `payload` was released; a later copy brings it back only if its hash matches.
    pub holds_payload: bool,
    /// SHA-256 of the payload delivered: a duplicate never substitutes other bytes.
    pub payload_hash: [u8; 32],
    /// The verified origin signature, forwarded with every copy (the verdict is cached here:
    /// duplicates are not verified again and their signature bytes are never used).
    pub signature: Option<std::sync::Arc<OriginSignature>>,
    pub origin_time_us: u64,
    /// Hops of the copy that first reached us (0 at the originator).
    pub hops: u32,
    /// Highest level (reference) or range (exact) whose duty is done.
    pub done: u32,
    pub tree_done: bool,
    pub ring_left: bool,
    pub ring_right: bool,
    pub igyw: IgywState,
    pub acks: Vec<PendingAck>,
    /// IGYW offers (chain, window, probes) waiting for their replies.
    pub offers: Vec<Offer>,
    pub next_token: u32,
    /// Set when the message arrived while the held-payload budget was full: it is sent once,
    /// without ACKs or clean-up, so nothing keeps its payload afterwards.
    pub shed: bool,
    /// The share this id counts against while it is remembered.
    pub share: Share,
    /// Bytes this entry counts against `Config::held_bytes` (payload and bookkeeping).
    pub held_len: usize,
    /// Peers this message is owed to: they failed while it was sent and get it when heard
    /// from again, so its payload is kept (until its age limit, never longer).
    pub owed: u32,
    /// The latest deadline of any timer of this message: the entry outlives it.
    pub latest_deadline: Duration,
}

impl Entry {
    /// A fresh entry for a message first seen now.
    pub fn new(peers: Arc<PeerList>, my_pos: usize, payload: Bytes, origin_time_us: u64) -> Self {
        Entry {
            seq: 0,
            born: Duration::ZERO,
            peers,
            my_pos,
            payload,
            holds_payload: true,
            payload_hash: [0; 32],
            signature: None,
            origin_time_us,
            hops: 0,
            done: 0,
            tree_done: false,
            ring_left: false,
            ring_right: false,
            igyw: IgywState::default(),
            acks: Vec::new(),
            offers: Vec::new(),
            next_token: 0,
            shed: false,
            share: Share::Unlisted,
            held_len: 0,
            owed: 0,
            latest_deadline: Duration::ZERO,
        }
    }

    /// A token for a new timer of this message, valid until the timer is resolved.
    pub fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    /// True while a pending ACK or IGYW step may still need the payload.
    pub fn busy(&self) -> bool {
        !self.acks.is_empty()
            || !self.offers.is_empty()
            || (self.igyw.started && !self.igyw.finished)
    }
}

/// Whose share of the seen-set an id counts against: a listed origin's own, or one share for
/// every unlisted origin together (anyone can mint keys, so those must not get a share each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Share {
    Origin(Address),
    Unlisted,
}

/// Every id within its age limit is either an entry or a tombstone, so none is delivered twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// How far from the oldest entry eviction looks for an idle one before taking the oldest.
const IDLE_SCAN: usize = 64;

/// Message states in insertion order, bounded by count, plus tombstones of evicted ids.
///
/// Entries past `capacity` are evicted (idle ones first) into tombstones: an id and the time
/// its age limit ends, about 40 bytes against an entry's hundreds. Tombstones are bounded by
/// `capacity` too; when both are full of ids within their age limit, new ids are refused
/// rather than forgotten ids delivered again. Age limits of entries are enforced by the engine.
#[derive(Debug, Default)]
pub(crate) struct SeenSet {
    /// Entries are boxed so the table's slots stay small: a hash table that takes inserts
    /// and removals grows once its deleted slots run out, and with entries inline that one
    /// growth added megabytes to every node some minutes into a steady run.
    map: HashMap<MessageId, Box<Entry>>,
    order: VecDeque<(u64, MessageId)>,
    next_seq: u64,
    capacity: usize,
    tombs: HashMap<MessageId, (Duration, Share)>,
    /// Ids (entries and tombstones) each share holds now.
    shares: HashMap<Share, u32>,
    tomb_order: VecDeque<(Duration, MessageId)>,
}

impl SeenSet {
    /// An empty set holding at most `capacity` ids (at least one) and as many tombstones.
    pub fn new(capacity: usize) -> Self {
        SeenSet {
            capacity: capacity.max(1),
            ..Default::default()
        }
    }

    /// Whether `id` was seen within its age limit (an entry or a tombstone).
    pub fn knows(&self, id: &MessageId) -> bool {
        self.map.contains_key(id) || self.tombs.contains_key(id)
    }

    pub fn get(&self, id: &MessageId) -> Option<&Entry> {
        self.map.get(id).map(|e| &**e)
    }

    pub fn get_mut(&mut self, id: &MessageId) -> Option<&mut Entry> {
        self.map.get_mut(id).map(|e| &mut **e)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Tombstones held now.
    pub fn tombstones(&self) -> usize {
        self.tombs.len()
    }

    /// Ids remembered now, entries and tombstones (at most twice the capacity).
    pub fn load(&self) -> usize {
        self.map.len() + self.tombs.len()
    }

    /// The capacity for entries (tombstones have as much again).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ids `share` holds now.
    pub fn held_by(&self, share: Share) -> u32 {
        self.shares.get(&share).copied().unwrap_or(0)
    }

    fn unshare(&mut self, share: Share) {
        if let Some(n) = self.shares.get_mut(&share) {
            *n -= 1;
            if *n == 0 {
                self.shares.remove(&share);
            }
        }
    }

    /// Inserts a new entry first seen at `now`, evicting one beyond capacity into a tombstone
    /// that lasts until `born + ttl`; returns its sequence number and the entry evicted.
    pub fn insert(
        &mut self,
        id: MessageId,
        mut entry: Entry,
        now: Duration,
        ttl: Duration,
    ) -> Result<(u64, Option<Entry>), Full> {
        self.forget_tombs(now);
        let mut evicted = None;
        if self.map.len() >= self.capacity {
            if self.tombs.len() >= self.capacity {
                return Err(Full);
            }
            if let Some(victim) = self.victim() {
                if let Some(e) = self.map.remove(&victim) {
                    let until = e.born.saturating_add(ttl);
                    if until > now {
                        self.tombs.insert(victim, (until, e.share));
                        self.tomb_order.push_back((until, victim));
                    } else {
                        self.unshare(e.share);
                    }
                    evicted = Some(*e);
                }
            }
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        entry.seq = seq;
        entry.born = now;
        *self.shares.entry(entry.share).or_default() += 1;
        // Room for twice the ids held: a table that takes as many removals as inserts and
        // runs fuller fills up with deleted slots and grows once more long after the set
        // stopped growing, so memory would not level off one age limit in.
        if self.map.len() * 2 >= self.map.capacity() {
            self.map.reserve(self.map.len().max(16));
        }
        self.map.insert(id, Box::new(entry));
        self.order.push_back((seq, id));
        // Idle entries leave from the middle: drop their stale records now and then.
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(s, id)| map.get(id).is_some_and(|e| e.seq == *s));
        }
        Ok((seq, evicted))
    }

    /// The entry to evict: the oldest idle one among the oldest few, else the oldest.
    fn victim(&mut self) -> Option<MessageId> {
        while let Some((s, id)) = self.order.front() {
            if self.map.get(id).is_some_and(|e| e.seq == *s) {
                break;
            }
            self.order.pop_front();
        }
        let live = |(s, id): &&(u64, MessageId)| {
            self.map
                .get(id)
                .filter(|e| e.seq == *s)
                .map(|e| (*id, e.busy()))
        };
        let mut oldest = None;
        for rec in self.order.iter().take(IDLE_SCAN) {
            if let Some((id, busy)) = live(&rec) {
                if !busy {
                    return Some(id);
                }
                oldest.get_or_insert(id);
            }
        }
        oldest
    }

    /// Drops tombstones whose age limit has passed (in the order they were made).
    fn forget_tombs(&mut self, now: Duration) {
        while let Some(&(until, id)) = self.tomb_order.front() {
            if until > now {
                break;
            }
            self.tomb_order.pop_front();
            if self.tombs.get(&id).is_some_and(|t| t.0 == until) {
                if let Some((_, share)) = self.tombs.remove(&id) {
                    self.unshare(share);
                }
            }
        }
    }

    /// Forgets `id` (its age limit passed) and returns its entry.
    pub fn remove(&mut self, id: &MessageId) -> Option<Entry> {
        let gone = self.map.remove(id).map(|e| *e);
        if let Some(e) = &gone {
            self.unshare(e.share);
        }
        // Drop stale ids at the front so the order queue stays about as long as the map.
        while let Some((s, front)) = self.order.front() {
            if self.map.get(front).is_some_and(|e| e.seq == *s) {
                break;
            }
            self.order.pop_front();
        }
        gone
    }
}
