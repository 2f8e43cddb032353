//! The bounded, expiring seen-set: per-message state keyed by `(origin, nonce)` (SPEC 2).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::peers::{Address, PeerList};
use crate::wire::MessageId;

/// A tree send waiting for its ACK.
#[derive(Clone, Debug)]
pub(crate) struct PendingAck {
    pub to: Address,
    /// The receiver's offset in this message's view.
    pub offset: usize,
    pub level_or_range: u32,
    /// Re-delegations already made for this part (exact strategy).
    pub attempt: u32,
    pub token: u32,
}

/// Where this node's IGYW chain for one message stands.
#[derive(Clone, Debug, Default)]
pub(crate) struct IgywState {
    pub started: bool,
    pub finished: bool,
    /// Neighbours skipped so far for lack of a reply.
    pub skipped: u32,
    /// The neighbour asked and the token of its reply deadline.
    pub awaiting: Option<(Address, u32)>,
}

/// Everything a node remembers about one message.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Insertion number; tells a re-inserted id from an evicted one.
    pub seq: u64,
    pub peers: Arc<PeerList>,
    pub my_pos: usize,
    /// Kept only while some duty may still send it.
    pub payload: Bytes,
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
    pub next_token: u32,
    /// The latest deadline of any timer of this message: the entry outlives it.
    pub latest_deadline: Duration,
}

impl Entry {
    /// A fresh entry for a message first seen now.
    pub fn new(peers: Arc<PeerList>, my_pos: usize, payload: Bytes, origin_time_us: u64) -> Self {
        Entry {
            seq: 0,
            peers,
            my_pos,
            payload,
            origin_time_us,
            hops: 0,
            done: 0,
            tree_done: false,
            ring_left: false,
            ring_right: false,
            igyw: IgywState::default(),
            acks: Vec::new(),
            next_token: 0,
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
        !self.acks.is_empty() || (self.igyw.started && !self.igyw.finished)
    }
}

/// Message states in insertion order, bounded by count; age limits are enforced by the engine.
#[derive(Debug, Default)]
pub(crate) struct SeenSet {
    map: HashMap<MessageId, Entry>,
    order: VecDeque<(u64, MessageId)>,
    next_seq: u64,
    capacity: usize,
}

impl SeenSet {
    /// An empty set holding at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        SeenSet {
            capacity: capacity.max(1),
            ..Default::default()
        }
    }

    pub fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    pub fn get(&self, id: &MessageId) -> Option<&Entry> {
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &MessageId) -> Option<&mut Entry> {
        self.map.get_mut(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Inserts a new entry, evicting the oldest beyond capacity; returns how many were evicted.
    ///
    /// An evicted entry's timers find no entry and do nothing, so eviction also cancels them.
    pub fn insert(&mut self, id: MessageId, mut entry: Entry) -> (u64, usize) {
        self.next_seq += 1;
        let seq = self.next_seq;
        entry.seq = seq;
        self.map.insert(id, entry);
        self.order.push_back((seq, id));
        let mut evicted = 0;
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some((s, old)) => {
                    if self.map.get(&old).is_some_and(|e| e.seq == s) {
                        self.map.remove(&old);
                        evicted += 1;
                    }
                }
                None => break,
            }
        }
        (seq, evicted)
    }

    /// Forgets `id` (its age limit passed).
    pub fn remove(&mut self, id: &MessageId) {
        self.map.remove(id);
        // Drop stale ids at the front so the order queue stays about as long as the map.
        while let Some((s, front)) = self.order.front() {
            if self.map.get(front).is_some_and(|e| e.seq == *s) {
                break;
            }
            self.order.pop_front();
        }
    }
}
