//! The bounded, expiring seen-set: per-message state keyed by `(origin, nonce)` (SPEC 2).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::budget::Held;
use super::cleanup::Cleanup;
use super::duty::{TreeState, View};
use super::invariants::InvariantViolation;
use super::ledger::Ledger;
use super::timers::TimerKind;
use crate::peers::Address;
use crate::wire::{BroadcastMessage, Gossip, MessageId, OriginSignature, Route, Strategy};

/// What a message is, fixed when it is first seen: the view it travels on and what its copies
/// carry besides the payload.
#[derive(Clone, Debug)]
pub(super) struct Facts {
    view: View,
    /// SHA-256 of the payload delivered: a duplicate never substitutes other bytes.
    payload_hash: [u8; 32],
    /// The verified origin signature, forwarded with every copy (the verdict is cached here:
    /// duplicates are not verified again and their signature bytes are never used).
    signature: Option<Arc<OriginSignature>>,
    origin_time_us: u64,
    /// Hops of the copy that first reached us (0 at the originator).
    hops: u32,
}

impl Facts {
    /// A message on `view`, as signed (or not) by its origin, first reached in `hops` hops.
    pub fn new(
        view: View,
        payload_hash: [u8; 32],
        signature: Option<Arc<OriginSignature>>,
        origin_time_us: u64,
        hops: u32,
    ) -> Self {
        Facts {
            view,
            payload_hash,
            signature,
            origin_time_us,
            hops,
        }
    }

    /// The view this message's tree was split on here.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// SHA-256 of the payload delivered.
    pub fn payload_hash(&self) -> &[u8; 32] {
        &self.payload_hash
    }

    /// The copy this node sends: marked `level_or_range`, on `route`, one hop further.
    pub fn copy(
        &self,
        id: MessageId,
        payload: Bytes,
        strategy: Strategy,
        lor: u32,
        route: Route,
    ) -> BroadcastMessage {
        BroadcastMessage::Gossip(Gossip {
            id,
            level_or_range: lor,
            strategy,
            route,
            origin_time_us: self.origin_time_us,
            hops: self.hops.saturating_add(1),
            payload,
            signature: self.signature.clone(),
        })
    }
}

/// Everything a node remembers about one message, one part per concern; each part's fields
/// are private to the module that owns it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Insertion number; tells a re-inserted id from an evicted one.
    seq: u64,
    /// When the id was first seen: an evicted id is still remembered until `born + seen_ttl`.
    born: Duration,
    /// The share this id counts against while it is remembered.
    share: Share,
    pub(super) facts: Facts,
    pub(super) tree: TreeState,
    pub(super) cleanup: Cleanup,
    pub(super) ledger: Ledger,
    pub(super) held: Held,
}

impl Entry {
    /// A fresh entry for a message first seen now, holding `held`.
    pub fn new(facts: Facts, tree: TreeState, held: Held) -> Self {
        Entry {
            seq: 0,
            born: Duration::ZERO,
            share: Share::Unlisted,
            facts,
            tree,
            cleanup: Cleanup::default(),
            ledger: Ledger::default(),
            held,
        }
    }

    /// Insertion number, set by the seen-set.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// True while a pending ACK or IGYW step may still need the payload.
    pub fn busy(&self) -> bool {
        !self.ledger.is_empty() || self.cleanup.running()
    }

    /// Whether a timer of `kind` set for this entry still has work.
    pub fn wants(&self, kind: TimerKind) -> bool {
        match kind {
            TimerKind::Ack(token) => self.ledger.awaits_ack(token),
            TimerKind::IgywWait(token) => self.ledger.awaits_offer(token),
            TimerKind::IgywStart => self.cleanup.chain_due(&self.ledger),
            TimerKind::Expire => true,
        }
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

    /// Whether a new id would be refused at `now`: entries and tombstones are all within their
    /// age limit and at capacity.
    pub fn is_full(&mut self, now: Duration) -> bool {
        self.forget_tombs(now);
        self.map.len() >= self.capacity && self.tombs.len() >= self.capacity
    }

    /// Inserts a new entry first seen at `now`, evicting one beyond capacity into a tombstone
    /// that lasts until `born + ttl`; returns its sequence number and the entry evicted.
    pub fn insert(
        &mut self,
        id: MessageId,
        mut entry: Entry,
        share: Share,
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
        entry.share = share;
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

    /// Every entry, in no order.
    pub fn entries(&self) -> impl Iterator<Item = (&MessageId, &Entry)> {
        self.map.iter().map(|(id, e)| (id, &**e))
    }

    /// No id is both an entry and a tombstone, and the shares count every id remembered.
    pub fn check(&self) -> Result<(), InvariantViolation> {
        if let Some(id) = self.map.keys().find(|id| self.tombs.contains_key(*id)) {
            return Err(InvariantViolation(format!(
                "{id:?} is an entry and a tombstone"
            )));
        }
        let shared: u64 = self.shares.values().map(|&n| u64::from(n)).sum();
        let ids = (self.map.len() + self.tombs.len()) as u64;
        if shared != ids {
            return Err(InvariantViolation(format!(
                "shares count {shared} ids of {ids}"
            )));
        }
        Ok(())
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
