//! The broadcast engine: one node's protocol state, driven by events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::seen::{Entry, PendingAck, SeenSet};
use super::{Config, EngineError, Output, SplitMix64, Stats};
use crate::peers::{Address, PeerList};
use crate::tree;
use crate::wire::{Gossip, Message, MessageId, Route, Strategy};

/// What a timer does when it fires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum TimerKind {
    /// The ACK of the pending send with this token is overdue.
    Ack(u32),
    /// Start the IGYW chain after the clean-up delay.
    IgywStart,
    /// The IGYW offer with this token got no reply.
    IgywWait(u32),
    /// The seen-set entry reached its age limit.
    Expire,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Timer {
    at: Duration,
    /// Insertion order, so timers with equal deadlines fire reproducibly.
    order: u64,
    id: MessageId,
    entry_seq: u64,
    kind: TimerKind,
}

/// Everything but the seen-set, so an entry and the outputs can be borrowed at once.
#[derive(Debug)]
struct Core {
    config: Arc<Config>,
    me: Address,
    peers: Arc<PeerList>,
    my_pos: usize,
    rng: SplitMix64,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_order: u64,
    outputs: VecDeque<Output>,
    stats: Stats,
}

/// One node's RainTree protocol state: a pure state machine (no I/O, no clock).
#[derive(Debug)]
pub struct Engine {
    core: Core,
    seen: SeenSet,
}

impl Engine {
    /// A node `me` in `peers`; `seed` drives its nonces. Errors if `me` is not in `peers`.
    pub fn new(
        config: Config,
        me: Address,
        peers: Arc<PeerList>,
        seed: u64,
    ) -> Result<Self, EngineError> {
        Self::with_shared_config(Arc::new(config), me, peers, seed)
    }

    /// Like [`Engine::new`] with a config shared between many engines (the simulator).
    pub fn with_shared_config(
        config: Arc<Config>,
        me: Address,
        peers: Arc<PeerList>,
        seed: u64,
    ) -> Result<Self, EngineError> {
        let my_pos = peers.position(&me).ok_or(EngineError::NotInPeerList)?;
        let seen = SeenSet::new(config.seen_capacity);
        Ok(Engine {
            core: Core {
                config,
                me,
                peers,
                my_pos,
                rng: SplitMix64::new(seed),
                timers: BinaryHeap::new(),
                timer_order: 0,
                outputs: VecDeque::new(),
                stats: Stats::default(),
            },
            seen,
        })
    }

    /// Replaces the peer list; messages already known keep the view they started with.
    pub fn set_peers(&mut self, peers: Arc<PeerList>) -> Result<(), EngineError> {
        let pos = peers
            .position(&self.core.me)
            .ok_or(EngineError::NotInPeerList)?;
        self.core.peers = peers;
        self.core.my_pos = pos;
        Ok(())
    }

    /// Originates a broadcast of `payload`; returns its id.
    pub fn broadcast(
        &mut self,
        now: Duration,
        payload: Bytes,
        origin_time_us: u64,
    ) -> Result<MessageId, EngineError> {
        let max = self.core.config.max_payload;
        if payload.len() > max {
            return Err(EngineError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let id = loop {
            let id = MessageId {
                origin: self.core.me,
                nonce: self.core.rng.next_u64(),
            };
            if !self.seen.contains(&id) {
                break id;
            }
        };
        self.core.stats.broadcasts += 1;
        let entry = Entry::new(
            self.core.peers.clone(),
            self.core.my_pos,
            payload,
            origin_time_us,
        );
        self.insert(now, id, entry);
        let Some(e) = self.seen.get_mut(&id) else {
            return Ok(id);
        };
        let n = e.peers.len() as u64;
        match self.core.config.strategy {
            Strategy::Reference => {
                let top = tree::max_level(n);
                e.done = top + 1;
                self.core.forward_reference(now, id, e, top, 1);
            }
            Strategy::Exact => {
                e.done = clamp_u32(n);
                self.core.forward_exact(now, id, e, n);
            }
        }
        self.core.finish_tree_duty(now, id, e);
        self.core.release_if_idle(e);
        self.prune_stale();
        Ok(id)
    }

    /// Handles a message `msg` received from the peer `from`.
    pub fn handle_message(
        &mut self,
        now: Duration,
        from: Address,
        msg: Message,
    ) -> Result<(), EngineError> {
        let r = match msg {
            Message::Gossip(g) => self.on_gossip(now, from, g),
            Message::Ack { id, level_or_range } => {
                self.on_ack(from, id, level_or_range);
                Ok(())
            }
            Message::Igyw { id } => {
                let want = !self.seen.contains(&id);
                self.core.send(from, Message::IgywReply { id, want });
                Ok(())
            }
            Message::IgywReply { id, want } => {
                self.on_igyw_reply(from, id, want);
                Ok(())
            }
            Message::Direct { id, payload } => self.on_direct(now, id, payload),
            Message::Request { .. } => self.reject(EngineError::Unexpected("request")),
            Message::Response { .. } => self.reject(EngineError::Unexpected("response")),
            Message::Goodbye { .. } => self.reject(EngineError::Unexpected("goodbye")),
        };
        self.prune_stale();
        r
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(Reverse(t)) = self.core.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.core.timers.pop();
            self.fire(now, t);
        }
        self.prune_stale();
    }

    /// The next deadline at which [`Engine::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.core.timers.peek().map(|Reverse(t)| t.at)
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// Counters of everything done so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.core.me
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// How many message ids are remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Whether `id` is remembered (delivered, originated or seen).
    pub fn has_seen(&self, id: &MessageId) -> bool {
        self.seen.contains(id)
    }

    fn reject(&mut self, e: EngineError) -> Result<(), EngineError> {
        self.core.stats.rejected += 1;
        Err(e)
    }

    fn insert(&mut self, now: Duration, id: MessageId, entry: Entry) {
        let (_, evicted) = self.seen.insert(id, entry);
        self.core.stats.evicted += evicted as u64;
        let at = now.saturating_add(self.core.config.seen_ttl);
        if let Some(e) = self.seen.get_mut(&id) {
            self.core.schedule(e, id, at, TimerKind::Expire);
        }
    }

    fn on_gossip(&mut self, now: Duration, from: Address, g: Gossip) -> Result<(), EngineError> {
        let cfg = self.core.config.clone();
        if g.strategy != cfg.strategy {
            return self.reject(EngineError::StrategyMismatch {
                expected: cfg.strategy,
                got: g.strategy,
            });
        }
        if g.payload.len() > cfg.max_payload {
            return self.reject(EngineError::PayloadTooLarge {
                len: g.payload.len(),
                max: cfg.max_payload,
            });
        }
        let id = g.id;
        // The sender waits for this even when the copy is a duplicate.
        if g.route == Route::Tree && cfg.acks {
            self.core.send(
                from,
                Message::Ack {
                    id,
                    level_or_range: g.level_or_range,
                },
            );
        }
        let first = !self.seen.contains(&id);
        if first {
            let entry = Entry {
                hops: g.hops,
                ..Entry::new(
                    self.core.peers.clone(),
                    self.core.my_pos,
                    g.payload.clone(),
                    g.origin_time_us,
                )
            };
            self.insert(now, id, entry);
            self.core.stats.deliveries += 1;
            self.core.outputs.push_back(Output::Deliver {
                id,
                payload: g.payload.clone(),
                origin_time_us: g.origin_time_us,
                hops: g.hops,
            });
        } else {
            self.core.stats.duplicates += 1;
        }
        let Some(e) = self.seen.get_mut(&id) else {
            return Ok(());
        };
        if e.payload.is_empty() {
            e.payload = g.payload.clone();
        }
        match g.route {
            Route::Tree | Route::Resend => {
                let forwarded = self.core.tree_duty(now, id, e, g.level_or_range);
                if forwarded || first {
                    self.core.finish_tree_duty(now, id, e);
                }
            }
            // A ring copy travels on only from a node that first learns of it that way.
            Route::RingLeft if first => {
                self.core.ring_push(id, e, true);
                self.core.after_ring(now, id, e);
            }
            Route::RingRight if first => {
                self.core.ring_push(id, e, false);
                self.core.after_ring(now, id, e);
            }
            Route::Cleanup if first => self.core.start_igyw(now, id, e),
            _ => {}
        }
        self.core.release_if_idle(e);
        Ok(())
    }

    fn on_ack(&mut self, from: Address, id: MessageId, level_or_range: u32) {
        let Some(e) = self.seen.get_mut(&id) else {
            return;
        };
        if let Some(i) = e
            .acks
            .iter()
            .position(|p| p.to == from && p.level_or_range == level_or_range)
        {
            e.acks.swap_remove(i);
            self.core.stats.acks_received += 1;
            self.core.release_if_idle(e);
        }
    }

    fn on_igyw_reply(&mut self, from: Address, id: MessageId, want: bool) {
        let Some(e) = self.seen.get_mut(&id) else {
            return;
        };
        // Only the neighbour currently asked may answer, so WANTs cannot be replayed for copies.
        if !matches!(e.igyw.awaiting, Some((to, _)) if to == from) {
            return;
        }
        e.igyw.awaiting = None;
        e.igyw.finished = true;
        if want {
            self.core.stats.igyw_want += 1;
            self.core.stats.cleanup_sends += 1;
            let m = self.core.gossip(id, e, 0, Route::Cleanup);
            self.core.send(from, m);
        } else {
            self.core.stats.igyw_have += 1;
        }
        self.core.release_if_idle(e);
    }

    fn on_direct(
        &mut self,
        now: Duration,
        id: MessageId,
        payload: Bytes,
    ) -> Result<(), EngineError> {
        let max = self.core.config.max_payload;
        if payload.len() > max {
            return self.reject(EngineError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.seen.contains(&id) {
            self.core.stats.duplicates += 1;
            return Ok(());
        }
        let mut entry = Entry::new(self.core.peers.clone(), self.core.my_pos, Bytes::new(), 0);
        entry.tree_done = true;
        entry.hops = 1;
        self.insert(now, id, entry);
        self.core.stats.deliveries += 1;
        self.core.outputs.push_back(Output::Deliver {
            id,
            payload,
            origin_time_us: 0,
            hops: 1,
        });
        Ok(())
    }

    fn fire(&mut self, now: Duration, t: Timer) {
        let Some(e) = self.seen.get_mut(&t.id) else {
            return;
        };
        if e.seq != t.entry_seq {
            return;
        }
        match t.kind {
            TimerKind::Ack(token) => self.core.ack_overdue(now, t.id, e, token),
            TimerKind::IgywStart => {
                if !e.igyw.finished && e.igyw.awaiting.is_none() {
                    self.core.offer_igyw(now, t.id, e);
                }
            }
            TimerKind::IgywWait(token) => {
                if matches!(e.igyw.awaiting, Some((_, tk)) if tk == token) {
                    e.igyw.awaiting = None;
                    e.igyw.skipped += 1;
                    if e.igyw.skipped > self.core.config.igyw_skip_limit {
                        e.igyw.finished = true;
                    } else {
                        self.core.offer_igyw(now, t.id, e);
                    }
                }
            }
            TimerKind::Expire => {
                if e.latest_deadline > now || e.busy() {
                    let at = e.latest_deadline.max(now + self.core.config.ack_timeout);
                    self.core.schedule(e, t.id, at, TimerKind::Expire);
                } else {
                    self.seen.remove(&t.id);
                    return;
                }
            }
        }
        if let Some(e) = self.seen.get_mut(&t.id) {
            self.core.release_if_idle(e);
        }
    }

    /// Drops timers at the top of the heap that no longer have work, so `poll_timeout` is tight.
    fn prune_stale(&mut self) {
        while let Some(Reverse(t)) = self.core.timers.peek() {
            let live = match self.seen.get(&t.id) {
                Some(e) if e.seq == t.entry_seq => match t.kind {
                    TimerKind::Ack(token) => e.acks.iter().any(|p| p.token == token),
                    TimerKind::IgywWait(token) => {
                        matches!(e.igyw.awaiting, Some((_, tk)) if tk == token)
                    }
                    TimerKind::IgywStart => !e.igyw.finished && e.igyw.awaiting.is_none(),
                    TimerKind::Expire => true,
                },
                _ => false,
            };
            if live {
                break;
            }
            self.core.timers.pop();
        }
    }
}

fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

impl Core {
    fn send(&mut self, to: Address, message: Message) {
        match &message {
            Message::Gossip(_) => self.stats.gossip_sent += 1,
            Message::Ack { .. } => self.stats.acks_sent += 1,
            Message::Igyw { .. } => self.stats.igyw_sent += 1,
            _ => {}
        }
        self.outputs.push_back(Output::Send { to, message });
    }

    fn schedule(&mut self, e: &mut Entry, id: MessageId, at: Duration, kind: TimerKind) {
        self.timer_order += 1;
        e.latest_deadline = e.latest_deadline.max(at);
        self.timers.push(Reverse(Timer {
            at,
            order: self.timer_order,
            id,
            entry_seq: e.seq,
            kind,
        }));
    }

    fn gossip(&self, id: MessageId, e: &Entry, level_or_range: u32, route: Route) -> Message {
        Message::Gossip(Gossip {
            id,
            level_or_range,
            strategy: self.config.strategy,
            route,
            origin_time_us: e.origin_time_us,
            hops: e.hops.saturating_add(1),
            payload: e.payload.clone(),
        })
    }

    /// Forwards the tree levels or range a copy marked `level_or_range` asks of this node.
    /// Returns whether anything new was done.
    fn tree_duty(&mut self, now: Duration, id: MessageId, e: &mut Entry, lor: u32) -> bool {
        let n = e.peers.len() as u64;
        let dup_mode = self.config.forward_duplicates;
        match self.config.strategy {
            Strategy::Reference => {
                // A copy marked above L+1 cannot come from a correct peer; treat it as L+1.
                let level = lor.min(tree::max_level(n) + 1);
                if dup_mode {
                    self.forward_reference(now, id, e, level.saturating_sub(1), 1);
                    e.done = e.done.max(level);
                    return true;
                }
                if level <= e.done {
                    return false;
                }
                let bottom = e.done.max(1);
                e.done = level;
                self.forward_reference(now, id, e, level - 1, bottom);
                true
            }
            Strategy::Exact => {
                let range = lor.min(clamp_u32(n));
                if !dup_mode && range <= e.done {
                    return false;
                }
                // A larger range re-splits from scratch; the overlap is deduped downstream.
                e.done = e.done.max(range);
                self.forward_exact(now, id, e, u64::from(range));
                true
            }
        }
    }

    fn forward_reference(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        top: u32,
        bottom: u32,
    ) {
        let n = e.peers.len() as u64;
        for level in (bottom.max(1)..=top).rev() {
            for t in tree::reference_targets(n, level) {
                if t != 0 {
                    self.tree_send(now, id, e, t as usize, level, 0);
                }
            }
        }
    }

    fn forward_exact(&mut self, now: Duration, id: MessageId, e: &mut Entry, range: u64) {
        let mut r = range;
        while r > 1 {
            for (offset, len) in tree::exact_delegations(r) {
                self.tree_send(now, id, e, offset as usize, clamp_u32(len), 0);
            }
            r = tree::exact_parts(r)[0];
        }
    }

    fn tree_send(
        &mut self,
        now: Duration,
        id: MessageId,
        e: &mut Entry,
        offset: usize,
        lor: u32,
        attempt: u32,
    ) {
        let Some(to) = e.peers.at_offset(e.my_pos, offset) else {
            return;
        };
        if to == self.me {
            return;
        }
        let m = self.gossip(id, e, lor, Route::Tree);
        self.send(to, m);
        if self.config.acks {
            let token = e.token();
            e.acks.push(PendingAck {
                to,
                offset,
                level_or_range: lor,
                attempt,
                token,
            });
            let at = now.saturating_add(self.config.ack_timeout);
            self.schedule(e, id, at, TimerKind::Ack(token));
        }
    }

    fn ack_overdue(&mut self, now: Duration, id: MessageId, e: &mut Entry, token: u32) {
        let Some(i) = e.acks.iter().position(|p| p.token == token) else {
            return;
        };
        let p = e.acks.swap_remove(i);
        self.stats.ack_timeouts += 1;
        let n = e.peers.len();
        match self.config.strategy {
            Strategy::Reference => {
                let level = p.level_or_range.saturating_sub(1);
                let mut sent = 0;
                let mut last = None;
                for offset in [(p.offset + 1) % n, (p.offset + n - 1) % n] {
                    let Some(to) = e.peers.at_offset(e.my_pos, offset) else {
                        continue;
                    };
                    if to == self.me || last == Some(to) {
                        continue;
                    }
                    last = Some(to);
                    let m = self.gossip(id, e, level, Route::Resend);
                    self.send(to, m);
                    sent += 1;
                }
                self.stats.resends += sent;
                if sent == 0 {
                    self.stats.give_ups += 1;
                }
            }
            Strategy::Exact => {
                // The next node of the failed part takes the rest of it.
                let next = (p.offset + 1) % n.max(1);
                // A part of length 1 held only the failed node: nothing is left to give up on.
                if p.level_or_range <= 1 || next == 0 {
                    return;
                }
                if p.attempt < self.config.exact_retries {
                    self.stats.resends += 1;
                    self.tree_send(now, id, e, next, p.level_or_range - 1, p.attempt + 1);
                } else {
                    self.stats.give_ups += 1;
                }
            }
        }
    }

    /// Runs once per message after its first tree duty: redundancy pushes and the IGYW timer.
    fn finish_tree_duty(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        if e.tree_done {
            return;
        }
        e.tree_done = true;
        let red = self.config.redundancy;
        if red.left() {
            self.ring_push(id, e, true);
        }
        if red.right() {
            self.ring_push(id, e, false);
        }
        self.schedule_igyw(now, id, e);
    }

    fn after_ring(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        self.schedule_igyw(now, id, e);
    }

    fn schedule_igyw(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        if self.config.cleanup && !e.igyw.started {
            e.igyw.started = true;
            let at = now.saturating_add(self.config.cleanup_delay);
            self.schedule(e, id, at, TimerKind::IgywStart);
        }
    }

    /// Pushes the message once towards one ring neighbour (SPEC 5).
    fn ring_push(&mut self, id: MessageId, e: &mut Entry, left: bool) {
        let done = if left {
            &mut e.ring_left
        } else {
            &mut e.ring_right
        };
        if *done {
            return;
        }
        *done = true;
        let n = e.peers.len();
        let offset = if left { n.saturating_sub(1) } else { 1 };
        let Some(to) = e.peers.at_offset(e.my_pos, offset) else {
            return;
        };
        if to == self.me {
            return;
        }
        let route = if left {
            Route::RingLeft
        } else {
            Route::RingRight
        };
        let m = self.gossip(id, e, 0, route);
        self.stats.redundancy_sends += 1;
        self.send(to, m);
    }

    /// Continues an IGYW chain right away (the node learned the message from the chain).
    fn start_igyw(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        if e.igyw.started {
            return;
        }
        e.igyw.started = true;
        self.offer_igyw(now, id, e);
    }

    fn offer_igyw(&mut self, now: Duration, id: MessageId, e: &mut Entry) {
        let offset = 1 + e.igyw.skipped as usize;
        let to = match e.peers.at_offset(e.my_pos, offset) {
            Some(to) if offset < e.peers.len() && to != self.me => to,
            _ => {
                e.igyw.finished = true;
                return;
            }
        };
        let token = e.token();
        e.igyw.awaiting = Some((to, token));
        self.send(to, Message::Igyw { id });
        let at = now.saturating_add(self.config.igyw_timeout);
        self.schedule(e, id, at, TimerKind::IgywWait(token));
    }

    /// Drops the payload once no duty can send it again; a later copy brings it back.
    fn release_if_idle(&mut self, e: &mut Entry) {
        if !e.busy() {
            e.payload = Bytes::new();
        }
    }
}
